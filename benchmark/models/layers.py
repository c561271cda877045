"""Layers shared by the compare_gan architectures, in PyTorch.

Conventions follow compare_gan v2 (`compare_gan/src/gans/ops.py`,
`resnet_architecture.py` and `dcgan_architecture.py`):

- conv kernels start from a normal distribution truncated at two standard
  deviations (TensorFlow's `truncated_normal_initializer`, stddev 0.02),
  except SNDCGAN's D convs and all transposed convs, which draw from
  N(0, 0.02); dense weights from N(0, 0.02); all biases from zero;
- the ResNet batch norm uses decay 0.9 (PyTorch momentum 0.1) and epsilon
  1e-5, SNDCGAN's G batch norm decay 0.9 and epsilon 2e-5;
- layer norm (D only) normalises each sample over C, H and W, with a scale
  and an offset per channel and epsilon 1e-12, as `tf.contrib.layers.layer_norm`;
- upsampling is "unpool": each value goes to the top-left corner of a 2x2
  block and the other three positions are zero (not nearest neighbour);
- downsampling is a 2x2 average pool with stride 2.

Images are NCHW tensors here; compare_gan is NHWC, which changes nothing in
the arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INIT_STDDEV = 0.02
# TensorFlow's truncated normal redraws values beyond two standard deviations.
TRUNCATION = 2.0 * INIT_STDDEV
BATCH_NORM_EPS = 1e-5
BATCH_NORM_MOMENTUM = 0.1  # TensorFlow decay 0.9
# tf.contrib.layers.layer_norm hard-codes this variance epsilon.
LAYER_NORM_EPS = 1e-12
D_NORMALIZATIONS = ("none", "batch", "layer")


def init_conv(module: nn.Conv2d, generator: torch.Generator) -> None:
    """Initialise a conv as compare_gan's `ops.conv2d`: truncated normal, zero bias."""
    with torch.no_grad():
        nn.init.trunc_normal_(
            module.weight,
            mean=0.0,
            std=INIT_STDDEV,
            a=-TRUNCATION,
            b=TRUNCATION,
            generator=generator,
        )
        nn.init.zeros_(module.bias)


def init_normal(module: nn.Module, generator: torch.Generator) -> None:
    """Initialise a layer's weight from N(0, 0.02) and its bias to zero."""
    with torch.no_grad():
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STDDEV, generator=generator)
        nn.init.zeros_(module.bias)


def init_linear(module: nn.Linear, generator: torch.Generator) -> None:
    """Initialise a dense layer as compare_gan's `ops.linear`: N(0, 0.02), zero bias."""
    with torch.no_grad():
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STDDEV, generator=generator)
        nn.init.zeros_(module.bias)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Return a 3x3 stride-1 conv with SAME padding."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def unpool(x: torch.Tensor) -> torch.Tensor:
    """Double H and W by zero insertion: out[..., 2i, 2j] = x[..., i, j], zeros elsewhere.

    Args:
        x: [N, C, H, W] tensor.

    Returns:
        [N, C, 2H, 2W] tensor.
    """
    batch, channels, height, width = x.shape
    out = x.new_zeros(batch, channels, 2 * height, 2 * width)
    out[:, :, ::2, ::2] = x
    return out


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve H and W with a 2x2 average pool, stride 2 (SAME padding on even sizes)."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Return compare_gan's ResNet batch norm (decay 0.9, eps 1e-5, scale and offset)."""
    return nn.BatchNorm2d(channels, eps=BATCH_NORM_EPS, momentum=BATCH_NORM_MOMENTUM)


def layer_norm(channels: int) -> nn.GroupNorm:
    """Return TF contrib's layer norm on NCHW maps: one group over C, H and W.

    GroupNorm with a single group normalises each sample over all its values
    and applies a scale and an offset per channel, as TensorFlow's layer norm
    with `begin_params_axis=-1` on NHWC input does.
    """
    return nn.GroupNorm(1, channels, eps=LAYER_NORM_EPS)


def d_norm_layer(normalization: str, channels: int) -> nn.Module:
    """Return the normalisation layer a D block uses before each ReLU."""
    if normalization == "batch":
        return batch_norm(channels)
    if normalization == "layer":
        return layer_norm(channels)
    if normalization == "none":
        return nn.Identity()
    raise ValueError(f"invalid block normalization {normalization!r}")


class ResNetBlock(nn.Module):
    """compare_gan's residual block, for G ("up") and D ("down" or "none").

    Main path: [norm] -> ReLU -> conv1 -> [norm] -> ReLU -> conv2, where G
    unpools before conv1 and D average-pools after conv2. The shortcut is
    always a 3x3 conv, even when the channel counts agree: G unpools before
    it, D pools after it.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        scale: "up" (G), "down" or "none" (D).
        normalization: "batch" (every G block; D with batch norm), "layer"
            (D with layer norm) or "none".
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: str,
        normalization: str,
    ):
        super().__init__()
        if scale not in ("up", "down", "none"):
            raise ValueError(f"invalid block scale {scale!r}")
        self.scale = scale
        self.shortcut = conv3x3(in_channels, out_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm1 = d_norm_layer(normalization, in_channels)
        self.norm2 = d_norm_layer(normalization, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == "up":
            shortcut = self.shortcut(unpool(x))
        elif self.scale == "down":
            shortcut = downsample(self.shortcut(x))
        else:
            shortcut = self.shortcut(x)

        out = F.relu(self.norm1(x))
        if self.scale == "up":
            out = unpool(out)
        out = self.conv1(out)
        out = F.relu(self.norm2(out))
        out = self.conv2(out)
        if self.scale == "down":
            out = downsample(out)
        return out + shortcut

    def convs(self) -> list[nn.Conv2d]:
        """Return the block's convs in compare_gan's creation order."""
        return [self.shortcut, self.conv1, self.conv2]
