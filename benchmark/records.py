"""Run records and the environment fingerprint stored with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import benchmark
from benchmark.training.determinism import deterministic_flags

RECORD_FORMAT = 1
PACKAGES = (
    "numpy",
    "scipy",
    "h5py",
    "pillow",
    "torch",
    "torchvision",
    "clean-fid",
    "tqdm",
)


def package_versions() -> dict[str, str | None]:
    """Return installed versions of the packages that can move a number."""
    versions: dict[str, str | None] = {"benchmark": benchmark.__version__}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state() -> dict[str, Any]:
    """Return the commit and dirty flag of the checkout holding this package.

    Both are None when the package is not inside a git checkout (an installed
    wheel) or git is missing.
    """
    folder = Path(benchmark.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> dict[str, Any]:
    """Return the device type and name (GPU model, or CPU model and ISA level)."""
    if device.type == "cuda":
        index = (
            device.index if device.index is not None else torch.cuda.current_device()
        )
        return {"type": "cuda", "name": torch.cuda.get_device_name(index)}
    return {
        "type": device.type,
        "name": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Return the fingerprint of everything in the environment that can move a number."""
    cudnn = (
        torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    )
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "device": device_description(device),
        "deterministic": deterministic_flags(),
        "packages": package_versions(),
        "git": git_state(),
    }
