"""Every named baseline: valid spec, one training step, same seed same bits.

Baselines at 128x128 (ResNet19, SNDCGAN on CelebA-HQ and LSUN) take tens of
seconds per step on a CPU, so their training check is marked slow.
"""

from __future__ import annotations

import pytest
import torch

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
