"""TensorFlow 1 bilinear resize, as the Inception preprocessing of 2018 used it.

compare_gan v2 resized every image to 299x299 with TF-GAN's `preprocess_image`,
which called `tf.image.resize_bilinear(images, [299, 299])` with the TF1
defaults: `align_corners=False` and no half-pixel centres. That sampling grid
differs from PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`,
which uses half-pixel centres like TF2's `tf.image.resize`, so FIDs computed
with the PyTorch resize are not comparable.

This module reimplements the TF1 kernel. The source coordinate of output pixel
`i` is `float32(i) * (float32(in_size) / float32(out_size))`. Its lower
neighbour is the floor, and the upper neighbour is the next pixel, clamped to
`in_size - 1`. Values are interpolated along x, then along y, in float32 with
the same operation order as TF. Every output pixel is computed from gathers and
elementwise arithmetic only, so one image gives the same bits whatever batch it
is part of. On TensorFlow 2.21's own outputs for 32x32 and 128x128 inputs the
result was bit-identical on CPU.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmark.errors import UserError


def _source_grid(
    in_size: int, out_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute the TF1 sampling grid along one axis.

    Args:
        in_size: Length of the input axis, at least 1.
        out_size: Length of the output axis, at least 1.
        device: Device of the returned tensors.

    Returns:
        `(lower, upper, lerp)`: int64 indices of shape `(out_size,)` into the
        input axis, and float32 weights of shape `(out_size,)` in [0, 1).
    """
    # Both the scale and the source coordinates are float32 products, as in TF.
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    floor = np.floor(source)
    lerp = (source - floor).astype(np.float32)
    lower = floor.astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    return (
        torch.from_numpy(lower).to(device),
        torch.from_numpy(upper).to(device),
        torch.from_numpy(lerp).to(device),
    )


def resize_bilinear_tf1(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """Resize images to `size` x `size` exactly as TF1 `resize_bilinear` does.

    Args:
        images: float32 tensor of shape `(N, C, H, W)`, values usually in
            [0, 255] (the function does not rescale). Any device.
        size: Output height and width in pixels.

    Returns:
        float32 tensor of shape `(N, C, size, size)` on the input's device.

    Raises:
        UserError: If `images` is not a 4-D float32 tensor or `size` < 1.
    """
    if images.ndim != 4:
        raise UserError(
            f"resize expects images of shape (N, C, H, W), got shape "
            f"{tuple(images.shape)}; convert NHWC arrays with permute(0, 3, 1, 2)"
        )
    if images.dtype != torch.float32:
        raise UserError(
            f"resize expects float32 images, got {images.dtype}; "
            "convert with images.float() before resizing"
        )
    if size < 1:
        raise UserError(f"resize size must be at least 1, got {size}")
    height, width = images.shape[-2:]
    rows_lower, rows_upper, y_lerp = _source_grid(height, size, images.device)
    cols_lower, cols_upper, x_lerp = _source_grid(width, size, images.device)

    # Gather the two source rows of every output row, then the two source
    # columns of every output column: four corner images of shape (N, C, size, size).
    top = images.index_select(2, rows_lower)
    bottom = images.index_select(2, rows_upper)
    top_left = top.index_select(3, cols_lower)
    top_right = top.index_select(3, cols_upper)
    bottom_left = bottom.index_select(3, cols_lower)
    bottom_right = bottom.index_select(3, cols_upper)

    # TF interpolates along x first, then along y, each as a + (b - a) * t.
    # Separate multiply and add keep the float32 rounding of the TF kernel.
    x_lerp = x_lerp.view(1, 1, 1, size)
    y_lerp = y_lerp.view(1, 1, size, 1)
    top_row = top_left + (top_right - top_left) * x_lerp
    bottom_row = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top_row + (bottom_row - top_row) * y_lerp
