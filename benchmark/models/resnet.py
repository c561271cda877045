"""ResNet generators and discriminators of compare_gan v2.

`resnet_architecture.py` in compare_gan v2 defines both families used here:

ResNet-CIFAR (`resnet_cifar_arch`, 32x32)
    G: z -> dense -> 4x4x256 -> three up blocks 256 -> 256 -> BN -> ReLU ->
    3x3 conv to 3 channels -> sigmoid.
    D: four blocks of 128 channels (the first two downsample) -> ReLU ->
    global mean pool -> dense -> one logit. 4 x 3 convs + 1 dense = 13 layers.

ResNet19 (`resnet5_arch`, 128x128)
    G: z -> dense -> 4x4x512 -> five up blocks with (in, out) channels (512, 512),
    (512, 256), (256, 256), (256, 128), (128, 64) -> BN -> ReLU -> 3x3 conv to
    3 channels -> sigmoid.
    D: six down blocks 3 -> 64 -> 128 -> 256 -> 256 -> 512 -> 512 -> ReLU ->
    global mean pool -> dense -> one logit. 6 x 3 convs + 1 dense = 19 layers,
    hence the name.

G blocks always use batch norm. D blocks use batch norm, layer norm or
nothing; spectral norm is applied on top by `benchmark.models.build_models`.
G outputs images in [0, 1] and D takes them without rescaling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.layers import (
    ResNetBlock,
    batch_norm,
    conv3x3,
    init_conv,
    init_linear,
)

SEED_SIZE = 4


class ResNetGenerator(nn.Module):
    """Map z [N, z_dim] to images [N, 3, H, W] in [0, 1].

    Args:
        z_dim: size of the latent vector.
        channels: (in, out) channels of each up block; the dense layer maps z
            to a 4x4 map with the first block's input channels.
    """

    def __init__(self, z_dim: int, channels: list[tuple[int, int]], colors: int = 3):
        super().__init__()
        self.z_dim = z_dim
        self.seed_channels = channels[0][0]
        self.fc = nn.Linear(z_dim, SEED_SIZE * SEED_SIZE * self.seed_channels)
        self.blocks = nn.ModuleList(
            ResNetBlock(in_channels, out_channels, "up", "batch")
            for in_channels, out_channels in channels
        )
        last = channels[-1][1]
        self.final_norm = batch_norm(last)
        self.final_conv = conv3x3(last, colors)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fc(z)
        # compare_gan reshapes the dense output to NHWC [N, 4, 4, C]; moving the
        # channel axis keeps the same numbers in the same places in NCHW.
        out = out.view(-1, SEED_SIZE, SEED_SIZE, self.seed_channels)
        out = out.permute(0, 3, 1, 2)
        for block in self.blocks:
            out = block(out)
        out = F.relu(self.final_norm(out))
        return torch.sigmoid(self.final_conv(out))

    def initialize(self, generator: torch.Generator) -> None:
        """Draw all weights from `generator` in creation order."""
        init_linear(self.fc, generator)
        for block in self.blocks:
            for conv in block.convs():
                init_conv(conv, generator)
        init_conv(self.final_conv, generator)


class ResNetDiscriminator(nn.Module):
    """Map images [N, 3, H, W] in [0, 1] to logits [N].

    Args:
        blocks: (in channels, out channels, scale) of each block, scale
            "down" or "none".
        normalization: "none", "batch" or "layer" inside every block.
    """

    def __init__(self, blocks: list[tuple[int, int, str]], normalization: str):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResNetBlock(in_channels, out_channels, scale, normalization)
            for in_channels, out_channels, scale in blocks
        )
        self.fc = nn.Linear(blocks[-1][1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.blocks:
            out = block(out)
        out = F.relu(out).mean(dim=(2, 3))
        return self.fc(out).squeeze(1)

    def initialize(self, generator: torch.Generator) -> None:
        """Draw all weights from `generator` in creation order."""
        for block in self.blocks:
            for conv in block.convs():
                init_conv(conv, generator)
        init_linear(self.fc, generator)

    def weight_layers(self) -> list[nn.Module]:
        """Return the layers whose weights the L2 penalty and spectral norm see."""
        layers: list[nn.Module] = []
        for block in self.blocks:
            layers.extend(block.convs())
        layers.append(self.fc)
        return layers


def resnet_cifar(
    z_dim: int, d_norm: str
) -> tuple[ResNetGenerator, ResNetDiscriminator]:
    """Return ResNet-CIFAR's G and D (32x32)."""
    generator = ResNetGenerator(z_dim, [(256, 256)] * 3)
    discriminator = ResNetDiscriminator(
        [(3, 128, "down"), (128, 128, "down"), (128, 128, "none"), (128, 128, "none")],
        d_norm,
    )
    return generator, discriminator


def resnet19(z_dim: int, d_norm: str) -> tuple[ResNetGenerator, ResNetDiscriminator]:
    """Return ResNet19's G and D (128x128)."""
    generator = ResNetGenerator(
        z_dim, [(512, 512), (512, 256), (256, 256), (256, 128), (128, 64)]
    )
    channels = [3, 64, 128, 256, 256, 512, 512]
    discriminator = ResNetDiscriminator(
        [(channels[i], channels[i + 1], "down") for i in range(6)], d_norm
    )
    return generator, discriminator
