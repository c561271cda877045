"""Sample grids from a fixed z, so checkpoints and runs can be compared by eye."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from benchmark.fileio import atomic_path

GRID_SAMPLES = 64


def sample_grid(
    generator: nn.Module,
    z_dim: int,
    seed: int,
    device: torch.device,
    count: int = GRID_SAMPLES,
) -> np.ndarray:
    """Return `count` samples of G in eval mode as one uint8 grid image [H, W, 3].

    z ~ U(-1, 1) comes from NumPy's RandomState(seed), the protocol's evaluation
    latents, so the grid shows the first images the evaluation sees. G's mode
    is restored afterwards and no global RNG is used.
    """
    z = np.random.RandomState(seed).uniform(-1.0, 1.0, size=(count, z_dim))
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            images = generator(torch.from_numpy(z.astype(np.float32)).to(device))
    finally:
        generator.train(was_training)
    # Rounding here is for display only; evaluation feeds unrounded floats.
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    pixels = pixels.cpu().numpy()
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width, channels = pixels.shape[1:]
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        grid[
            row * height : (row + 1) * height, column * width : (column + 1) * width
        ] = image
    return grid


def save_sample_grid(
    generator: nn.Module, z_dim: int, seed: int, device: torch.device, path: Path
) -> None:
    """Write `sample_grid` as a PNG file, atomically."""
    grid = sample_grid(generator, z_dim, seed, device)
    with atomic_path(path) as temporary:
        Image.fromarray(grid).save(temporary, format="PNG")
