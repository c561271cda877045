"""D penalties of compare_gan v2 `gans_with_penalty.py`, added to D's loss times lambda.

- `gp` (WGAN-GP): x_hat = x + alpha (G(z) - x) with alpha ~ U[0, 1) per sample;
  slopes = sqrt(1e-4 + sum over H, W, C of (dD(x_hat)/dx_hat)^2);
  penalty = mean (slopes - 1)^2.
- `dragan`: sigma = standard deviation of the whole real batch (one scalar,
  the population moment); x_tilde = clip(x + sigma (U[0, 1) - 0.5), 0, 1) with
  the noise drawn per pixel; the same slopes and penalty on D(x_tilde).
- `l2`: the mean over D's weight tensors (dense and conv kernels, no biases,
  before spectral normalisation) of half the squared Frobenius norm, i.e.
  `tf.nn.l2_loss` averaged, not summed, over layers.

D runs in training mode on x_hat and x_tilde, as in compare_gan. Noise comes
from a CPU generator the caller seeds per step, so it is the same on any
device.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.models import discriminator_weights

# compare_gan adds this inside the square root so the slope is differentiable at 0.
SLOPE_EPSILON = 1e-4
PENALTIES = ("none", "gp", "dragan", "l2")


def _gradient_penalty(discriminator: nn.Module, points: torch.Tensor) -> torch.Tensor:
    points = points.detach().requires_grad_(True)
    logits = discriminator(points)
    (gradients,) = torch.autograd.grad(logits.sum(), points, create_graph=True)
    slopes = torch.sqrt(SLOPE_EPSILON + gradients.square().sum(dim=(1, 2, 3)))
    return (slopes - 1.0).square().mean()


def wgan_gp_penalty(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    rng: torch.Generator,
) -> torch.Tensor:
    """Return the WGAN-GP penalty on interpolates of real [B, C, H, W] and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real.device)
    return _gradient_penalty(discriminator, real + alpha * (fake - real))


def dragan_penalty(
    discriminator: nn.Module, real: torch.Tensor, rng: torch.Generator
) -> torch.Tensor:
    """Return the DRAGAN penalty on perturbed real images [B, C, H, W] in [0, 1]."""
    sigma = real.std(unbiased=False)
    noise = torch.rand(real.shape, generator=rng).to(real.device)
    perturbed = torch.clamp(real + sigma * (noise - 0.5), 0.0, 1.0)
    return _gradient_penalty(discriminator, perturbed)


def l2_penalty(discriminator: nn.Module) -> torch.Tensor:
    """Return the mean over D's weight tensors of half their squared norm."""
    halves = [
        0.5 * weight.square().sum() for weight in discriminator_weights(discriminator)
    ]
    return torch.stack(halves).mean()


def penalty(
    name: str,
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    rng: torch.Generator,
) -> torch.Tensor | None:
    """Return the named penalty, or None for `none`."""
    if name == "none":
        return None
    if name == "gp":
        return wgan_gp_penalty(discriminator, real, fake, rng)
    if name == "dragan":
        return dragan_penalty(discriminator, real, rng)
    if name == "l2":
        return l2_penalty(discriminator)
    raise ValueError(f"unknown penalty {name!r}")
