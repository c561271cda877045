"""Measure the metric path: feature extraction, Fréchet distance, peak memory.

Feature extraction, on the same real CIFAR-10 images and the same network file:

* ours: `FeaturePipeline` (TF1 resize, (x - 128) / 128, channels_last input)
  at the kurach2019 protocol's Inception batch;
* clean-fid's folder path (`cleanfid.fid.get_folder_features`) on PNG files of
  the same images, with the same network behind clean-fid's model call. It
  runs three times: in its default "clean" mode (Pillow bicubic resize per
  image) at its default batch of 128 and at ours, then in "legacy_tensorflow"
  mode with our TF1 resize as its resize function. The last gives the network
  the same input as ours, so its features must agree with ours;
* the bare forward: the network alone on tensors already resized and scaled,
  at our batch.

Fréchet distance from 2048-d statistics: ours (eigendecompositions of
symmetric matrices) against `scipy.linalg.sqrtm` of sigma1 @ sigma2, the
route of TTUR and clean-fid, on real statistics when `--features` names two
feature files.

Peak memory, with `--store ROOT`: a child process runs the real command
`benchmark eval --dataset cifar10 --protocol kurach2019 --split train` on the
prepared store at ROOT (10,000 train images against the 10,000 test images,
FID, KID and precision/recall), and its peak resident size is reported. With
`--cache DIR` the child uses that cache folder, by default a new empty one.
If the cache already contains the test features, the child extracts only the
train images.

Usage:
    python scripts/benchmark_metrics_speed.py --extractor FILE \\
        --lossless cifar10-lossless-subset.tar.gz [--images 256] \\
        [--features real.npz fake.npz] [--store ROOT [--cache DIR]] \\
        [--parts extraction,frechet,memory] [--json]

This is a measurement, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from PIL import Image

from benchmark.metrics.extractor import KNOWN_EXTRACTORS, Extractor, load_extractor
from benchmark.metrics.features import FeaturePipeline
from benchmark.metrics.fid import feature_statistics, frechet_distance
from benchmark.metrics.resize import resize_bilinear_tf1
from benchmark.records import environment
from benchmark.specs import load_protocol

BATCH = load_protocol("kurach2019").inception_batch
CLEANFID_DEFAULT_BATCH = 128


def load_images(tarball: Path, count: int) -> np.ndarray:
    """Read the first `count` train images of the lossless subset as uint8 NHWC."""
    images = []
    with tarfile.open(tarball) as archive:
        for index in range(count):
            member = f"cifar10-lossless-subset/train/{index:05d}.png"
            data = archive.extractfile(member).read()
            images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(images)


class Pool3FromResized(torch.nn.Module):
    """clean-fid's model call on resized [0, 255] input: scale, then pool_3."""

    def __init__(self, extractor: Extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features, _ = self.extractor.forward((images - 128.0) / 128.0)
        return features


def tf1_resize_numpy(image: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(image).to(torch.float32).permute(2, 0, 1)[None]
    return np.ascontiguousarray(resize_bilinear_tf1(tensor, 299)[0].permute(1, 2, 0))


def timed(function, repeats: int = 1) -> tuple[float, object]:
    """Return the fastest wall time of `repeats` calls and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def measure_extraction(extractor: Extractor, images: np.ndarray) -> dict:
    from cleanfid.fid import get_folder_features

    count = len(images)
    pipeline = FeaturePipeline(extractor, batch_size=BATCH)
    pipeline.features(images[:2])  # first call loads kernels

    ours_seconds, (ours, _) = timed(lambda: pipeline.features(images))

    resized = torch.cat(
        [
            pipeline.preprocess(torch.from_numpy(images[i : i + BATCH]))
            for i in range(0, count, BATCH)
        ]
    )

    def bare() -> None:
        with torch.no_grad(), torch.jit.optimized_execution(False):
            for start in range(0, count, BATCH):
                extractor.module(resized[start : start + BATCH])

    bare_seconds, _ = timed(bare)

    results = {"images": count, "batch": BATCH}
    runs = (
        ("clean", None, CLEANFID_DEFAULT_BATCH),
        ("clean", None, BATCH),
        ("legacy_tensorflow", tf1_resize_numpy, BATCH),
    )
    with tempfile.TemporaryDirectory() as folder:
        for index, image in enumerate(images):
            Image.fromarray(image).save(Path(folder) / f"{index:05d}.png")
        model = Pool3FromResized(extractor)
        for mode, resize, batch in runs:

            def cleanfid_features(mode=mode, resize=resize, batch=batch):
                return get_folder_features(
                    folder,
                    model=model,
                    num_workers=0,
                    batch_size=batch,
                    device=torch.device("cpu"),
                    mode=mode,
                    custom_fn_resize=resize,
                    verbose=False,
                )

            seconds, theirs = timed(cleanfid_features)
            key = f"cleanfid_{mode}_batch{batch}"
            results[f"{key}_images_per_s"] = count / seconds
            results[f"{key}_max_abs_feature_difference"] = float(
                np.abs(theirs - ours).max()
            )
            results[f"ours_over_{key}"] = seconds / ours_seconds
    results["ours_images_per_s"] = count / ours_seconds
    results["bare_forward_images_per_s"] = count / bare_seconds
    results["ours_over_bare"] = bare_seconds / ours_seconds
    return results


def sqrtm_fid(mu1, sigma1, mu2, sigma2) -> float:
    """FID with scipy's sqrtm of the non-symmetric product (TTUR, clean-fid)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    difference = mu1 - mu2
    return float(
        difference @ difference
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2 * np.trace(root)
    )


def load_feature_pair(paths: list[str] | None) -> tuple[np.ndarray, np.ndarray, str]:
    if paths:
        first, second = (np.load(path)["features"] for path in paths)
        return first, second, f"real features {paths[0]} vs {paths[1]}"
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(2048, 2048)) / np.sqrt(2048)
    first = np.abs(rng.normal(size=(4000, 2048)) @ mixing)
    second = np.abs(rng.normal(size=(4000, 2048)) @ mixing + 0.05)
    return first, second, "random pool_3-like features, 4000 x 2048 each"


def measure_frechet(first: np.ndarray, second: np.ndarray, repeats: int) -> dict:
    mu1, sigma1 = feature_statistics(first)
    mu2, sigma2 = feature_statistics(second)
    ours_seconds, ours = timed(
        lambda: frechet_distance(mu1, sigma1, mu2, sigma2), repeats
    )
    sqrtm_seconds, reference = timed(
        lambda: sqrtm_fid(mu1, sigma1, mu2, sigma2), repeats
    )
    return {
        "fid_ours": ours,
        "fid_sqrtm": reference,
        "relative_difference": abs(ours - reference) / abs(reference),
        "ours_seconds": ours_seconds,
        "sqrtm_seconds": sqrtm_seconds,
        "speedup": sqrtm_seconds / ours_seconds,
    }


def measure_eval_memory(store: str, cache: str | None, extractor: str) -> dict:
    """Run a 10K vs 10K `benchmark eval` in a child; return its peak RSS and time."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        command = [
            *(sys.executable, "-m", "benchmark.cli", "eval"),
            *("--dataset", "cifar10", "--protocol", "kurach2019", "--split", "train"),
            *("--root", store, "--cache", cache or str(Path(scratch) / "cache")),
            *("--extractor", extractor, "--out", str(out)),
            *("--no-progress", "--no-download"),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = json.loads(out.read_text())
    return {
        "command": " ".join(command[1:]),
        "seconds": seconds,
        "peak_mib": peak / 1024,
        "fid": result["metrics"]["fid"],
        "real_count": result["protocol"]["real_count"],
        "fake_count": result["protocol"]["fake_count"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractor", required=True, help="Inception TorchScript file")
    parser.add_argument(
        "--lossless", help="cifar10-lossless-subset.tar.gz (for the extraction part)"
    )
    parser.add_argument("--images", type=int, default=256, help="images to extract")
    parser.add_argument(
        "--features", nargs=2, default=None, help="two feature .npz files"
    )
    parser.add_argument(
        "--store", default=None, help="prepared CIFAR-10 store for the memory run"
    )
    parser.add_argument(
        "--cache", default=None, help="cache folder for the memory run's eval"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="Fréchet timings: best of this many"
    )
    parser.add_argument(
        "--parts",
        default="extraction,frechet,memory",
        help="comma-separated parts to run (memory runs only with --store)",
    )
    parser.add_argument("--json", action="store_true", help="print only JSON")
    arguments = parser.parse_args()

    parts = set(arguments.parts.split(","))
    if unknown := parts - {"extraction", "frechet", "memory"}:
        parser.error(
            f"unknown --parts {sorted(unknown)}; expected extraction, frechet, memory"
        )
    if "extraction" in parts and not arguments.lossless:
        parser.error("the extraction part needs --lossless FILE (the shared subset)")
    report = {
        "environment": environment(torch.device("cpu")),
        "threads": torch.get_num_threads(),
    }
    if "extraction" in parts:
        extractor = load_extractor(
            arguments.extractor, [e.sha256 for e in KNOWN_EXTRACTORS]
        )
        images = load_images(Path(arguments.lossless), arguments.images)
        report["extraction"] = measure_extraction(extractor, images)
    if "frechet" in parts:
        first, second, description = load_feature_pair(arguments.features)
        report["frechet"] = {
            "inputs": description,
            **measure_frechet(first, second, arguments.repeats),
        }
    if "memory" in parts and arguments.store:
        report["memory"] = measure_eval_memory(
            arguments.store, arguments.cache, arguments.extractor
        )
    if arguments.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    print_report(report)
    return 0


def print_report(report: dict) -> None:
    if "extraction" in report:
        print_extraction(report["extraction"], report["threads"])
    if "frechet" in report:
        print_frechet(report["frechet"])
    memory = report.get("memory")
    if memory:
        print(
            f"peak memory of `{memory['command']}`: {memory['peak_mib']:.0f} MiB "
            f"({memory['real_count']} vs {memory['fake_count']} images, "
            f"{memory['seconds']:.0f} s, FID {memory['fid']:.10g})"
        )


def print_extraction(extraction: dict, threads: int) -> None:
    print(
        f"feature extraction, {extraction['images']} CIFAR-10 images, "
        f"{threads} threads (images/s):"
    )
    print(f"  ours, batch {BATCH}: {extraction['ours_images_per_s']:.2f}")
    print(
        f"  bare forward, batch {BATCH}: {extraction['bare_forward_images_per_s']:.2f}"
        f" (ours at {100 * extraction['ours_over_bare']:.1f} %)"
    )
    for key, value in extraction.items():
        if key.startswith("cleanfid_") and key.endswith("_images_per_s"):
            run = key.removesuffix("_images_per_s")
            print(
                f"  clean-fid folder, {run.removeprefix('cleanfid_')}: {value:.2f}"
                f" (ours x{extraction[f'ours_over_{run}']:.2f}; max |feature "
                f"difference| {extraction[f'{run}_max_abs_feature_difference']:.3g})"
            )


def print_frechet(frechet: dict) -> None:
    print(f"Fréchet distance, 2048-d ({frechet['inputs']}):")
    print(f"  ours  {frechet['ours_seconds']:.3f} s  FID {frechet['fid_ours']:.10g}")
    print(f"  sqrtm {frechet['sqrtm_seconds']:.3f} s  FID {frechet['fid_sqrtm']:.10g}")
    print(
        f"  speed-up x{frechet['speedup']:.2f}, relative difference "
        f"{frechet['relative_difference']:.2e}"
    )


if __name__ == "__main__":
    sys.exit(main())
