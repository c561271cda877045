"""Applying a protocol: subset selection, feature cache, generator sampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from synthetic import write_store_with_order as write_store_in_order
from torch import nn

from benchmark.protocol import Evaluator
from benchmark.specs import ProtocolDataset, load_protocol

COUNT = 6


def tiny_protocol(real: int = COUNT, fake: int = COUNT):
    datasets = {"cifar10": ProtocolDataset("test", real, fake)}
    return dataclasses.replace(load_protocol("quick"), datasets=datasets)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)


def evaluator(root, cache, extractor_file, protocol=None) -> Evaluator:
    return Evaluator(
        protocol or tiny_protocol(),
        "cifar10",
        root,
        cache,
        extractor_path=str(extractor_file),
        allow_download=False,
        progress=False,
    )


def test_selection_ignores_store_order(tmp_path, images, extractor_file):
    """Check that the same pixels stored in another order and under other keys
    give the same reference subset, in the same order, and the same features."""
    write_store_in_order(tmp_path / "a", images, np.arange(10), "official")
    write_store_in_order(tmp_path / "b", images, np.arange(10)[::-1], "folders")
    first = evaluator(tmp_path / "a", tmp_path / "cache-a", extractor_file)
    second = evaluator(tmp_path / "b", tmp_path / "cache-b", extractor_file)
    a = first.reference_features()
    b = second.reference_features()
    assert a.description["selected_sha256"] == b.description["selected_sha256"]
    assert a.description["split_digest"] == b.description["split_digest"]
    np.testing.assert_array_equal(a.features, b.features)


def test_selection_takes_smallest_hashes_first(tmp_path, images, extractor_file):
    """Check that the reference set is the COUNT images with the smallest SHA-256."""
    import hashlib

    write_store_in_order(tmp_path, images, np.arange(10), "k")
    hashes = [hashlib.sha256(image.tobytes()).hexdigest() for image in images]
    expected_order = sorted(range(10), key=hashes.__getitem__)[:COUNT]
    ours = evaluator(tmp_path, tmp_path / "cache", extractor_file)
    pipeline_features, _ = ours.pipeline.features(images[expected_order])
    np.testing.assert_array_equal(ours.reference_features().features, pipeline_features)


def test_reference_features_are_cached(tmp_path, images, extractor_file, monkeypatch):
    """Check that a second evaluator reads the cache instead of the network."""
    write_store_in_order(tmp_path, images, np.arange(10), "k")
    first = evaluator(tmp_path, tmp_path / "cache", extractor_file).reference_features()
    second_evaluator = evaluator(tmp_path, tmp_path / "cache", extractor_file)

    def no_network(*args, **kwargs):
        raise AssertionError("the cached features were not used")

    monkeypatch.setattr(second_evaluator.pipeline, "extract_all", no_network)
    second = second_evaluator.reference_features()
    np.testing.assert_array_equal(first.features, second.features)


def test_too_few_images_is_reported(tmp_path, images, extractor_file):
    """Check the error when a partial store cannot serve the protocol's count."""
    from benchmark.errors import UserError

    write_store_in_order(tmp_path, images, np.arange(10), "k")
    ours = evaluator(
        tmp_path, tmp_path / "cache", extractor_file, tiny_protocol(real=11)
    )
    with pytest.raises(UserError, match="has 10 images, 11 are needed"):
        ours.reference_features()


class RecordingGenerator(nn.Module):
    """Returns a constant grey image and records every z it receives."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.seen.append(z.clone())
        return torch.full((z.shape[0], 3, 32, 32), 0.5) + self.scale


def test_generator_latents_follow_compare_gan(tmp_path, images, extractor_file):
    """Check z = RandomState(42).uniform(-1, 1) in sequence, whatever the batch,
    eval mode during sampling, and training mode and global RNG restored."""
    write_store_in_order(tmp_path, images, np.arange(10), "k")
    ours = evaluator(tmp_path, tmp_path / "cache", extractor_file)
    generator = RecordingGenerator().train()
    modes = []
    generator.register_forward_pre_hook(
        lambda module, args: modes.append(module.training)
    )
    before = torch.get_rng_state()
    sample = ours.generator_features(generator, z_dim=5, batch_size=4, device="cpu")
    assert sample.features.shape == (COUNT, 2048)
    assert torch.equal(before, torch.get_rng_state())
    assert generator.training
    assert modes == [False, False]
    drawn = torch.cat(generator.seen).numpy()
    expected = np.random.RandomState(42).uniform(-1.0, 1.0, size=(8, 5))
    np.testing.assert_array_equal(drawn, expected.astype(np.float32))


def test_non_finite_generator_output_is_reported(tmp_path, images, extractor_file):
    """Check that NaN pixels raise GeneratedNonFinite instead of a number."""
    from benchmark.protocol import GeneratedNonFinite

    write_store_in_order(tmp_path, images, np.arange(10), "k")
    ours = evaluator(tmp_path, tmp_path / "cache", extractor_file)
    generator = RecordingGenerator()
    with torch.no_grad():
        generator.scale.fill_(float("nan"))
    with pytest.raises(GeneratedNonFinite):
        ours.generator_features(generator, z_dim=5, batch_size=4, device="cpu")


def test_changed_store_is_caught_even_with_cache(tmp_path, images, extractor_file):
    """Check that a pixel changed after prepare fails evaluation, warm cache or not."""
    import h5py

    from benchmark.errors import UserError

    write_store_in_order(tmp_path, images, np.arange(10), "k")
    evaluator(tmp_path, tmp_path / "cache", extractor_file).reference_features()
    with h5py.File(tmp_path / "cifar10" / "test.h5", "r+") as handle:
        handle["images"][3, 0, 0, 0] ^= 1
    fresh = evaluator(tmp_path, tmp_path / "cache", extractor_file)
    with pytest.raises(UserError, match="does not match its manifest hash"):
        fresh.reference_features()


@pytest.mark.parametrize("damage", ["truncate", "wrong_shape"])
def test_bad_cache_is_recomputed(tmp_path, images, extractor_file, damage):
    """Check that a truncated or wrong-shaped cache file is ignored and rewritten."""
    write_store_in_order(tmp_path, images, np.arange(10), "k")
    first = evaluator(tmp_path, tmp_path / "cache", extractor_file).reference_features()
    (cache_file,) = (tmp_path / "cache" / "features").glob("*.npz")
    if damage == "truncate":
        cache_file.write_bytes(cache_file.read_bytes()[:100])
    else:
        np.savez(cache_file, features=np.zeros((5, 2048), dtype=np.float64))
    again = evaluator(tmp_path, tmp_path / "cache", extractor_file).reference_features()
    np.testing.assert_array_equal(first.features, again.features)
    with np.load(cache_file) as stored:
        assert stored["features"].shape == (COUNT, 2048)


def test_unwritable_cache_only_warns(tmp_path, images, extractor_file, monkeypatch):
    """Check that a cache that cannot be written does not fail the evaluation."""
    import benchmark.protocol as protocol_module
    from benchmark.errors import UserError

    def refuse(path):
        raise UserError(f"cannot create directory {str(path)!r}: Read-only file system")

    monkeypatch.setattr(protocol_module, "ensure_directory", refuse)
    write_store_in_order(tmp_path, images, np.arange(10), "k")
    result = evaluator(
        tmp_path, tmp_path / "cache", extractor_file
    ).reference_features()
    assert result.features.shape == (COUNT, 2048)


@pytest.mark.parametrize("count, message", [(0, "at least 2"), (1, "at least 2"),
                                            (11, "has 10 images")])  # fmt: skip
def test_count_is_checked(tmp_path, images, count, message):
    """Check the range of sample counts before any work."""
    from benchmark.errors import UserError
    from benchmark.protocol import check_count

    write_store_in_order(tmp_path, images, np.arange(10), "k")
    with pytest.raises(UserError, match=message):
        check_count(tmp_path, "cifar10", "train", count)
