"""SNDCGAN (Miyato et al. 2018) as compare_gan v2 `dcgan_architecture.py` builds it.

G (output size H, s = H / 8): z -> dense -> s*s*512 -> batch norm on the flat
vector -> ReLU -> reshape to s x s x 512 -> 4x4 stride-2 transposed conv to
256 -> BN -> ReLU -> to 128 -> BN -> ReLU -> to 64 -> BN -> ReLU -> 3x3
stride-1 transposed conv to 3 -> tanh -> (x + 1) / 2, so images are in [0, 1].
Batch norm: decay 0.9, epsilon 2e-5.

D: x * 2 - 1 -> conv 3x3/1 64 -> conv 4x4/2 128 -> conv 3x3/1 128 -> conv 4x4/2
256 -> conv 3x3/1 256 -> conv 4x4/2 512 -> conv 3x3/1 512, each followed by
LeakyReLU 0.1 -> flatten -> dense -> one logit. 7 convs + 1 dense = 8 weight
layers. compare_gan v2 allows only spectral norm or nothing in this D.

TensorFlow's SAME padding of a 4x4 stride-2 conv on an even input pads one
pixel on each side, which is `padding=1` here; the transposed convs use the
matching padding, so every size doubles exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.models.layers import BATCH_NORM_MOMENTUM, init_linear, init_normal

SNDCGAN_BATCH_NORM_EPS = 2e-5
LEAK = 0.1


def _batch_norm(features: int, dims: int) -> nn.Module:
    kind = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return kind(features, eps=SNDCGAN_BATCH_NORM_EPS, momentum=BATCH_NORM_MOMENTUM)


class SNDCGANGenerator(nn.Module):
    """Map z [N, z_dim] to images [N, 3, size, size] in [0, 1]."""

    def __init__(self, z_dim: int, size: int, colors: int = 3):
        super().__init__()
        if size % 8:
            raise ValueError(f"SNDCGAN output size must be a multiple of 8, got {size}")
        self.z_dim = z_dim
        self.seed = size // 8
        self.fc = nn.Linear(z_dim, self.seed * self.seed * 512)
        self.fc_norm = _batch_norm(self.seed * self.seed * 512, dims=1)
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)
            for in_ch, out_ch in ((512, 256), (256, 128), (128, 64))
        )
        self.norms = nn.ModuleList(_batch_norm(c, dims=2) for c in (256, 128, 64))
        self.final = nn.ConvTranspose2d(64, colors, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc_norm(self.fc(z)))
        # compare_gan reshapes to NHWC; moving the channel axis keeps the values.
        out = out.view(-1, self.seed, self.seed, 512).permute(0, 3, 1, 2)
        for deconv, norm in zip(self.deconvs, self.norms):
            out = F.relu(norm(deconv(out)))
        return (torch.tanh(self.final(out)) + 1.0) / 2.0

    def initialize(self, generator: torch.Generator) -> None:
        """Draw all weights from `generator` in creation order (all N(0, 0.02))."""
        init_linear(self.fc, generator)
        for deconv in self.deconvs:
            init_normal(deconv, generator)
        init_normal(self.final, generator)


class SNDCGANDiscriminator(nn.Module):
    """Map images [N, 3, size, size] in [0, 1] to logits [N]."""

    # (out channels, kernel, stride) of the seven convs.
    LAYOUT = ((64, 3, 1), (128, 4, 2), (128, 3, 1), (256, 4, 2), (256, 3, 1),
              (512, 4, 2), (512, 3, 1))  # fmt: skip

    def __init__(self, size: int, colors: int = 3):
        super().__init__()
        convs = []
        in_channels = colors
        for out_channels, kernel, stride in self.LAYOUT:
            convs.append(
                nn.Conv2d(in_channels, out_channels, kernel, stride, padding=1)
            )
            in_channels = out_channels
        self.convs = nn.ModuleList(convs)
        final_size = size // 8
        self.fc = nn.Linear(final_size * final_size * 512, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * 2.0 - 1.0
        for conv in self.convs:
            out = F.leaky_relu(conv(out), LEAK)
        # Flatten in NHWC order, as compare_gan's reshape of an NHWC map.
        out = out.permute(0, 2, 3, 1).flatten(1)
        return self.fc(out).squeeze(1)

    def initialize(self, generator: torch.Generator) -> None:
        """Draw all weights from `generator` in creation order.

        compare_gan passes `tf.random_normal_initializer` to these convs, so
        they start from N(0, 0.02), not the truncated normal of `ops.conv2d`.
        """
        for conv in self.convs:
            init_normal(conv, generator)
        init_linear(self.fc, generator)

    def weight_layers(self) -> list[nn.Module]:
        """Return the 8 layers whose weights the L2 penalty and spectral norm see."""
        return [*self.convs, self.fc]


def sndcgan(
    z_dim: int, d_norm: str, size: int
) -> tuple[SNDCGANGenerator, SNDCGANDiscriminator]:
    """Return SNDCGAN's G and D for `size` x `size` images.

    Raises:
        ValueError: `d_norm` is batch or layer norm, which compare_gan v2's
            SNDCGAN D does not support.
    """
    if d_norm != "none":
        raise ValueError(
            f"SNDCGAN's D supports spectral norm or none (compare_gan v2), not {d_norm!r}"
        )
    return SNDCGANGenerator(z_dim, size), SNDCGANDiscriminator(size)
