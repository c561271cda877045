"""Real TF Inception weights on real CIFAR-10 images: batch independence and
agreement with clean-fid's feature path.

The images are the first 64 test images of the lossless CIFAR-10 subset
(exact official pixels). Each test runs a few hundred Inception forward
passes, about a minute on a 2-core CPU, hence the slow mark.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cleanfid.fid import get_folder_features
from PIL import Image

from benchmark.metrics.extractor import KNOWN_EXTRACTORS, load_extractor
from benchmark.metrics.features import FeaturePipeline
from benchmark.metrics.resize import resize_bilinear_tf1

pytestmark = pytest.mark.slow

LOSSLESS_TARBALL = "cifar10/cifar10-lossless-subset.tar.gz"
IMAGE_COUNT = 64

# Largest absolute difference allowed between our features and clean-fid's
# for the same network input in another memory layout. pool_3 features of
# CIFAR-10 lie in [0, about 10], and convolutions that sum the same products
# in another order differ by float32 rounding, a few units of 1e-6 there.
LAYOUT_ATOL = 1e-4


@pytest.fixture(scope="module")
def real_images(shared_data) -> np.ndarray:
    """The first 64 test images of the lossless subset, uint8 (N, 32, 32, 3)."""
    images = []
    with tarfile.open(shared_data / LOSSLESS_TARBALL) as archive:
        for index in range(IMAGE_COUNT):
            name = f"cifar10-lossless-subset/test/{index:05d}.png"
            data = archive.extractfile(name).read()
            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(images)


@pytest.fixture(scope="module")
def extractor(extractor_file):
    return load_extractor(extractor_file, [entry.sha256 for entry in KNOWN_EXTRACTORS])


def test_features_identical_for_batch_sizes(extractor, real_images):
    """Check features of 64 real images for batches of 1, 7, 10, 50 and 64: same bits.

    10 is the protocols' batch and 50 compare_gan's.
    """
    reference, _ = FeaturePipeline(extractor, batch_size=64).features(real_images)
    assert reference.shape == (IMAGE_COUNT, 2048)
    assert np.isfinite(reference).all()
    for batch_size in (1, 7, 10, 50):
        features, _ = FeaturePipeline(extractor, batch_size=batch_size).features(
            real_images
        )
        assert np.array_equal(features, reference), f"batch size {batch_size}"


def test_float_fakes_batch_independent(extractor, real_images):
    """Check unrounded float inputs (as fakes enter) for batches of 1 and 7."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.5, 0.5, size=real_images[:14].shape)
    images = np.clip(real_images[:14] + noise, 0.0, 255.0).astype(np.float32)
    one, _ = FeaturePipeline(extractor, batch_size=1).features(images)
    seven, _ = FeaturePipeline(extractor, batch_size=7).features(images)
    assert np.array_equal(one, seven)


class _Pool3FromResized(torch.nn.Module):
    """clean-fid's model call for pre-resized input: (x - 128) / 128, then pool_3."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features, _ = self.extractor.forward((images - 128.0) / 128.0)
        return features


def _tf1_resize_numpy(image: np.ndarray) -> np.ndarray:
    """Resize one HWC image as our pipeline does, for clean-fid's resize hook."""
    tensor = torch.from_numpy(image).to(torch.float32).permute(2, 0, 1)[None]
    resized = resize_bilinear_tf1(tensor, 299)[0].permute(1, 2, 0)
    return np.ascontiguousarray(resized.numpy())


def test_features_match_cleanfid_folder_path(extractor, real_images, tmp_path: Path):
    """Check our features against clean-fid's folder path with the same input.

    clean-fid reads PNG files with Pillow, resizes each image with the
    function given as `custom_fn_resize` (here the TF1 resize) and feeds
    [0, 255] floats to the model, which scales them as our pipeline does. The
    network input is then identical, but clean-fid's batches are NCHW
    contiguous and ours channels_last, so rounding may differ.
    """
    folder = tmp_path / "images"
    folder.mkdir()
    count = 16
    for index in range(count):
        Image.fromarray(real_images[index]).save(folder / f"{index:05d}.png")
    theirs = get_folder_features(
        str(folder),
        model=_Pool3FromResized(extractor),
        num_workers=0,
        batch_size=8,
        device=torch.device("cpu"),
        mode="legacy_tensorflow",
        custom_fn_resize=_tf1_resize_numpy,
        verbose=False,
    )
    ours, _ = FeaturePipeline(extractor, batch_size=8).features(real_images[:count])
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=LAYOUT_ATOL)
