"""Losses and penalties against hand-computed values and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.training import losses
from benchmark.training.penalties import (
    SLOPE_EPSILON,
    dragan_penalty,
    l2_penalty,
    wgan_gp_penalty,
)

# Logits chosen so that every term has a closed form.
REAL = torch.tensor([math.log(3.0), 0.0])  # sigmoid 3/4 and 1/2
FAKE = torch.tensor([-math.log(3.0), 2.0])  # sigmoid 1/4 and 0.8808


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "name, d_expected, g_expected",
    [
        (
            "ns",
            (softplus(-math.log(3)) + softplus(0)) / 2
            + (softplus(-math.log(3)) + softplus(2)) / 2,
            (softplus(math.log(3)) + softplus(-2)) / 2,
        ),
        (
            "mm",
            (softplus(-math.log(3)) + softplus(0)) / 2
            + (softplus(-math.log(3)) + softplus(2)) / 2,
            -(softplus(-math.log(3)) + softplus(2)) / 2,
        ),
        (
            "wgan",
            -(math.log(3) + 0) / 2 + (-math.log(3) + 2) / 2,
            -(-math.log(3) + 2) / 2,
        ),
        (
            "ls",
            0.5
            * (
                ((0.75 - 1) ** 2 + (0.5 - 1) ** 2) / 2 + (0.25**2 + sigmoid(2) ** 2) / 2
            ),
            0.5 * ((0.25 - 1) ** 2 + (sigmoid(2) - 1) ** 2) / 2,
        ),
        (
            "hinge",
            (max(0, 1 - math.log(3)) + 1) / 2 + (max(0, 1 - math.log(3)) + 3) / 2,
            -(-math.log(3) + 2) / 2,
        ),
    ],
)
def test_loss_hand_values(name, d_expected, g_expected):
    """Check each loss against its formula evaluated by hand on two logits."""
    d_loss = losses.DISCRIMINATOR_LOSSES[name](REAL, FAKE).item()
    g_loss = losses.GENERATOR_LOSSES[name](FAKE).item()
    assert d_loss == pytest.approx(d_expected, rel=1e-6)
    assert g_loss == pytest.approx(g_expected, rel=1e-6)


class LinearCritic(nn.Module):
    """D(x) = sum(w * x): its input gradient is w everywhere."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(dim=(1, 2, 3))


def test_gradient_penalty_hand_value():
    """Check GP with a linear critic: slopes = sqrt(1e-4 + |w|^2) wherever x_hat is."""
    weight = torch.full((1, 2, 2, 2), 0.5, dtype=torch.float64)
    critic = LinearCritic(weight)
    real = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    fake = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    expected = (math.sqrt(SLOPE_EPSILON + 8 * 0.25) - 1.0) ** 2
    value = wgan_gp_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value = dragan_penalty(critic, real, torch.Generator().manual_seed(0))
    assert value.item() == pytest.approx(expected, rel=1e-12)


class RecordingCritic(nn.Module):
    """Records its inputs and returns their sum."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x.square().sum(dim=(1, 2, 3))


def test_gp_interpolates_per_sample():
    """Check x_hat = x + alpha (G(z) - x) with one alpha per sample in [0, 1)."""
    critic = RecordingCritic()
    real = torch.zeros(4, 1, 2, 2)
    fake = torch.ones(4, 1, 2, 2)
    wgan_gp_penalty(critic, real, fake, torch.Generator().manual_seed(3))
    (points,) = critic.inputs
    alpha = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(points, alpha.expand(4, 1, 2, 2))
    assert len(set(points[:, 0, 0, 0].tolist())) == 4


def test_dragan_perturbation_and_clip():
    """Check x_tilde = clip(x + std(x) (U - 0.5), 0, 1) with the batch's scalar std."""
    critic = RecordingCritic()
    real = torch.tensor([0.0, 1.0, 0.2, 0.8]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    dragan_penalty(critic, real, torch.Generator().manual_seed(5))
    (points,) = critic.inputs
    sigma = real.std(unbiased=False)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(5))
    expected = torch.clamp(real + sigma * (noise - 0.5), 0.0, 1.0)
    torch.testing.assert_close(points, expected)
    assert points.min() >= 0.0
    assert points.max() <= 1.0
    assert (points - real).abs().max() <= sigma / 2 + 1e-7


class TwoLayerCritic(nn.Module):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1).double()
        self.fc = nn.Linear(2 * 4 * 4, 1).double()
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1)).squeeze(1)

    def weight_layers(self) -> list[nn.Module]:
        return [self.conv, self.fc]


@pytest.mark.parametrize("which", ["gp", "dragan"])
def test_penalty_gradients_match_finite_differences(which):
    """Check the penalties' gradients w.r.t. D's weights with gradcheck (float64)."""
    critic = TwoLayerCritic()
    real = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    fake = torch.rand(3, 1, 4, 4, dtype=torch.float64)

    def as_function(conv_weight: torch.Tensor) -> torch.Tensor:
        def with_weight(x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(
                critic, {"conv.weight": conv_weight}, (x,)
            )

        rng = torch.Generator().manual_seed(11)
        if which == "gp":
            return wgan_gp_penalty(with_weight, real, fake, rng)
        return dragan_penalty(with_weight, real, rng)

    weight = critic.conv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(as_function, (weight,), eps=1e-6, atol=1e-6)


def test_l2_penalty_hand_value():
    """Check the mean over weight tensors of half the squared norm, no biases."""
    critic = TwoLayerCritic()
    expected = (
        0.5 * critic.conv.weight.square().sum() + 0.5 * critic.fc.weight.square().sum()
    ) / 2
    assert l2_penalty(critic).item() == pytest.approx(expected.item(), rel=1e-12)
