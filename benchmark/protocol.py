"""Apply an evaluation protocol to a prepared split or a generator.

A protocol fixes the reference set (split and count of real images), the
number of fakes and how they are drawn, the feature network (by SHA-256), the
resize and the metrics. This module is the only place that turns those
settings into features and numbers:

1. reference features: `real_count` images of the protocol's split, cached on
   disk under a key made from everything that can change them;
2. sample features: `count` images of another split (real-vs-real floors), or
   `fake_count` images from a generator in eval mode. Fakes enter as float
   G(z) * 255 without rounding. Their z ~ U(-1, 1) comes from NumPy's legacy
   RandomState seeded with the protocol's `fake_seed`, the latents compare_gan
   v2 used for every checkpoint;
3. FID, KID (block estimator) and Inception Score where the network has logits;
   also improved precision and recall (k = 3), which compare_gan v2 did not
   compute.

Which images of a split are used, and in which order: the images sorted by
their per-image SHA-256 (hex, ascending), then the first `count`. The rule
depends only on pixels, so every source layout of the same images (official
archive, PNG export) gives the same subset, and the order is effectively
random, as KID's block estimator assumes. Store order cannot serve here: a
class-folder source stores CIFAR-10 sorted by class, and its first 10,000
training images would be two classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.data.store import (
    image_sha256,
    open_split,
    read_manifest,
    split_image_hashes,
    store_path,
)
from benchmark.errors import UserError
from benchmark.fileio import atomic_path, ensure_directory, sha256_file
from benchmark.metrics.extractor import (
    FEATURE_DIM,
    load_extractor,
    resolve_extractor_path,
)
from benchmark.metrics.features import FeaturePipeline
from benchmark.metrics.fid import fid_from_features
from benchmark.metrics.inception_score import inception_score
from benchmark.metrics.kid import kernel_inception_distance
from benchmark.metrics.precision_recall import DEFAULT_NEIGHBOURS, precision_recall
from benchmark.specs import ProtocolSpec, as_dict

logger = logging.getLogger(__name__)

# Bump when the way features are computed changes, so stale caches are not used.
FEATURE_CACHE_VERSION = 3
SELECTION_RULE = "ascending per-image sha256, first count"
# Images read from the store per feature batch (memory, not numbers).
READ_BATCH = 500
# Fakes are generated in batches of this size whatever the run's batch size:
# on CPU, G's output bits depend on its batch (torch 2.14.1 convolutions work
# on blocks of 4 samples, so samples outside a full block differ by 1 ulp).
# 64 is the training batch of every compare_gan v2 baseline.
GENERATOR_BATCH = 64


@dataclass
class FeatureSet:
    """Features of one image set, with a description for the run record."""

    features: np.ndarray  # float32 [N, 2048]
    logits: np.ndarray | None  # float64 [N, 1008], or None without a classifier
    description: dict[str, Any] = field(default_factory=dict)


class GeneratedNonFinite(Exception):
    """A generator produced NaN or infinite pixels during evaluation."""


class Evaluator:
    """A protocol bound to a dataset store, a feature network and a cache."""

    def __init__(
        self,
        protocol: ProtocolSpec,
        dataset: str,
        data_root: Path,
        cache_dir: Path,
        extractor_path: str | None = None,
        device: torch.device | str = "cpu",
        allow_download: bool = True,
        progress: bool = True,
    ):
        self.protocol = protocol
        self.dataset = dataset
        self.counts = protocol.for_dataset(dataset)
        self.data_root = Path(data_root)
        self.cache_dir = Path(cache_dir)
        self.progress = progress
        path = resolve_extractor_path(
            extractor_path, self.cache_dir, protocol.extractor.sha256, allow_download
        )
        self.extractor = load_extractor(path, protocol.extractor.sha256, device)
        self.pipeline = FeaturePipeline(
            self.extractor,
            image_size=protocol.image_size,
            batch_size=protocol.inception_batch,
            device=device,
        )

    def describe(self) -> dict[str, Any]:
        """Return the protocol, extractor and store identity for the run record."""
        manifest = read_manifest(store_path(self.data_root, self.dataset), self.dataset)
        source = manifest.get("source", {})
        return {
            "store": {
                "dataset": self.dataset,
                "spec_version": manifest.get("spec_version"),
                "reference_split": manifest.get("reference_split"),
                "source_format": source.get("format"),
                "source_sha256": source.get("sha256"),
                "split_digests": {
                    split: entry.get("digest")
                    for split, entry in manifest.get("splits", {}).items()
                },
            },
            "protocol": {
                "name": self.protocol.name,
                "version": self.protocol.version,
                "file_sha256": sha256_file(self.protocol.path),
                "real_split": self.counts.real_split,
                "real_count": self.counts.real_count,
                "fake_count": self.counts.fake_count,
                "fake_seed": self.protocol.fake_seed,
                "spec": as_dict(self.protocol),
            },
            "extractor": {
                "name": self.extractor.name,
                "sha256": self.extractor.sha256,
                "layout": self.extractor.layout,
            },
        }

    # ------------------------------------------------------------------
    # Features

    def reference_features(self) -> FeatureSet:
        """Return features of the protocol's real set (cached)."""
        return self.split_features(self.counts.real_split, self.counts.real_count)

    def split_features(self, split: str, count: int) -> FeatureSet:
        """Return features of `count` images of a prepared split (cached).

        The images are those with the smallest per-image SHA-256, in that
        order (see the module docstring). They are read and hashed on every
        call, cache or not, so a store changed after `benchmark prepare`
        cannot pass under its old digest.

        Raises:
            UserError: `count` is out of range, or an image read from the store
                does not match the manifest.
        """
        check_count(self.data_root, self.dataset, split, count)
        with open_split(self.data_root, self.dataset, split) as reader:
            hashes = split_image_hashes(self.data_root, self.dataset, split)
            if len(hashes) != len(reader):
                raise UserError(
                    f"the manifest of {self.dataset!r} lists {len(hashes)} images "
                    f"for split {split!r} but its file holds {len(reader)}; run "
                    f"`benchmark verify {self.dataset}`"
                )
            selected = sorted(range(len(hashes)), key=hashes.__getitem__)[:count]
            selected_digest = hashlib.sha256(
                "\n".join(hashes[i] for i in selected).encode("ascii")
            ).hexdigest()
            description = {
                "dataset": self.dataset,
                "split": split,
                "count": count,
                "split_digest": reader.digest,
                "selection": SELECTION_RULE,
                "selected_sha256": selected_digest,
            }

            def batches() -> Iterator[np.ndarray]:
                for start in range(0, count, READ_BATCH):
                    chunk = selected[start : start + READ_BATCH]
                    images = reader.read(chunk)
                    _check_hashes(images, [hashes[i] for i in chunk], chunk, reader)
                    yield images

            cache_path = self._cache_path(description)
            cached = _read_cached_features(cache_path, count)
            if cached is not None:
                for _ in batches():
                    pass  # the pixels are still checked against the manifest
                logger.info("using cached features %s", cache_path)
                return FeatureSet(*cached, description=description)

            features, logits = self.pipeline.extract_all(
                batches(), total=count, desc=f"{split} features", progress=self.progress
            )
        _write_cached_features(cache_path, features, logits)
        return FeatureSet(features, logits, description)

    def generator_features(
        self, generator: nn.Module, z_dim: int, batch_size: int, device: torch.device
    ) -> FeatureSet:
        """Return features of `fake_count` images from `generator` in eval mode.

        The generator's mode is restored afterwards and no global RNG is used,
        so evaluating in the middle of training changes nothing in training.

        Raises:
            GeneratedNonFinite: the generator produced NaN or infinite pixels.
        """
        count = self.counts.fake_count
        latents = np.random.RandomState(self.protocol.fake_seed)
        was_training = generator.training
        generator.eval()

        def batches() -> Iterator[torch.Tensor]:
            produced = 0
            while produced < count:
                z = latents.uniform(-1.0, 1.0, size=(batch_size, z_dim))
                z = torch.from_numpy(z.astype(np.float32)).to(device)
                with torch.no_grad():
                    images = generator(z)
                if not torch.isfinite(images).all():
                    raise GeneratedNonFinite(
                        f"generated images contain NaN or infinite values "
                        f"(batch starting at sample {produced})"
                    )
                images = images[: count - produced].permute(0, 2, 3, 1) * 255.0
                if self.protocol.quantize_fakes:
                    images = images.round().clamp(0, 255).to(torch.uint8)
                produced += images.shape[0]
                yield images

        try:
            features, logits = self.pipeline.extract_all(
                batches(), total=count, desc="fake features", progress=self.progress
            )
        finally:
            generator.train(was_training)
        description = {
            "count": count,
            "latent": "uniform(-1, 1), numpy RandomState",
            "seed": self.protocol.fake_seed,
            "quantized": self.protocol.quantize_fakes,
        }
        return FeatureSet(features, logits, description)

    # ------------------------------------------------------------------
    # Metrics

    def metrics(self, reference: FeatureSet, sample: FeatureSet) -> dict[str, Any]:
        """Compute FID, KID, precision/recall and (with logits) IS of `sample`."""
        kid, kid_stderr = kernel_inception_distance(
            reference.features, sample.features, block_size=self.protocol.kid_block_size
        )
        precision, recall = precision_recall(reference.features, sample.features)
        result: dict[str, Any] = {
            "fid": fid_from_features(reference.features, sample.features),
            "kid": kid,
            "kid_stderr": None if math.isnan(kid_stderr) else kid_stderr,
            "precision": precision,
            "recall": recall,
            "precision_recall_k": DEFAULT_NEIGHBOURS,
        }
        if sample.logits is None:
            result["inception_score"] = None
            result["inception_score_unavailable"] = (
                f"extractor {self.extractor.name} has no 1008-class classifier; "
                "use inception-2015-12-05.pt for the Inception Score"
            )
        else:
            mean, std = inception_score(sample.logits, splits=self.protocol.is_splits)
            result["inception_score"] = mean
            result["inception_score_std"] = std
            result["inception_score_splits"] = self.protocol.is_splits
        return result

    # ------------------------------------------------------------------
    # Cache

    def _cache_path(self, description: dict[str, Any]) -> Path:
        key = {
            "cache_version": FEATURE_CACHE_VERSION,
            "images": description,
            "extractor_sha256": self.extractor.sha256,
            "resize": self.protocol.resize,
            "image_size": self.protocol.image_size,
            "torch": torch.__version__,
            "device": self.pipeline.device.type,
            # CPU kernels split work by thread, which moves the last bits.
            "threads": torch.get_num_threads(),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / "features" / f"{digest}.npz"


def check_count(root: Path, dataset: str, split: str, count: int) -> None:
    """Reject a sample count that a split cannot serve, before any heavy work."""
    with open_split(root, dataset, split) as reader:
        available = len(reader)
    if count < 2:
        raise UserError(
            f"image count must be at least 2 (a covariance needs two), got {count}"
        )
    if count > available:
        raise UserError(
            f"split {split!r} of {dataset!r} has {available} images, {count} are "
            "needed; prepare the full dataset (a partial source cannot serve this "
            "count) or ask for fewer"
        )


def _check_hashes(images: np.ndarray, expected: list[str], indices, reader) -> None:
    for image, digest, index in zip(images, expected, indices, strict=True):
        if image_sha256(image) != digest:
            raise UserError(
                f"image {index} (key {reader.keys[index]!r}) of {str(reader.path)!r} "
                "does not match its manifest hash; the store changed after it was "
                f"prepared: run `benchmark verify {reader.dataset}` and prepare it again"
            )


def _read_cached_features(
    path: Path, count: int
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Return cached (features, logits), or None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            features = stored["features"]
            logits = stored["logits"] if "logits" in stored.files else None
    except Exception as error:  # noqa: BLE001 - any unreadable cache is recomputed
        logger.warning("ignoring unreadable feature cache %s: %s", path, error)
        return None
    valid = (
        features.dtype == np.float32
        and features.shape == (count, FEATURE_DIM)
        and np.isfinite(features).all()
        and (logits is None or (logits.shape[0] == count and np.isfinite(logits).all()))
    )
    if not valid:
        logger.warning("ignoring feature cache %s: wrong shape, type or values", path)
        return None
    return features, logits


def _write_cached_features(
    path: Path, features: np.ndarray, logits: np.ndarray | None
) -> None:
    """Write the cache; a cache folder that cannot be written only costs speed."""
    arrays = {"features": features}
    if logits is not None:
        arrays["logits"] = logits
    try:
        ensure_directory(path.parent)
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
    except UserError as error:
        logger.warning("feature cache not written: %s", error)
