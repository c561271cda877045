"""A learning check on real CIFAR-10 that cannot pass by accident.

SNDCGAN with spectral norm (`sndcgan-ns-sn-cifar10`), batch 64, trained for
400 steps from seed 0 on the shared JPEG copy of CIFAR-10 and evaluated under
the `quick` protocol every 100 steps, must reach a best FID well below that
of its untrained generator. The best of the evaluated checkpoints is what
compare_gan reports for a run. It also makes this check hold on other CPUs.
The bits of a training run depend on the CPU's kernels and thread count, and
this early in training FID swings by a hundred points between checkpoints
and between such variants of one run (numbers below).
Slow: 43 minutes on 2 cores beside another training job.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.data.prepare import prepare_dataset
from benchmark.protocol import Evaluator
from benchmark.run import _train_images_in_hash_order, resolve_config
from benchmark.specs import load_baseline, load_dataset, load_protocol
from benchmark.training.loop import make_state, train

STEPS = 400
EVAL_EVERY = 100
# The best trained FID must be below this fraction of the untrained FID.
# Untrained, the quick FID is 581.87 on the development and CI machines.
# Trained FIDs of this run at single checkpoints were measured on 2-core
# machines (development and CI; 1 or 2 threads; ATen and oneDNN on AVX-512
# kernels or held to AVX2). They ran from 389 to 499 at steps 50 to 300, and
# were 421 and 527 at step 400: 0.67 to 0.91 of untrained. So one checkpoint can miss 0.9, but no
# variant tried had a checkpoint above 0.86 before step 400. A loop whose D
# is never updated measured 594.72 to 638.64 at steps 100 to 400 and fails.
# REPRODUCING.md has the table.
# NOTE: this rule has not yet run on CI's CPU, whose FIDs at steps 100 to 300
# are unknown.
REQUIRED_RATIO = 0.9


@pytest.mark.slow
def test_short_run_lowers_fid(tmp_path, shared_data, extractor_file):
    """Check that the best FID of 400 steps is well below the untrained G's."""
    cpu = torch.device("cpu")
    spec = load_baseline("sndcgan-ns-sn-cifar10")
    dataset = load_dataset("cifar10")
    prepare_dataset(
        dataset, shared_data / "cifar10" / "cifar10-jpeg.tar.gz", tmp_path / "data",
        progress=False,
    )  # fmt: skip
    evaluator = Evaluator(
        load_protocol("quick"), "cifar10", tmp_path / "data", tmp_path / "cache",
        extractor_path=str(extractor_file), allow_download=False, progress=False,
    )  # fmt: skip
    reference = evaluator.reference_features()
    config = resolve_config(spec, {"steps": STEPS, "eval_every": EVAL_EVERY}, 32)

    def fid(generator) -> float:
        fakes = evaluator.generator_features(generator, config.z_dim, 64, cpu)
        return evaluator.metrics(reference, fakes)["fid"]

    untrained = fid(make_state(config, 0, cpu).generator)
    trained: dict[int, float] = {}

    def evaluate(step, generator):
        trained[step] = fid(generator)

    images, _ = _train_images_in_hash_order(tmp_path / "data", "cifar10")
    train(config, 0, images, tmp_path / "run", cpu, evaluate=evaluate, progress=False)
    listed = ", ".join(f"step {step}: {value:.2f}" for step, value in trained.items())
    print(f"quick FID untrained {untrained:.2f}; {listed}")
    assert sorted(trained) == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    best = min(trained.values())
    assert best < REQUIRED_RATIO * untrained
