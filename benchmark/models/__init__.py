"""Generator and discriminator construction from a baseline spec.

Architectures: `resnet_cifar` (32x32), `resnet19` (128x128) and `sndcgan` (any
multiple of 8; 32x32 for CIFAR-10, 128x128 otherwise). D normalisations:
`none`, `batch`, `layer` and `spectral` (SNDCGAN: `none` and `spectral`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from benchmark.models.resnet import resnet19, resnet_cifar
from benchmark.models.sndcgan import sndcgan

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


# Architectures and the image size each one produces.
ARCHITECTURES = {"resnet_cifar": 32, "resnet19": 128, "sndcgan": None}
D_NORMALIZATIONS = ("none", "batch", "layer", "spectral")


def _construct(architecture: str, z_dim: int, d_norm: str, resolution: int):
    norm = "none" if d_norm == "spectral" else d_norm
    expected = ARCHITECTURES[architecture]
    if expected is not None and resolution != expected:
        raise ValueError(
            f"{architecture} produces {expected}x{expected} images, not "
            f"{resolution}x{resolution}"
        )
    if architecture == "resnet_cifar":
        return resnet_cifar(z_dim, norm)
    if architecture == "resnet19":
        return resnet19(z_dim, norm)
    return sndcgan(z_dim, norm, resolution)


def build_models(
    architecture: str, z_dim: int, d_norm: str, init_seed: int, resolution: int
) -> tuple[nn.Module, nn.Module]:
    """Build and initialise G and D; all randomness comes from `init_seed`.

    Weights are drawn from a generator seeded with `init_seed`. Module
    construction (torch's default init, overwritten here) and the spectral-norm
    vectors use torch's global generator, so the whole build runs inside a
    forked RNG state seeded from the same value: the caller's global RNG is
    left untouched.

    Raises:
        ValueError: unknown architecture or normalisation, a resolution the
            architecture does not produce, or a combination compare_gan v2
            does not support.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unsupported architecture {architecture!r}")
    if d_norm not in D_NORMALIZATIONS:
        raise ValueError(f"unsupported discriminator normalization {d_norm!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        generator_net, discriminator_net = _construct(
            architecture, z_dim, d_norm, resolution
        )
        weights_rng = torch.Generator().manual_seed(init_seed)
        generator_net.initialize(weights_rng)
        discriminator_net.initialize(weights_rng)
        if d_norm == "spectral":
            apply_spectral_norm(discriminator_net.weight_layers())
    return generator_net, discriminator_net


def discriminator_weights(discriminator: nn.Module) -> list[torch.Tensor]:
    """Return D's raw weight tensors (no biases), before any spectral norm.

    These are the tensors compare_gan's L2 penalty sums over: the trainable
    `w` and `Matrix` variables, not the normalised weights.
    """
    weights = []
    for layer in discriminator.weight_layers():
        if parametrize.is_parametrized(layer, "weight"):
            weights.append(layer.parametrizations.weight.original)
        else:
            weights.append(layer.weight)
    return weights


def count_parameters(module: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
