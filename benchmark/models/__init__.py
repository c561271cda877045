"""Generator and discriminator construction from a baseline spec."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

from benchmark.models.resnet_cifar import ResNetCifarDiscriminator, ResNetCifarGenerator

# compare_gan's power iteration normalises with tf.nn.l2_normalize(eps=1e-12),
# which bounds the squared norm; torch bounds the norm itself, so the same
# floor is sqrt(1e-12) here.
SPECTRAL_NORM_EPS = 1e-6


def apply_spectral_norm(layers: list[nn.Module]) -> None:
    """Wrap each layer's weight in torch's spectral-norm parametrisation.

    One power iteration per training forward, as compare_gan v2. torch keeps
    the persistent vector `_v` in the fan-in space, where compare_gan keeps its
    `u_var`, and runs the same update (v <- W^T u / |.|, u <- W v / |.|, in
    torch's names). torch also warms its vectors up with 15 iterations when
    the wrapper is created, which compare_gan does not: only the first few
    steps' estimate of sigma differs.
    """
    for layer in layers:
        parametrizations.spectral_norm(
            layer, n_power_iterations=1, eps=SPECTRAL_NORM_EPS
        )


def build_models(
    architecture: str, z_dim: int, d_norm: str, init_seed: int
) -> tuple[nn.Module, nn.Module]:
    """Build and initialise G and D; all randomness comes from `init_seed`.

    Weights are drawn from a generator seeded with `init_seed`. Module
    construction (torch's default init, overwritten here) and the spectral-norm
    vectors use torch's global generator, so the whole build runs inside a
    forked RNG state seeded from the same value: the caller's global RNG is
    left untouched.
    """
    if architecture != "resnet_cifar":
        raise ValueError(f"unsupported architecture {architecture!r}")
    if d_norm not in ("none", "spectral"):
        raise ValueError(f"unsupported discriminator normalization {d_norm!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        generator_net = ResNetCifarGenerator(z_dim)
        discriminator_net = ResNetCifarDiscriminator()
        weights_rng = torch.Generator().manual_seed(init_seed)
        generator_net.initialize(weights_rng)
        discriminator_net.initialize(weights_rng)
        if d_norm == "spectral":
            apply_spectral_norm(discriminator_net.weight_layers())
    return generator_net, discriminator_net


def count_parameters(module: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
