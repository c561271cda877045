"""Pinned image operations against TensorFlow's outputs, real faces and edge cases."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import encode, face_files, png_rgb16
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmark.data.imageops import (
    UndecodableImage,
    box_downsample,
    decode_rgb,
    resize_with_crop_or_pad,
)

ORACLE = "oracles/tf_ops.npz"
ORACLE_CROPS = 7


@pytest.fixture(scope="module")
def oracle(shared_data):
    with np.load(shared_data / ORACLE) as stored:
        return {name: stored[name] for name in stored.files}


@pytest.fixture(scope="module")
def photo(shared_data) -> Image.Image:
    path = next((shared_data / "lsun-bedroom-samples").glob("inpainting__*.png"))
    return Image.open(path).convert("RGB")


# ----------------------------------------------------------------------------
# resize_with_crop_or_pad


@pytest.mark.parametrize("case", range(ORACLE_CROPS))
def test_crop_or_pad_matches_tensorflow(oracle, case):
    """Check bit equality with tf.image.resize_with_crop_or_pad(img, 128, 128)."""
    source = oracle[f"crop_in_{case}"]
    expected = oracle[f"crop_out_{case}"]
    result = resize_with_crop_or_pad(source, 128, 128)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    target_height=st.integers(1, 24),
    target_width=st.integers(1, 24),
)
def test_crop_or_pad_geometry(height, width, target_height, target_width):
    """Check the shape, that kept pixels are a centred window, and zero padding."""
    rng = np.random.default_rng(height * 1000 + width)
    image = rng.integers(1, 256, size=(height, width, 3), dtype=np.uint8)
    result = resize_with_crop_or_pad(image, target_height, target_width)
    assert result.shape == (target_height, target_width, 3)
    kept_height = min(height, target_height)
    kept_width = min(width, target_width)
    top = (target_height - kept_height) // 2
    left = (target_width - kept_width) // 2
    window = result[top : top + kept_height, left : left + kept_width]
    crop_top = (height - kept_height) // 2
    crop_left = (width - kept_width) // 2
    np.testing.assert_array_equal(
        window,
        image[crop_top : crop_top + kept_height, crop_left : crop_left + kept_width],
    )
    # Source pixels are never 0, so zeros mark exactly the padding.
    assert (result == 0).sum() == 3 * (
        target_height * target_width - kept_height * kept_width
    )


def test_crop_or_pad_keeps_target_size():
    """Check that an image already at the target size comes back unchanged."""
    image = np.arange(128 * 128 * 3, dtype=np.uint8).reshape(128, 128, 3)
    np.testing.assert_array_equal(resize_with_crop_or_pad(image, 128, 128), image)


# ----------------------------------------------------------------------------
# box_downsample


def test_box_downsample_rounds_half_to_even():
    """Check the rounding of 2x2 means 0.25, 0.5, 0.75, 1.5 and 2.5."""
    blocks = {
        (0, 0, 1, 0): 0,
        (1, 1, 0, 0): 0,
        (1, 1, 1, 0): 1,
        (1, 2, 1, 2): 2,
        (3, 3, 2, 2): 2,
    }
    for values, expected in blocks.items():
        image = np.array(values, dtype=np.uint8).reshape(2, 2, 1)
        assert box_downsample(image, 2)[0, 0, 0] == expected, values


def test_box_downsample_rejects_bad_factor():
    """Check that factors must be powers of two that divide the size."""
    image = np.zeros((12, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="power of two"):
        box_downsample(image, 3)
    with pytest.raises(ValueError, match="not divisible by 8"):
        box_downsample(image, 8)


def float64_block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Return the exact mean of each factor x factor block in float64."""
    height, width, channels = image.shape
    blocks = image.astype(np.float64).reshape(
        height // factor, factor, width // factor, factor, channels
    )
    return blocks.mean(axis=(1, 3))


def test_box_downsample_real_faces_against_float64_mean(shared_data):
    """Check 1024 -> 128 on real faces against a direct float64 8x8 mean.

    The float32 cascade is exact (every intermediate value is a multiple of
    1/64 below 256), so after rounding half to even nothing differs. Rounding
    the same means half up instead would change exactly the pixels whose mean
    is k + 0.5 with k even, by one grey level.
    """
    half_up_differences = 0
    for path in face_files(shared_data)[:4]:
        image = np.asarray(Image.open(path).convert("RGB"))
        assert image.shape == (1024, 1024, 3)
        result = box_downsample(image, 8)
        mean = float64_block_mean(image, 8)
        difference = np.abs(result.astype(np.int64) - np.rint(mean).astype(np.int64))
        assert difference.max() == 0
        assert np.abs(result - mean).max() <= 0.5
        half_up = np.floor(mean + 0.5).astype(np.int64)
        changed = half_up != result
        assert np.abs(half_up - result).max() <= 1
        ties = (mean * 64 % 64 == 32) & (np.floor(mean) % 2 == 0)
        np.testing.assert_array_equal(changed, ties)
        half_up_differences += int(changed.sum())
    # About 1/128 of the 4 * 128 * 128 * 3 values round down from an even .5.
    assert 0 < half_up_differences < 4 * 128 * 128 * 3 // 32


# ----------------------------------------------------------------------------
# decode_rgb


def test_decode_jpeg_and_webp_like_pillow(photo):
    """Check that JPEG and WebP values decode to Pillow's RGB pixels."""
    for image_format in ("JPEG", "WEBP"):
        data = encode(photo, image_format, quality=75)
        pixels, found_format = decode_rgb(data)
        assert found_format == image_format
        assert pixels.dtype == np.uint8
        np.testing.assert_array_equal(
            pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        )


def test_decode_grey_repeats_channel(photo):
    """Check that a grey JPEG becomes three equal channels."""
    pixels, _ = decode_rgb(encode(photo.convert("L"), "JPEG", quality=75))
    assert pixels.shape == (256, 256, 3)
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_decode_cmyk_jpeg(photo):
    """Check that a CMYK JPEG decodes to RGB close to the original colours."""
    pixels, image_format = decode_rgb(encode(photo.convert("CMYK"), "JPEG", quality=95))
    assert image_format == "JPEG"
    assert pixels.shape == (256, 256, 3)
    error = np.abs(pixels.astype(np.int64) - np.asarray(photo, dtype=np.int64))
    assert error.mean() < 4


def test_decode_sixteen_bit_keeps_high_byte():
    """Check 16-bit grey and RGB PNGs: each sample becomes its high byte."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65536, size=(9, 7), dtype=np.uint16)
    pixels, _ = decode_rgb(encode(Image.fromarray(grey), "PNG"))
    np.testing.assert_array_equal(pixels[..., 1], (grey >> 8).astype(np.uint8))
    rgb = rng.integers(0, 65536, size=(9, 7, 3), dtype=np.uint16)
    pixels, image_format = decode_rgb(png_rgb16(rgb))
    assert image_format == "PNG"
    np.testing.assert_array_equal(pixels, (rgb >> 8).astype(np.uint8))


def test_decode_drops_alpha_and_expands_palette(photo):
    """Check that RGBA keeps its RGB and a palette PNG expands to RGB."""
    rgba = photo.convert("RGBA")
    rgba.putalpha(17)
    pixels, _ = decode_rgb(encode(rgba, "PNG"))
    np.testing.assert_array_equal(pixels, np.asarray(photo))
    palette = photo.convert("P")
    pixels, _ = decode_rgb(encode(palette, "PNG"))
    np.testing.assert_array_equal(pixels, np.asarray(palette.convert("RGB")))


def test_decode_tiny_image_then_pads(photo):
    """Check that a 5x3 image decodes and is zero-padded around the centre."""
    tiny = photo.crop((10, 20, 15, 23))
    pixels, _ = decode_rgb(encode(tiny, "PNG"))
    assert pixels.shape == (3, 5, 3)
    padded = resize_with_crop_or_pad(pixels, 128, 128)
    np.testing.assert_array_equal(padded[62:65, 61:66], np.asarray(tiny))
    assert padded[:62].max() == 0
    assert padded[65:].max() == 0


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda photo: b"", "not an image format", id="empty"),
        pytest.param(lambda photo: b"GIF89a no image here", ".", id="corrupt"),
        pytest.param(
            lambda photo: encode(photo, "JPEG", quality=75)[:4000],
            "truncated",
            id="truncated-jpeg",
        ),
        pytest.param(
            lambda photo: encode(photo, "JPEG", quality=75)[:-2],
            "truncated",
            id="jpeg-without-end-marker",
        ),
        pytest.param(
            lambda photo: encode(photo, "PNG")[:-500], "truncated", id="truncated-png"
        ),
        pytest.param(
            lambda photo: encode(
                Image.fromarray(np.ones((4, 4), dtype=np.float32)), "TIFF"
            ),
            "mode F",
            id="float-pixels",
        ),
    ],
)
def test_decode_rejects_with_reason(photo, make, reason):
    """Check that undecodable bytes raise UndecodableImage with a one-line reason."""
    with pytest.raises(UndecodableImage, match=reason) as raised:
        decode_rgb(make(photo))
    assert "\n" not in str(raised.value)
    assert " at 0x" not in str(raised.value)
