"""ResNet-CIFAR against the compare_gan v2 architecture tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

from benchmark.models import build_models, count_parameters
from benchmark.models.layers import INIT_STDDEV, TRUNCATION, unpool
from benchmark.models.resnet_cifar import ResNetCifarDiscriminator

Z_DIM = 128


def conv_parameters(in_channels: int, out_channels: int, kernel: int = 3) -> int:
    return in_channels * out_channels * kernel * kernel + out_channels


def test_generator_parameter_count():
    """Check G against the table: dense to 4x4x256, three up blocks, BN, conv to 3."""
    dense = Z_DIM * 4 * 4 * 256 + 4 * 4 * 256
    block = 3 * conv_parameters(256, 256) + 2 * (
        2 * 256
    )  # shortcut, conv1, conv2, 2 BN
    expected = dense + 3 * block + 2 * 256 + conv_parameters(256, 3)
    generator, _ = build_models("resnet_cifar", Z_DIM, "none", init_seed=0)
    assert count_parameters(generator) == expected == 5_849_603


def test_discriminator_parameter_count():
    """Check D: four 128-channel blocks of three convs each, then a dense logit."""
    first = 2 * conv_parameters(3, 128) + conv_parameters(128, 128)
    other = 3 * conv_parameters(128, 128)
    expected = first + 3 * other + (128 + 1)
    for d_norm in ("none", "spectral"):
        _, discriminator = build_models("resnet_cifar", Z_DIM, d_norm, init_seed=0)
        assert count_parameters(discriminator) == expected == 1_483_137


def test_discriminator_has_13_weight_layers():
    """Check the 13 weight layers compare_gan counts for resnet_cifar_arch."""
    assert len(ResNetCifarDiscriminator().weight_layers()) == 13


def test_spectral_norm_wraps_every_weight_layer():
    """Check that spectral norm covers all 13 D layers and none of G."""
    generator, discriminator = build_models("resnet_cifar", Z_DIM, "spectral", 0)
    wrapped = [m for m in discriminator.modules() if parametrize.is_parametrized(m)]
    assert len(wrapped) == 13
    assert not any(parametrize.is_parametrized(m) for m in generator.modules())


def test_spectral_norm_bounds_largest_singular_value():
    """Check that each normalised D weight has a top singular value close to 1.

    torch's wrapper runs 15 warm-up power iterations; 5 % covers what one
    further iteration per forward leaves of the estimate's error.
    """
    _, discriminator = build_models("resnet_cifar", Z_DIM, "spectral", 0)
    discriminator.train()
    discriminator(torch.rand(2, 3, 32, 32))
    for layer in ResNetCifarDiscriminator.weight_layers(discriminator):
        matrix = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        sigma = torch.linalg.matrix_norm(matrix, ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_output_shapes_and_ranges():
    """Check that G maps z to [0, 1] images and D returns one logit per image."""
    generator, discriminator = build_models("resnet_cifar", Z_DIM, "spectral", 0)
    z = torch.rand(4, Z_DIM) * 2 - 1
    images = generator(z)
    assert images.shape == (4, 3, 32, 32)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert discriminator(images).shape == (4,)


def test_initialisation_distributions():
    """Check truncated-normal convs, N(0, 0.02) dense layers and zero biases."""
    generator, discriminator = build_models("resnet_cifar", Z_DIM, "none", 0)
    conv_weights = torch.cat(
        [
            m.weight.flatten()
            for m in generator.modules()
            if isinstance(m, torch.nn.Conv2d)
        ]
    )
    assert conv_weights.abs().max() <= TRUNCATION
    # A normal truncated at two standard deviations keeps 0.8796 of its std.
    assert conv_weights.std().item() == pytest.approx(0.8796 * INIT_STDDEV, rel=0.01)
    assert generator.fc.weight.std().item() == pytest.approx(INIT_STDDEV, rel=0.01)
    assert generator.fc.weight.abs().max() > TRUNCATION  # not truncated
    for module in list(generator.modules()) + list(discriminator.modules()):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(module.bias) == 0


def test_build_is_seeded_and_leaves_global_rng_alone():
    """Check same seed, same weights; other seed, other weights; global RNG unused."""
    before = torch.get_rng_state()
    first = build_models("resnet_cifar", Z_DIM, "spectral", 7)
    after = torch.get_rng_state()
    again = build_models("resnet_cifar", Z_DIM, "spectral", 7)
    other = build_models("resnet_cifar", Z_DIM, "spectral", 8)
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
