"""Measure what one study trial costs, to estimate the compute of Figures 1-4.

For each (architecture, penalty) of the figure studies, at 128 x 128, this
times one harness training step on this machine's CPU and counts its
floating-point operations with torch's FLOP formulas during that same
step: a step with a G update (n_disc = 1, and the first step of every
n_disc = 5 cycle) and a D-only step. It also counts the operations of one
Inception v3 forward pass (torchvision's architecture on the meta device) and
times the harness's feature pass when BENCHMARK_EXTRACTOR is set. A GPU time
follows from the counted operations and an assumed sustained throughput,
which REPRODUCING.md states next to every estimate.

A step at batch 64 takes minutes on a small CPU, so `--batch` can time a
smaller batch; operations grow linearly with the batch (Adam's update of the
weights aside, which is below 0.1 % here).

Usage:
    python scripts/estimate_study_compute.py [--batch 64] [--json]

This is a measurement, not a test: times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from benchmark.metrics.extractor import load_extractor
from benchmark.metrics.features import FeaturePipeline
from benchmark.records import environment
from benchmark.specs import load_protocol
from benchmark.training import determinism
from benchmark.training.loop import TrainConfig, make_state, train_step

# (architecture, d_norm, penalty): the most and least costly kinds of step
# in the figure studies. The gradient penalties need a second backward pass.
CASES = (
    ("resnet19", "spectral", "none"),
    ("resnet19", "none", "gp"),
    ("sndcgan", "spectral", "none"),
    ("sndcgan", "none", "gp"),
)


def config_for(
    architecture: str, d_norm: str, penalty: str, n_disc: int, batch: int
) -> TrainConfig:
    return TrainConfig(
        architecture=architecture,
        resolution=128,
        z_dim=128,
        d_norm=d_norm,
        loss="ns",
        penalty=penalty,
        penalty_weight=1.0 if penalty != "none" else 0.0,
        batch_size=batch,
        steps=10**9,
        n_disc=n_disc,
        lr=2e-4,
        beta1=0.5,
        beta2=0.999,
        checkpoint_every=10**9,
        eval_every=10**9,
    )


class OperationCounter(TorchDispatchMode):
    """Count FLOPs with torch's formulas, without FlopCounterMode's module hooks.

    FlopCounterMode's hooks break the double backward of the gradient
    penalties (torch 2.14 raises in autograd.grad with create_graph).
    """

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=output)
        return output


def measure_step(config: TrainConfig, step: int) -> dict:
    """Time one call of train_step at `step` (after a warm-up) and count its FLOPs."""
    state = make_state(config, 0, torch.device("cpu"))
    batch = config.batch_size
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.random((batch, 3, 128, 128), dtype=np.float32))
    z = torch.rand(batch, 128) * 2 - 1
    train_step(state, config, real, z, step)  # warm-up: oneDNN picks kernels
    counter = OperationCounter()
    started = time.perf_counter()
    with counter:
        train_step(state, config, real, z, step)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "flops": counter.flops}


def inception_flops() -> int:
    """Count the operations of one 299 x 299 Inception v3 forward pass."""
    import torchvision

    with torch.device("meta"):
        network = torchvision.models.inception_v3(
            weights=None, aux_logits=False, init_weights=False
        ).eval()
        image = torch.empty(1, 3, 299, 299)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(image)
    return counter.get_total_flops()


def measure_inception(extractor_path: str, images: int) -> dict:
    """Time the feature pass of `images` generated-size images (128 x 128)."""
    accepted = load_protocol("kurach2019").extractor.sha256
    extractor = load_extractor(extractor_path, accepted, torch.device("cpu"))
    pipeline = FeaturePipeline(
        extractor, image_size=299, batch_size=50, device=torch.device("cpu")
    )
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.random((images, 128, 128, 3), dtype=np.float32) * 255)
    started = time.perf_counter()
    pipeline.extract_all(iter([batch]), total=images, desc="features", progress=False)
    seconds = time.perf_counter() - started
    return {"images": images, "seconds": round(seconds, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument(
        "--inception-images",
        type=int,
        default=50,
        help="images in the timed feature pass",
    )
    parser.add_argument(
        "--cases",
        default=",".join(":".join(case) for case in CASES),
        help="comma-separated architecture:d_norm:penalty triples",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    determinism.enable_deterministic_mode()
    rows = []
    cases = [tuple(case.split(":")) for case in args.cases.split(",")]
    for architecture, d_norm, penalty in cases:
        with_g = measure_step(
            config_for(architecture, d_norm, penalty, 1, args.batch), 1
        )
        d_only = measure_step(
            config_for(architecture, d_norm, penalty, 5, args.batch), 2
        )
        rows.append(
            {
                "architecture": architecture,
                "d_norm": d_norm,
                "penalty": penalty,
                "step_with_g": with_g,
                "step_d_only": d_only,
            }
        )
        if not args.json:
            print(
                f"{architecture:9} {d_norm:8} {penalty:5} with G: "
                f"{with_g['seconds']:7.2f} s, {with_g['flops'] / 1e12:6.3f} TFLOP; "
                f"D only: {d_only['seconds']:7.2f} s, "
                f"{d_only['flops'] / 1e12:6.3f} TFLOP",
                file=sys.stderr,
            )
    result = {
        "batch": args.batch,
        "steps": rows,
        "inception_flops_per_image": inception_flops(),
        "torch_threads": torch.get_num_threads(),
        "environment": environment(torch.device("cpu")),
    }
    extractor = os.environ.get("BENCHMARK_EXTRACTOR")
    if extractor:
        result["inception"] = measure_inception(extractor, args.inception_images)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
