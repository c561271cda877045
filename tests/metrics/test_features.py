"""Tests for the image-to-feature pipeline, run on synthetic extractors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.errors import UserError
from benchmark.metrics.extractor import load_extractor
from benchmark.metrics.features import FeaturePipeline
from benchmark.metrics.resize import resize_bilinear_tf1

# The synthetic network ends in a matrix product, whose rounding may depend on
# the batch size, so chunked and unchunked outputs are compared with this.
MATMUL_RTOL = 1e-5


@pytest.fixture
def pool3_pipeline(synthetic_pool3_extractor) -> FeaturePipeline:
    path, digest = synthetic_pool3_extractor
    return FeaturePipeline(load_extractor(path, [digest]), batch_size=2)


@pytest.fixture
def nvidia_pipeline(synthetic_nvidia_extractor) -> FeaturePipeline:
    path, digest = synthetic_nvidia_extractor
    return FeaturePipeline(load_extractor(path, [digest]), batch_size=2)


def _images(count: int = 3, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 16, 16, channels), dtype=np.uint8)


def test_preprocess_resizes_and_scales(pool3_pipeline):
    """Check that network input is (resize_tf1(x) - 128) / 128 in channels_last."""
    images = torch.from_numpy(_images())
    prepared = pool3_pipeline.preprocess(images)
    expected = (resize_bilinear_tf1(images.permute(0, 3, 1, 2).float()) - 128) / 128
    assert prepared.shape == (3, 3, 299, 299)
    assert prepared.dtype == torch.float32
    assert prepared.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(prepared, expected)
    assert prepared.min() >= -1.0
    assert prepared.max() <= 127 / 128


def test_features_same_for_uint8_and_float(pool3_pipeline):
    """Check that uint8 images and the same values as floats give the same bits."""
    images = _images()
    from_uint8, logits = pool3_pipeline.features(images)
    from_tensor, _ = pool3_pipeline.features(torch.from_numpy(images).float())
    from_float64, _ = pool3_pipeline.features(images.astype(np.float64))
    assert from_uint8.shape == (3, 2048)
    assert from_uint8.dtype == np.float32
    assert logits is None
    assert np.array_equal(from_uint8, from_tensor)
    assert np.array_equal(from_uint8, from_float64)


def test_features_do_not_round_floats(pool3_pipeline):
    """Check that fractional float pixels reach the network unrounded."""
    images = np.full((1, 16, 16, 3), 100.0, dtype=np.float32)
    whole, _ = pool3_pipeline.features(images)
    fractional, _ = pool3_pipeline.features(images + 0.4)
    assert not np.array_equal(whole, fractional)


def test_features_tile_grayscale(pool3_pipeline):
    """Check that a 1-channel image gives the features of its 3-channel tiling."""
    gray = _images(channels=1)
    tiled = np.repeat(gray, 3, axis=-1)
    assert np.array_equal(
        pool3_pipeline.features(gray)[0], pool3_pipeline.features(tiled)[0]
    )


def test_features_chunking_keeps_order(synthetic_pool3_extractor):
    """Check that chunks of 2 give the features of one chunk, in order."""
    path, digest = synthetic_pool3_extractor
    extractor = load_extractor(path, [digest])
    images = _images(count=5)
    chunked, _ = FeaturePipeline(extractor, batch_size=2).features(images)
    whole, _ = FeaturePipeline(extractor, batch_size=5).features(images)
    np.testing.assert_allclose(chunked, whole, rtol=MATMUL_RTOL, atol=1e-6)


def test_extract_all_releases_memory_once(monkeypatch, pool3_pipeline):
    """Check that extract_all releases freed memory once, after the last batch."""
    calls = []
    monkeypatch.setattr(
        "benchmark.metrics.features.release_free_memory", lambda: calls.append(1)
    )
    images = _images(count=3)
    features, _ = pool3_pipeline.extract_all([images, images], progress=False)
    assert features.shape == (6, 2048)
    assert calls == [1]


def test_features_returns_logits_for_nvidia_layout(nvidia_pipeline):
    """Check that the NVIDIA layout yields float64 logits for each image."""
    features, logits = nvidia_pipeline.features(_images(count=3))
    assert features.shape == (3, 2048)
    assert logits is not None
    assert logits.shape == (3, 1008)
    assert logits.dtype == np.float64


def test_extract_all_concatenates_stream(nvidia_pipeline):
    """Check that a stream of batches gives the features of one call, in order."""
    images = _images(count=5)
    stream = (images[start : start + 2] for start in range(0, 5, 2))
    features, logits = nvidia_pipeline.extract_all(stream, total=5, progress=False)
    expected_features, expected_logits = nvidia_pipeline.features(images)
    assert np.array_equal(features, expected_features)
    assert np.array_equal(logits, expected_logits)


def test_extract_all_empty_stream(nvidia_pipeline, pool3_pipeline):
    """Check that no batches give empty arrays of the right widths."""
    features, logits = nvidia_pipeline.extract_all([], progress=False)
    assert features.shape == (0, 2048)
    assert logits.shape == (0, 1008)
    features, logits = pool3_pipeline.extract_all(iter(()), progress=False)
    assert features.shape == (0, 2048)
    assert logits is None


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.zeros((2, 3, 16, 16), dtype=np.uint8), "shape"),
        (np.zeros((16, 16, 3), dtype=np.uint8), "shape"),
        (np.zeros((2, 16, 16, 3), dtype=np.int64), "uint8 or floating point"),
        (np.full((2, 16, 16, 3), -1.0, dtype=np.float32), r"\[0, 255\]"),
        (np.full((2, 16, 16, 3), 256.0, dtype=np.float32), r"\[0, 255\]"),
        (np.full((2, 16, 16, 3), np.nan, dtype=np.float32), r"\[0, 255\]"),
        ([[[[0, 0, 0]]]], "numpy array or a torch tensor"),
    ],
    ids=["nchw", "three-dims", "int64", "negative", "above-255", "nan", "list"],
)
def test_features_reject_invalid_batches(pool3_pipeline, batch, message):
    """Check that wrong layouts, dtypes and value ranges raise UserError."""
    with pytest.raises(UserError, match=message):
        pool3_pipeline.features(batch)


def test_pipeline_rejects_zero_batch_size(synthetic_pool3_extractor):
    """Check that a batch size below 1 raises UserError."""
    path, digest = synthetic_pool3_extractor
    with pytest.raises(UserError, match="batch size"):
        FeaturePipeline(load_extractor(path, [digest]), batch_size=0)
