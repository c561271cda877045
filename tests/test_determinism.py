"""Bitwise determinism of every named baseline, across processes.

Two processes train each baseline for two steps and evaluate it under a tiny
protocol. Same seed: identical checkpoint bytes, weights, training logs and
metrics. Another seed: other weights and metrics. The second process reads a
store holding the same pixels in another order under other keys, so the
order of dataset files is checked too.

Evaluation batch sizes (G's batch and the Inception batch) are checked
separately, in one process.

On a 2-core CPU every test of two processes takes minutes (each run draws a
64-image sample grid and Inception features). The two-baseline check runs
with the slow tests; the other 28 baselines are `exhaustive`, not run in CI:
`pytest -m exhaustive tests/test_determinism.py` (on 2 cores, 131 s for the
7 at 32x32 with nothing else running, 86 minutes for the 21 at 128x128 with
other jobs running).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import cli as cli_module
from benchmark import run as run_module
from benchmark.data.store import SourceData, SplitArrays, store_lock, write_store
from benchmark.models import build_models
from benchmark.protocol import GENERATOR_BATCH, Evaluator
from benchmark.specs import (
    ProtocolDataset,
    available,
    load_baseline,
    load_dataset,
    load_protocol,
)

TRAIN_COUNT = 8
TEST_COUNT = 6
SAMPLES = 4
TINY_PROTOCOL = f"""
name = "tiny"
version = 1
description = "kurach2019's pipeline on {SAMPLES} reals vs {SAMPLES} fakes, for tests."
resize = "tf1_bilinear"
image_size = 299
inception_batch = 50
fake_seed = 42
quantize_fakes = false
kid_block_size = 1024
is_splits = 1

[extractor]
name = "tf-inception-2015-12-05"
sha256 = ["7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"]
""" + "".join(
    f"""
[datasets.{name}]
real_split = "test"
real_count = {SAMPLES}
fake_count = {SAMPLES}
"""
    for name in ("cifar10", "lsun", "celebahq")
)
OVERRIDES = ["--steps", "2", "--batch-size", "2"]
OVERRIDES += ["--checkpoint-every", "2", "--eval-every", "2"]
# Two processes on a loaded 2-core machine; the 128x128 group takes longest.
PROCESS_TIMEOUT = 3600


def write_stores(root: Path, reverse: bool) -> None:
    """Write small stores of all three datasets; `reverse` stores the same
    pixels in reverse order under other keys."""
    for dataset in ("cifar10", "lsun", "celebahq"):
        spec = load_dataset(dataset)
        rng = np.random.default_rng(len(dataset))
        splits = {}
        for split, count in (("train", TRAIN_COUNT), ("test", TEST_COUNT)):
            shape = (count, spec.resolution, spec.resolution, 3)
            images = rng.integers(0, 256, size=shape, dtype=np.uint8)
            order = np.arange(count)[::-1] if reverse else np.arange(count)
            prefix = "reversed" if reverse else "source"
            splits[split] = SplitArrays(
                np.ascontiguousarray(images[order]),
                np.zeros(count, dtype=np.int64),
                [f"{prefix}/{split}/{index}" for index in range(count)],
            )
        with store_lock(root, dataset):
            write_store(root, spec, SourceData(splits, {"format": "test"}), True)


def baseline_group(resolution: int) -> list[str]:
    return [
        name
        for name in available("baselines")
        if load_dataset(load_baseline(name).dataset).resolution == resolution
    ]


def run_in_process(
    names: list[str], seeds: int, root: Path, out: Path, common: list[str]
) -> None:
    runs = [
        [
            "run",
            "baseline",
            name,
            "--dataset",
            load_baseline(name).dataset,
            "--root",
            str(root),
            "--out",
            str(out / name),
            "--seeds",
            str(seeds),
            *common,
        ]  # fmt: skip
        for name in names
    ]
    job = out.with_suffix(".json")
    job.write_text(json.dumps({"runs": runs}))
    worker = Path(__file__).with_name("determinism_worker.py")
    subprocess.run(
        [sys.executable, str(worker), str(job)],
        check=True,
        timeout=PROCESS_TIMEOUT,
        stdout=subprocess.DEVNULL,
    )


def comparable(record: dict) -> dict:
    """Drop what differs between identical runs: times, environment, sessions."""
    kept = {
        key: value
        for key, value in record.items()
        if key not in ("wall_seconds_last_session", "environment", "sessions")
    }
    kept["evaluations"] = [
        {k: v for k, v in entry.items() if k != "seconds"}
        for entry in record["evaluations"]
    ]
    return kept


def train_log(seed_dir: Path) -> list[dict]:
    entries = [json.loads(line) for line in (seed_dir / "train.jsonl").open()]
    for entry in entries:
        entry.pop("session_seconds")
    return entries


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def check_group(names, extractor_file, tmp_path):
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(TINY_PROTOCOL)
    common = [
        "--protocol", str(protocol), "--extractor", str(extractor_file),
        "--device", "cpu", "--no-progress", *OVERRIDES,
    ]  # fmt: skip
    for folder, reverse in (("data-a", False), ("data-b", True)):
        write_stores(tmp_path / folder, reverse)
    # Each process gets its own feature cache, so nothing computed by one is
    # reused by the other.
    run_in_process(
        names, 2, tmp_path / "data-a", tmp_path / "a",
        [*common, "--cache", str(tmp_path / "cache-a")],
    )  # fmt: skip
    run_in_process(
        names, 1, tmp_path / "data-b", tmp_path / "b",
        [*common, "--cache", str(tmp_path / "cache-b")],
    )  # fmt: skip

    checkpoint = "seed-{}/checkpoints/step-000000002.pt"
    for name in names:
        a, b = tmp_path / "a" / name, tmp_path / "b" / name
        first = read(a / "seed-0" / "record.json")
        again = read(b / "seed-0" / "record.json")
        other = read(a / "seed-1" / "record.json")
        assert comparable(first) == comparable(again), name
        assert (a / checkpoint.format(0)).read_bytes() == (
            b / checkpoint.format(0)
        ).read_bytes(), name
        assert train_log(a / "seed-0") == train_log(b / "seed-0"), name
        assert (
            first["weights"]["generator_sha256"]
            != (other["weights"]["generator_sha256"])
        ), name
        assert (
            first["weights"]["discriminator_sha256"]
            != (other["weights"]["discriminator_sha256"])
        ), name
        assert first["final"]["fid"] != other["final"]["fid"], name
        assert (a / checkpoint.format(0)).read_bytes() != (
            a / checkpoint.format(1)
        ).read_bytes(), name


# One baseline per 32x32 architecture, both with the gradient penalty, whose
# noise comes from its own seeded stream.
QUICK = ["resnetcifar-ns-sn-gp", "sndcgan-ns-sn-gp-cifar10"]


@pytest.mark.slow
def test_two_baselines_repeat_across_processes(extractor_file, tmp_path):
    """Check bits across processes and store orders for two 32x32 baselines
    (the quickest check of the promise, about 16 minutes on 2 loaded cores)."""
    check_group(QUICK, extractor_file, tmp_path)


@pytest.mark.exhaustive
def test_other_32px_baselines_repeat_across_processes(extractor_file, tmp_path):
    """Check bits across processes and store orders for the other 32x32 baselines."""
    names = baseline_group(32)
    assert len(names) == 9
    check_group([name for name in names if name not in QUICK], extractor_file, tmp_path)


@pytest.mark.exhaustive
def test_128px_baselines_repeat_across_processes(extractor_file, tmp_path):
    """Check bits across processes and store orders for every 128x128 baseline."""
    names = baseline_group(128)
    assert len(names) == 21
    check_group(names, extractor_file, tmp_path)


def test_generator_batch_changes_bits_so_it_is_fixed():
    """Check that G's output bits depend on its batch on this CPU, which is why
    evaluation always generates in batches of GENERATOR_BATCH."""
    generator, _ = build_models("resnet_cifar", 128, "spectral", 0, 32)
    generator.eval()
    z = torch.from_numpy(
        np.random.RandomState(42).uniform(-1, 1, size=(12, 128)).astype(np.float32)
    )
    with torch.no_grad():
        whole = generator(z)
        in_fives = torch.cat([generator(z[start : start + 5]) for start in (0, 5, 10)])
    assert not torch.equal(whole, in_fives)
    assert torch.allclose(whole, in_fives, rtol=0, atol=1e-6)
    assert GENERATOR_BATCH == 64


def test_run_and_eval_use_fixed_generator_batch():
    """Check that neither `run` nor `eval` passes the training batch size to
    the generator during evaluation."""
    for module in (run_module, cli_module):
        source = inspect.getsource(module)
        calls = source.split(".generator_features(")[1:]
        assert calls, module.__name__
        for call in calls:
            assert "GENERATOR_BATCH" in call.split(")")[0], module.__name__


def test_inception_batch_changes_no_feature_bit(
    synthetic_store, extractor_file, tmp_path
):
    """Check that the Inception batch size changes no bit of the fake features,
    hence of any metric."""
    generator, _ = build_models("resnet_cifar", 128, "spectral", 0, 32)
    counts = {"cifar10": ProtocolDataset("test", 6, 6)}
    results = []
    for inception_batch in (50, 1, 4):
        protocol = dataclasses.replace(
            load_protocol("quick"), datasets=counts, inception_batch=inception_batch
        )
        evaluator = Evaluator(
            protocol, "cifar10", synthetic_store, tmp_path / "cache",
            extractor_path=str(extractor_file), allow_download=False, progress=False,
        )  # fmt: skip
        sample = evaluator.generator_features(
            generator, 128, GENERATOR_BATCH, torch.device("cpu")
        )
        results.append(sample.features)
    for features in results[1:]:
        assert features.tobytes() == results[0].tobytes()
