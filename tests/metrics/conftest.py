"""Synthetic TorchScript extractors for the metric tests.

The synthetic networks mimic the two layouts of the real Inception files
without their weights: `layers` plus `output` as in NVIDIA's
`inception-2015-12-05.pt`, or a single module returning pool_3-sized features.
They average the input into a 4x4 grid and project it linearly, so their
features still depend on the resized pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.fileio import sha256_file

FEATURE_DIM = 2048
LOGIT_CLASSES = 1008


class _PoolTrunk(nn.Module):
    """Map (N, 3, H, W) images to (N, 2048, 1, 1) features, like pool_3."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.project = nn.Linear(3 * 4 * 4, FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).flatten(1)
        # TorchScript cannot read module globals, hence the literal 2048.
        return torch.relu(self.project(pooled)).reshape(-1, 2048, 1, 1)


class _NvidiaLayout(nn.Module):
    """The submodules and forward signature of NVIDIA's TorchScript Inception."""

    def __init__(self, logit_classes: int = LOGIT_CLASSES):
        super().__init__()
        self.layers = _PoolTrunk()
        self.output = nn.Linear(FEATURE_DIM, logit_classes)
        with torch.no_grad():
            self.output.bias.fill_(0.5)

    def forward(
        self,
        img: torch.Tensor,
        return_features: bool = False,
        use_fp16: bool = False,
        no_output_bias: bool = False,
    ) -> torch.Tensor:
        x = (img - 128.0) / 128.0
        features = self.layers(x).reshape(-1, 2048)
        if return_features:
            return features
        if no_output_bias:
            return nn.functional.linear(features, self.output.weight)
        return self.output(features)


class _Pool3Only(nn.Module):
    """A module whose forward returns (N, 2048) features, like the wheel's file."""

    def __init__(self):
        super().__init__()
        self.net = _PoolTrunk()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(-1, 2048)


def _save_scripted(module: nn.Module, path: Path) -> tuple[Path, str]:
    torch.manual_seed(0)
    for parameter in module.parameters():
        if parameter.ndim == 2:
            nn.init.normal_(parameter, std=0.05)
    with warnings.catch_warnings():
        # torch 2.x marks torch.jit.script as deprecated; the real files are
        # TorchScript, so the synthetic ones must be too.
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.script(module.eval()).save(str(path))
    return path, sha256_file(path)


@pytest.fixture
def synthetic_nvidia_extractor(tmp_path: Path) -> tuple[Path, str]:
    """A TorchScript file with NVIDIA's layout and its SHA-256."""
    return _save_scripted(_NvidiaLayout(), tmp_path / "synthetic-nvidia.pt")


@pytest.fixture
def synthetic_pool3_extractor(tmp_path: Path) -> tuple[Path, str]:
    """A TorchScript file with the pool_3-only layout and its SHA-256."""
    return _save_scripted(_Pool3Only(), tmp_path / "synthetic-pool3.pt")


@pytest.fixture
def synthetic_bad_output_extractor(tmp_path: Path) -> tuple[Path, str]:
    """A TorchScript file with NVIDIA's layout but 10 output classes."""
    module = _NvidiaLayout(logit_classes=10)
    return _save_scripted(module, tmp_path / "synthetic-bad-output.pt")
