"""Tests for the TF1 bilinear resize against outputs of TensorFlow itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.errors import UserError
from benchmark.metrics.resize import resize_bilinear_tf1

# Outputs of TensorFlow 2.21 on random float32 [0, 255] images:
# `tf.compat.v1.image.resize_bilinear(x, [299, 299], align_corners=False)` in
# resize_out_{32,128} and `tf.image.resize` (half-pixel centres) in *_tf2.
TF_ORACLE_FILE = "oracles/tf_ops.npz"

# Maximum allowed difference from TF on the 0-255 scale, far below one grey
# level. The implementation matched TF bit for bit (difference 0.0) on CPU.
TF_RESIZE_TOLERANCE = 1e-3

# The TF2 (half-pixel) output differs from TF1 by about 100 grey levels at
# some pixels, so any difference above this shows the grids disagree.
GRID_MISMATCH_THRESHOLD = 10.0


@pytest.fixture(scope="module")
def tf_oracle(shared_data) -> dict[str, np.ndarray]:
    with np.load(shared_data / TF_ORACLE_FILE) as data:
        return {key: data[key] for key in data.files}


def _resize_nhwc(images: np.ndarray, size: int = 299) -> np.ndarray:
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2)
    return resize_bilinear_tf1(nchw, size).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("input_size", [32, 128])
def test_resize_matches_tf1_oracle(tf_oracle, input_size):
    """Check that the resize reproduces TF1 resize_bilinear to 299."""
    images = tf_oracle[f"resize_in_{input_size}"]
    expected = tf_oracle[f"resize_out_{input_size}"]
    resized = _resize_nhwc(images)
    assert resized.shape == expected.shape
    assert resized.dtype == np.float32
    assert np.abs(resized - expected).max() <= TF_RESIZE_TOLERANCE


@pytest.mark.parametrize("input_size", [32, 128])
def test_resize_differs_from_tf2_half_pixel(tf_oracle, input_size):
    """Check that the oracle test can fail: TF2 half-pixel output is not matched."""
    images = tf_oracle[f"resize_in_{input_size}"]
    half_pixel = tf_oracle[f"resize_out_{input_size}_tf2"]
    resized = _resize_nhwc(images)
    assert np.abs(resized - half_pixel).max() > GRID_MISMATCH_THRESHOLD


def test_resize_torch_interpolate_is_not_tf1(tf_oracle):
    """Check that PyTorch's own bilinear resize would fail the oracle test."""
    images = torch.from_numpy(tf_oracle["resize_in_32"]).permute(0, 3, 1, 2)
    interpolated = torch.nn.functional.interpolate(
        images, size=(299, 299), mode="bilinear", align_corners=False
    )
    expected = tf_oracle["resize_out_32"]
    difference = np.abs(interpolated.permute(0, 2, 3, 1).numpy() - expected)
    assert difference.max() > GRID_MISMATCH_THRESHOLD


def test_resize_independent_of_batch():
    """Check that each image resizes to the same bits alone and in a batch."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 17, 23, generator=generator) * 255
    batched = resize_bilinear_tf1(images, 41)
    for index in range(images.shape[0]):
        alone = resize_bilinear_tf1(images[index : index + 1], 41)
        assert torch.equal(alone[0], batched[index])


def test_resize_same_size_is_identity():
    """Check that resizing to the input size returns the input exactly."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 29, 29, generator=generator) * 255
    assert torch.equal(resize_bilinear_tf1(images, 29), images)


def test_resize_accepts_channels_last_input():
    """Check that the memory format of the input does not change the result."""
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 13, 13, generator=generator) * 255
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.equal(
        resize_bilinear_tf1(channels_last, 31), resize_bilinear_tf1(images, 31)
    )


@pytest.mark.parametrize(
    ("images", "size"),
    [
        (torch.zeros(3, 8, 8), 4),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 4),
        (torch.zeros(1, 3, 8, 8, dtype=torch.float64), 4),
        (torch.zeros(1, 3, 8, 8), 0),
    ],
    ids=["three-dims", "uint8", "float64", "size-zero"],
)
def test_resize_rejects_invalid_input(images, size):
    """Check that wrong shapes, dtypes and sizes raise UserError."""
    with pytest.raises(UserError):
        resize_bilinear_tf1(images, size)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    size=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_resize_stays_within_input_range(height, width, size, seed):
    """Check that every output pixel lies between the input's min and max."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 2, height, width, generator=generator) * 255
    resized = resize_bilinear_tf1(images, size)
    assert resized.shape == (1, 2, size, size)
    assert resized.min() >= images.min()
    assert resized.max() <= images.max()


@settings(max_examples=20, deadline=None)
@given(value=st.floats(0, 255, width=32), size=st.integers(1, 40))
def test_resize_keeps_constant_image(value, size):
    """Check that a constant image stays the same constant."""
    images = torch.full((1, 3, 7, 5), value, dtype=torch.float32)
    resized = resize_bilinear_tf1(images, size)
    assert torch.equal(resized, torch.full_like(resized, value))
