"""ResNet-CIFAR (32x32), as `resnet_cifar_generator/discriminator` in compare_gan v2.

G: z -> linear -> 4x4x256 -> three up blocks 256 -> 256 -> BN -> ReLU ->
3x3 conv to 3 channels -> sigmoid, so images are in [0, 1].
D: four blocks of 128 channels (the first two downsample) -> ReLU -> global
mean pool -> linear -> one logit. 4 x 3 convs + 1 dense = 13 weight layers.
D sees images in [0, 1] without rescaling.
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
G_CHANNELS = 256
D_CHANNELS = 128


class ResNetCifarGenerator(nn.Module):
    """Map z [N, z_dim] to images [N, 3, 32, 32] in [0, 1]."""

    def __init__(self, z_dim: int, colors: int = 3):
        super().__init__()
        self.z_dim = z_dim
        self.fc = nn.Linear(z_dim, SEED_SIZE * SEED_SIZE * G_CHANNELS)
        self.blocks = nn.ModuleList(
            ResNetBlock(G_CHANNELS, G_CHANNELS, "up", "batch") for _ in range(3)
        )
        self.final_norm = batch_norm(G_CHANNELS)
        self.final_conv = conv3x3(G_CHANNELS, colors)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fc(z)
        # compare_gan reshapes the dense output to NHWC [N, 4, 4, 256]; the same
        # numbers in NCHW need the channel axis moved, so that a TensorFlow
        # checkpoint's dense weights would map one to one.
        out = out.view(-1, SEED_SIZE, SEED_SIZE, G_CHANNELS).permute(0, 3, 1, 2)
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


class ResNetCifarDiscriminator(nn.Module):
    """Map images [N, 3, 32, 32] in [0, 1] to logits [N]."""

    def __init__(self, colors: int = 3):
        super().__init__()
        scales = ("down", "down", "none", "none")
        in_channels = (colors, D_CHANNELS, D_CHANNELS, D_CHANNELS)
        self.blocks = nn.ModuleList(
            ResNetBlock(channels, D_CHANNELS, scale, "none")
            for channels, scale in zip(in_channels, scales)
        )
        self.fc = nn.Linear(D_CHANNELS, 1)

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
        """Return the 13 layers whose weights the L2 penalty and spectral norm see."""
        layers: list[nn.Module] = []
        for block in self.blocks:
            layers.extend(block.convs())
        layers.append(self.fc)
        return layers
