"""Every named baseline: valid spec, one training step, same seed same bits.

Baselines at 128x128 (ResNet19, SNDCGAN on CelebA-HQ and LSUN) take tens of
seconds per step on a CPU, so their training check is marked slow.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from synthetic import write_synthetic_store

from benchmark.cli import main
from benchmark.fileio import read_json
from benchmark.run import resolve_config
from benchmark.specs import available, load_baseline, load_dataset, load_protocol
from benchmark.training.checkpoint import state_digest
from benchmark.training.loop import make_state, sample_latents, train_step

CPU = torch.device("cpu")
SMALL = {"batch_size": 2, "steps": 1}


def baseline_cases():
    cases = []
    for name in available("baselines"):
        spec = load_baseline(name)
        resolution = load_dataset(spec.dataset).resolution
        marks = [pytest.mark.slow] if resolution > 32 else []
        cases.append(pytest.param(name, id=name, marks=marks))
    return cases


def test_every_baseline_spec_is_complete():
    """Check names, datasets, protocols and published references of all specs."""
    names = available("baselines")
    assert len(names) == 30
    for name in names:
        spec = load_baseline(name)
        assert name.startswith(spec.architecture.replace("_", ""))
        load_dataset(spec.dataset)
        assert spec.published, f"{name} has no published FID"
        for result in spec.published:
            assert spec.dataset in load_protocol(result.protocol).datasets
            assert "compare_gan v2" in result.source


def one_step(name: str, seed: int):
    spec = load_baseline(name)
    config = resolve_config(spec, SMALL, load_dataset(spec.dataset).resolution)
    state = make_state(config, seed, CPU)
    generator = torch.Generator().manual_seed(seed)
    real = torch.rand(2, 3, config.resolution, config.resolution, generator=generator)
    z = sample_latents(seed, 1, 2, config.z_dim)
    result = train_step(state, config, real, z, step=1)
    images = state.generator(z)
    return state, result, images


@pytest.mark.parametrize("name", baseline_cases())
def test_baseline_trains_and_repeats(name):
    """Check one step runs, same seed gives the same bits, another seed does not,
    and G's images stay in [0, 1]."""
    first, result, images = one_step(name, seed=0)
    again, _, _ = one_step(name, seed=0)
    other, _, _ = one_step(name, seed=1)
    assert torch.isfinite(torch.tensor(result.d_loss))
    assert result.g_loss is not None
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    for part in ("generator", "discriminator"):
        digest = state_digest(getattr(first, part).state_dict())
        assert digest == state_digest(getattr(again, part).state_dict())
        assert digest != state_digest(getattr(other, part).state_dict())


TINY_PROTOCOL = """
name = "tiny-every-dataset"
version = 1
description = "kurach2019's pipeline on 4 reals vs 4 fakes per dataset, for tests only."
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
"""


@pytest.fixture(scope="module")
def every_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """A data root with small synthetic stores of the three datasets, and a protocol."""
    root = tmp_path_factory.mktemp("data")
    protocol = root.parent / "tiny-every-dataset.toml"
    text = TINY_PROTOCOL
    for dataset in ("cifar10", "lsun", "celebahq"):
        write_synthetic_store(root, dataset, train_count=8, test_count=4)
        text += f'\n[datasets.{dataset}]\nreal_split = "test"\n'
        text += "real_count = 4\nfake_count = 4\n"
    protocol.write_text(text)
    return root, protocol


def command_cases():
    """List one baseline per dataset and architecture; the others differ only in values.

    Every spec trains a step through the same code in
    `test_baseline_trains_and_repeats`; this test covers the command's path
    (store, protocol, records) once per dataset and architecture. Only the
    32x32 SNDCGAN case runs by default (ResNet-CIFAR's is in test_cli.py).
    """
    cases = {}
    for name in available("baselines"):
        spec = load_baseline(name)
        cases.setdefault((spec.dataset, spec.architecture), name)
    return [
        pytest.param(
            name,
            id=name,
            marks=[] if pair == ("cifar10", "sndcgan") else [pytest.mark.slow],
        )
        for pair, name in sorted(cases.items())
    ]


@pytest.mark.parametrize("name", command_cases())
def test_run_baseline_per_family(name, every_dataset, extractor_file, tmp_path):
    """Check that `benchmark run baseline NAME` trains, evaluates and records."""
    root, protocol = every_dataset
    out = tmp_path / "run"
    status = main(
        [
            "run", "baseline", name, "--root", str(root), "--protocol", str(protocol),
            "--steps", "1", "--batch-size", "2", "--seeds", "1", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--extractor", str(extractor_file),
            "--device", "cpu", "--no-progress", "--json",
        ]
    )  # fmt: skip
    assert status == 0
    summary = read_json(out / "summary.json")
    assert summary["baseline"] == name
    assert summary["named_baseline"] is False
    assert math.isfinite(summary["median_fid_final"])
