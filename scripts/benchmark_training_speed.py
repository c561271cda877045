"""Measure training speed: the harness's step against a bare PyTorch loop.

For each architecture family, both loops train the same models (same
initialisation) with the same Adam settings, batch and non-saturating loss
for the same number of D steps, with G updated every n_disc steps. The bare
loop does nothing else: no seeded per-step streams, no single power iteration
per update, no finiteness checks, no records. The harness step is what
`benchmark.training.loop.train` runs per step, with deterministic mode on.

Usage:
    python scripts/benchmark_training_speed.py [--batch 64] [--steps 2]
        [--rounds 5] [--families resnet_cifar,sndcgan32,sndcgan128,resnet19]
        [--json]

Prints D steps per second for both loops and their ratio. Deterministic mode
is on for both. The loops run in alternating chunks and each figure is the
median over chunks, so load from other processes affects both alike. This is a
measurement, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.models import build_models
from benchmark.records import environment
from benchmark.training import determinism
from benchmark.training.loop import (
    BatchSampler,
    TrainConfig,
    images_to_unit_interval,
    make_state,
    sample_latents,
    train_step,
)

FAMILIES = {
    "resnet_cifar": ("resnet_cifar", 32, 5),
    "sndcgan32": ("sndcgan", 32, 1),
    "sndcgan128": ("sndcgan", 128, 1),
    "resnet19": ("resnet19", 128, 1),
}


def config_for(
    architecture: str, resolution: int, n_disc: int, batch: int
) -> TrainConfig:
    return TrainConfig(
        architecture=architecture,
        resolution=resolution,
        z_dim=128,
        d_norm="spectral",
        loss="ns",
        penalty="none",
        penalty_weight=0.0,
        batch_size=batch,
        steps=10**9,
        n_disc=n_disc,
        lr=2e-4,
        beta1=0.5,
        beta2=0.999,
        checkpoint_every=10**9,
        eval_every=10**9,
    )


def harness_stepper(config: TrainConfig, images: torch.Tensor) -> Callable[[int], None]:
    """Return one step of `train`'s per-step work: batch, z, penalty stream, step, checks."""
    state = make_state(config, 0, torch.device("cpu"))
    sampler = BatchSampler(0, len(images), config.batch_size)

    def step(number: int) -> None:
        indices = torch.from_numpy(sampler.indices(number))
        real = images_to_unit_interval(images[indices])
        z = sample_latents(0, number, config.batch_size, config.z_dim)
        rng = torch.Generator().manual_seed(
            determinism.derive_seed(0, determinism.STREAM_PENALTY, number)
        )
        result = train_step(state, config, real, z, number, rng)
        values = [result.d_loss, result.g_loss, result.penalty]
        if not all(np.isfinite(v) for v in values if v is not None):
            raise RuntimeError("diverged")

    return step


def bare_stepper(config: TrainConfig, images: torch.Tensor) -> Callable[[int], None]:
    """Return one step of a plain loop: same models and optimiser, nothing else."""
    generator, discriminator = build_models(
        config.architecture, config.z_dim, config.d_norm, 0, config.resolution
    )
    betas = (config.beta1, config.beta2)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=config.lr, betas=betas
    )
    batch = config.batch_size

    def step(number: int) -> None:
        real = images[torch.randint(len(images), (batch,))]
        real = real.permute(0, 3, 1, 2).float() / 255.0
        z = torch.rand(batch, config.z_dim) * 2 - 1
        with torch.no_grad():
            fake = generator(z)
        d_loss = (
            F.softplus(-discriminator(real)).mean()
            + F.softplus(discriminator(fake)).mean()
        )
        d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
        if (number - 1) % config.n_disc == 0:
            g_loss = F.softplus(-discriminator(generator(z))).mean()
            g_optimizer.zero_grad()
            g_loss.backward()
            g_optimizer.step()

    return step


def interleaved_rates(
    steppers: dict[str, Callable[[int], None]], steps: int, rounds: int
) -> dict[str, float]:
    """Return the median D steps/s of each loop, timed in alternating chunks.

    Each round runs `steps` steps of every loop in turn, so a change in the
    machine's load hits both loops alike; the median over rounds drops the
    rounds that a burst of load spoiled. Every chunk is a whole number of
    n_disc cycles, so each loop does the same share of G updates.
    """
    for step in steppers.values():
        step(1)  # warm-up: oneDNN picks its kernels on the first call
    numbers = {name: 2 for name in steppers}
    seconds: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            started = time.perf_counter()
            for number in range(numbers[name], numbers[name] + steps):
                step(number)
            seconds[name].append(time.perf_counter() - started)
            numbers[name] += steps
    return {name: steps / statistics.median(times) for name, times in seconds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument(
        "--steps",
        type=int,
        default=2,
        help="timed G updates per chunk (x n_disc D steps)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="chunks per loop")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated families"
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    # Deterministic mode for both loops, as the harness trains.
    determinism.enable_deterministic_mode()
    rows = []
    for family in args.families.split(","):
        architecture, resolution, n_disc = FAMILIES[family]
        config = config_for(architecture, resolution, n_disc, args.batch)
        rng = np.random.default_rng(0)
        images = torch.from_numpy(
            rng.integers(0, 256, (512, resolution, resolution, 3), dtype=np.uint8)
        )
        steppers = {
            "harness": harness_stepper(config, images),
            "bare": bare_stepper(config, images),
        }
        rates = interleaved_rates(steppers, args.steps * n_disc, args.rounds)
        bare, harness = rates["bare"], rates["harness"]
        rows.append(
            {
                "family": family,
                "batch": args.batch,
                "n_disc": n_disc,
                "timed_d_steps": args.steps * n_disc * args.rounds,
                "bare_steps_per_s": round(bare, 4),
                "harness_steps_per_s": round(harness, 4),
                "ratio": round(harness / bare, 3),
            }
        )
        if not args.json:
            print(
                f"{family:<13} batch {args.batch}: bare {bare:.4f} D steps/s, "
                f"harness {harness:.4f} D steps/s, ratio {harness / bare:.3f}",
                flush=True,
            )
    if args.json:
        device = environment(torch.device("cpu"))["device"]
        json.dump({"device": device, "rows": rows}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
