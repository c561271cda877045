"""Pinned image operations: decoding to RGB, TF's central crop-or-pad, box downsampling.

Each operation is named by a dataset spec's `preprocessing` field, so changing
what one of them computes requires a new spec version.

* `decode_rgb`: encoded bytes to uint8 RGB (H, W, 3) with Pillow. The first
  frame of an animated file is used; EXIF orientation and colour profiles are
  ignored, as TensorFlow's decoders ignore them. Alpha is dropped without
  compositing. Grey is repeated into three channels. 16-bit grey keeps its
  high byte (libpng's 16-to-8 stripping, which TensorFlow's PNG decoder
  uses); Pillow already does the same for 16-bit RGB. CMYK goes through
  Pillow's conversion.
* `resize_with_crop_or_pad`: TensorFlow's `tf.image.resize_with_crop_or_pad`
  (TF1 name `resize_image_with_crop_or_pad`), which compare_gan v2 applied
  to LSUN: a central crop where the image is larger than the target, zero
  padding where it is smaller, no scaling.
* `box_downsample`: ProgressiveGAN's dataset tool (`h5tool.py` and
  `dataset_tool.py`, tkarras/progressive_growing_of_gans): repeated 2x2
  averages in float32 without rounding between levels, then round half to
  even, clip to [0, 255], uint8.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow modes of 16-bit grey images, and the 32-bit integer mode that older
# Pillow versions use for them.
SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
UINT16_MAX = 65535
# Object addresses such as " at 0x7f3a2c1d0e50" in exception messages.
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class UndecodableImage(ValueError):
    """An image that cannot be turned into RGB pixels; the message gives the reason."""


def decode_rgb(data: bytes) -> tuple[np.ndarray, str]:
    """Decode an encoded image to uint8 RGB of shape (H, W, 3).

    Returns:
        The pixels and the container format Pillow detected (e.g. "JPEG").

    Raises:
        UndecodableImage: the bytes are not an image Pillow can decode in
            full (a truncated file included), or its pixel type has no
            defined conversion to 8-bit RGB.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            # load() decodes every pixel, so a truncated file fails here
            # instead of yielding a partly grey image.
            image.load()
            image_format = image.format or "unknown"
            pixels = to_rgb(image)
    except UndecodableImage:
        raise
    except UnidentifiedImageError as error:
        raise UndecodableImage("not an image format Pillow recognises") from error
    except Image.DecompressionBombError as error:
        raise UndecodableImage(f"too many pixels ({error})") from error
    except Exception as error:  # noqa: BLE001 - decoders raise many types
        # Reasons go into the manifest, which must not depend on where
        # objects happened to live in memory.
        message = ADDRESS.sub("", str(error))
        raise UndecodableImage(f"{type(error).__name__}: {message}") from error
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise UndecodableImage(
            f"empty image of size {pixels.shape[1]}x{pixels.shape[0]}"
        )
    return pixels, image_format


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image to uint8 RGB (H, W, 3) by the module's rules."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in SIXTEEN_BIT_GREY_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > UINT16_MAX):
            raise UndecodableImage(
                f"mode {mode} with values outside 0-{UINT16_MAX} has no 8-bit form"
            )
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    if mode == "F":
        raise UndecodableImage("floating-point pixels (mode F) have no 8-bit form")
    try:
        converted = image.convert("RGB")
    except ValueError as error:
        raise UndecodableImage(f"mode {mode} cannot be converted to RGB") from error
    return np.array(converted, dtype=np.uint8)


def resize_with_crop_or_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centrally crop or zero-pad an (H, W, C) image to (height, width, C).

    Each axis is handled on its own, as TensorFlow does. A larger side is
    cropped starting at floor((size - target) / 2). A smaller side gets
    floor((target - size) / 2) zeros before the image and the rest after it.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    source_height, source_width, channels = image.shape
    crop_top = max((source_height - height) // 2, 0)
    crop_left = max((source_width - width) // 2, 0)
    kept_height = min(source_height, height)
    kept_width = min(source_width, width)
    pad_top = max((height - source_height) // 2, 0)
    pad_left = max((width - source_width) // 2, 0)

    result = np.zeros((height, width, channels), dtype=image.dtype)
    result[pad_top : pad_top + kept_height, pad_left : pad_left + kept_width] = image[
        crop_top : crop_top + kept_height, crop_left : crop_left + kept_width
    ]
    return result


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink a uint8 (H, W, C) image by a power-of-two factor with 2x2 box averages.

    Each level adds the four samples of a 2x2 block in float32, left to right
    in the order top-left, top-right, bottom-left, bottom-right, and multiplies
    by 0.25; only the last level is rounded. For uint8 input every
    intermediate value is a multiple of 4**-levels below 256, which float32
    holds exactly up to 8 levels, so the result is the exact mean of each
    factor x factor block, rounded half to even.
    """
    if factor < 1 or factor & (factor - 1):
        raise ValueError(f"factor must be a power of two, got {factor}")
    height, width = image.shape[:2]
    if height % factor or width % factor:
        raise ValueError(f"image of size {width}x{height} is not divisible by {factor}")
    values = image.astype(np.float32)
    while factor > 1:
        values = (
            values[0::2, 0::2]
            + values[0::2, 1::2]
            + values[1::2, 0::2]
            + values[1::2, 1::2]
        ) * np.float32(0.25)
        factor //= 2
    return np.rint(values).clip(0, 255).astype(np.uint8)
