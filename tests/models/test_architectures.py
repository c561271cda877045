"""The three architecture families against compare_gan v2's tables and layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from benchmark.models import build_models, count_parameters, discriminator_weights
from benchmark.models.layers import (
    INIT_STDDEV,
    LAYER_NORM_EPS,
    TRUNCATION,
    layer_norm,
    unpool,
)

Z_DIM = 128


def conv(in_channels: int, out_channels: int, kernel: int = 3) -> int:
    return in_channels * out_channels * kernel * kernel + out_channels


def norm(channels: int) -> int:
    return 2 * channels  # scale and offset


def resnet_g_parameters(seed_channels: int, blocks: list[tuple[int, int]]) -> int:
    total = Z_DIM * 16 * seed_channels + 16 * seed_channels
    for in_ch, out_ch in blocks:
        total += 2 * conv(in_ch, out_ch) + conv(out_ch, out_ch)
        total += norm(in_ch) + norm(out_ch)
    last = blocks[-1][1]
    return total + norm(last) + conv(last, 3)


def resnet_d_parameters(blocks: list[tuple[int, int]], normalized: bool) -> int:
    total = 0
    for in_ch, out_ch in blocks:
        total += 2 * conv(in_ch, out_ch) + conv(out_ch, out_ch)
        if normalized:
            total += norm(in_ch) + norm(out_ch)
    return total + blocks[-1][1] + 1


def sndcgan_g_parameters(size: int) -> int:
    seed = (size // 8) ** 2 * 512
    deconvs = conv(512, 256, 4) + conv(256, 128, 4) + conv(128, 64, 4)
    norms = norm(seed) + norm(256) + norm(128) + norm(64)
    return Z_DIM * seed + seed + norms + deconvs + conv(64, 3)


def sndcgan_d_parameters(size: int) -> int:
    convs = (
        conv(3, 64)
        + conv(64, 128, 4)
        + conv(128, 128)
        + conv(128, 256, 4)
        + conv(256, 256)
        + conv(256, 512, 4)
        + conv(512, 512)
    )
    return convs + (size // 8) ** 2 * 512 + 1


CIFAR_G = [(256, 256)] * 3
CIFAR_D = [(3, 128), (128, 128), (128, 128), (128, 128)]
RESNET19_G = [(512, 512), (512, 256), (256, 256), (256, 128), (128, 64)]
RESNET19_D = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512)]

FAMILIES = [
    ("resnet_cifar", 32, resnet_g_parameters(256, CIFAR_G), CIFAR_D, 13),
    ("resnet19", 128, resnet_g_parameters(512, RESNET19_G), RESNET19_D, 19),
    ("sndcgan", 32, sndcgan_g_parameters(32), None, 8),
    ("sndcgan", 128, sndcgan_g_parameters(128), None, 8),
]
SHAPES = [(family[0], family[1]) for family in FAMILIES]


@pytest.mark.parametrize("architecture, size, g_count, d_blocks, layers", FAMILIES)
def test_parameter_counts(architecture, size, g_count, d_blocks, layers):
    """Check G and D parameter counts against the architecture tables."""
    if d_blocks is None:
        norms = ("none", "spectral")
    else:
        norms = ("none", "batch", "layer", "spectral")
    for d_norm in norms:
        generator, discriminator = build_models(architecture, Z_DIM, d_norm, 0, size)
        assert count_parameters(generator) == g_count
        if d_blocks is None:
            expected = sndcgan_d_parameters(size)
        else:
            expected = resnet_d_parameters(d_blocks, d_norm in ("batch", "layer"))
        assert count_parameters(discriminator) == expected
        assert len(discriminator.weight_layers()) == layers


def test_known_totals():
    """Check the totals once as literal numbers, so a formula slip shows up."""
    cifar = build_models("resnet_cifar", Z_DIM, "none", 0, 32)
    resnet19 = build_models("resnet19", Z_DIM, "none", 0, 128)
    sndcgan = build_models("sndcgan", Z_DIM, "none", 0, 32)
    assert [count_parameters(m) for m in cifar] == [5_849_603, 1_483_137]
    assert [count_parameters(m) for m in resnet19] == [13_786_115, 15_086_529]
    assert [count_parameters(m) for m in sndcgan] == [3_828_739, 5_860_865]


@pytest.mark.parametrize("architecture, size", SHAPES)
def test_output_shapes_and_ranges(architecture, size):
    """Check that G maps z to [0, 1] images and D returns one logit per image."""
    generator, discriminator = build_models(architecture, Z_DIM, "spectral", 0, size)
    images = generator(torch.rand(2, Z_DIM) * 2 - 1)
    assert images.shape == (2, 3, size, size)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert discriminator(images).shape == (2,)


@pytest.mark.parametrize("architecture, size", SHAPES)
def test_spectral_norm_wraps_d_and_bounds_sigma(architecture, size):
    """Check SN on every D weight layer, none in G, and sigma close to 1 by SVD.

    torch's wrapper runs 15 warm-up power iterations; 5 % covers what one
    more iteration per forward leaves of the estimate's error.
    """
    generator, discriminator = build_models(architecture, Z_DIM, "spectral", 0, size)
    layers = discriminator.weight_layers()
    assert all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    assert not any(parametrize.is_parametrized(m) for m in generator.modules())
    discriminator.train()
    discriminator(torch.rand(2, 3, size, size))
    for layer in layers:
        matrix = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        sigma = torch.linalg.matrix_norm(matrix, ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_sndcgan_rejects_batch_and_layer_norm():
    """Check that SNDCGAN's D accepts only spectral norm or none, as in v2."""
    for d_norm in ("batch", "layer"):
        with pytest.raises(ValueError, match="SNDCGAN"):
            build_models("sndcgan", Z_DIM, d_norm, 0, 32)


def test_resolution_must_match_architecture():
    """Check that ResNet19 refuses 32x32 and ResNet-CIFAR refuses 128x128."""
    with pytest.raises(ValueError, match="128x128"):
        build_models("resnet19", Z_DIM, "none", 0, 32)
    with pytest.raises(ValueError, match="32x32"):
        build_models("resnet_cifar", Z_DIM, "none", 0, 128)


def test_layer_norm_matches_direct_formula():
    """Check layer norm against (x - mean) / sqrt(var + eps) over C, H, W,
    with a scale and an offset per channel."""
    layer = layer_norm(4).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        layer.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    x = torch.randn(
        3, 4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    variance = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(variance + LAYER_NORM_EPS)
    expected = expected * layer.weight.view(1, 4, 1, 1) + layer.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


def test_batch_norm_matches_direct_formula():
    """Check G's batch norm: batch statistics in training, moving averages with
    decay 0.9, and eps 1e-5, against hand formulas."""
    generator, _ = build_models("resnet_cifar", Z_DIM, "none", 0, 32)
    layer = generator.final_norm.double().train()
    x = torch.randn(
        4, 256, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    mean = x.mean(dim=(0, 2, 3))
    variance = x.var(dim=(0, 2, 3), unbiased=False)
    scaled = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(
        variance.view(1, -1, 1, 1) + 1e-5
    )
    torch.testing.assert_close(layer(x), scaled, rtol=0, atol=1e-10)
    # PyTorch keeps the unbiased variance in its moving average (TensorFlow the
    # biased one; the difference is a factor n / (n - 1)).
    count = 4 * 3 * 3
    unbiased = variance * count / (count - 1)
    torch.testing.assert_close(layer.running_mean, 0.1 * mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        layer.running_var, 0.9 + 0.1 * unbiased, rtol=0, atol=1e-12
    )


def test_sndcgan_sizes_double_through_the_generator():
    """Check SAME-padding equivalents: each transposed conv doubles the size."""
    generator, _ = build_models("sndcgan", Z_DIM, "none", 0, 128)
    out = generator.fc(torch.zeros(1, Z_DIM)).view(1, 16, 16, 512).permute(0, 3, 1, 2)
    sizes = []
    for deconv in generator.deconvs:
        out = deconv(out)
        sizes.append(out.shape[-1])
    assert sizes == [32, 64, 128]


def test_initialisation_distributions():
    """Check truncated-normal ResNet convs, N(0, 0.02) SNDCGAN convs, zero biases."""
    generator, discriminator = build_models("resnet_cifar", Z_DIM, "none", 0, 32)
    resnet_convs = [m for m in generator.modules() if isinstance(m, torch.nn.Conv2d)]
    conv_weights = torch.cat([m.weight.flatten() for m in resnet_convs])
    assert conv_weights.abs().max() <= TRUNCATION
    # A normal truncated at two standard deviations keeps 0.8796 of its std.
    assert conv_weights.std().item() == pytest.approx(0.8796 * INIT_STDDEV, rel=0.01)
    assert generator.fc.weight.std().item() == pytest.approx(INIT_STDDEV, rel=0.01)
    _, sndcgan_d = build_models("sndcgan", Z_DIM, "none", 0, 32)
    sndcgan_weights = torch.cat([c.weight.flatten() for c in sndcgan_d.convs])
    assert sndcgan_weights.abs().max() > TRUNCATION  # not truncated
    assert sndcgan_weights.std().item() == pytest.approx(INIT_STDDEV, rel=0.01)
    for module in list(generator.modules()) + list(discriminator.modules()):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(module.bias) == 0


def test_l2_weights_are_raw_kernels():
    """Check that the L2 penalty sees the raw kernels behind spectral norm."""
    _, discriminator = build_models("sndcgan", Z_DIM, "spectral", 0, 32)
    weights = discriminator_weights(discriminator)
    assert len(weights) == 8
    assert weights[0] is discriminator.convs[0].parametrizations.weight.original


def test_build_is_seeded_and_leaves_global_rng_alone():
    """Check same seed, same weights; other seed, other weights; global RNG unused."""
    before = torch.get_rng_state()
    first = build_models("resnet_cifar", Z_DIM, "spectral", 7, 32)
    after = torch.get_rng_state()
    again = build_models("resnet_cifar", Z_DIM, "spectral", 7, 32)
    other = build_models("resnet_cifar", Z_DIM, "spectral", 8, 32)
    assert torch.equal(before, after)
    for a, b in zip(first[1].state_dict().values(), again[1].state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first[0].fc.weight, other[0].fc.weight)


def tensorflow_unpool_nhwc(value: np.ndarray) -> np.ndarray:
    """compare_gan's unpool, transcribed in NumPy: reshape and concatenate zeros."""
    batch, height, width, channels = value.shape
    out = value.reshape(-1, width, channels)
    for axis in (2, 1):
        out = np.concatenate([out, np.zeros_like(out)], axis=axis)
    return out.reshape(-1, 2 * height, 2 * width, channels)


def test_unpool_matches_tensorflow_layout():
    """Check zero insertion against a NumPy transcription of compare_gan's op."""
    value = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) + 1
    expected = tensorflow_unpool_nhwc(value)
    ours = unpool(torch.from_numpy(value).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(ours.numpy(), expected)
    assert expected[0, 0, 0, 0] == value[0, 0, 0, 0]
    assert expected[0, 1, 1, 0] == 0  # not nearest-neighbour upsampling


def test_spectral_norm_matches_compare_gan_power_iteration():
    """Check that torch's parametrisation computes compare_gan's sigma.

    compare_gan reshapes a kernel to w = W^T (fan-in x C_out), keeps u in the
    fan-in space and iterates v = n(w^T u), u = n(w v), sigma = u^T w v. torch
    keeps `_v` in the same fan-in space and iterates u = n(W v), v = n(W^T u),
    sigma = u . W v, the same numbers under other names. Started from the same
    vector, one step gives the same sigma and the same stored vector.
    """
    from benchmark.models import apply_spectral_norm

    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Conv2d(8, 16, 3).double()
    with torch.no_grad():
        layer.weight.copy_(
            torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64)
        )
    raw = layer.weight.detach().clone()
    apply_spectral_norm([layer])
    start = torch.randn(8 * 9, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        layer.parametrizations.weight[0]._v.copy_(start / start.norm())

    w = raw.reshape(16, -1).T  # compare_gan's layout, up to a fan-in permutation
    v = torch.nn.functional.normalize(w.T @ start, dim=0)
    u = torch.nn.functional.normalize(w @ v, dim=0)
    sigma_compare_gan = u @ w @ v

    layer.train()
    normalized = layer.weight
    sigma_torch = (raw / normalized).flatten()[0]
    torch.testing.assert_close(sigma_torch, sigma_compare_gan, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        layer.parametrizations.weight[0]._v, u, rtol=1e-12, atol=1e-14
    )
