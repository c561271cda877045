"""Training checkpoints: atomic writes, integrity errors, latest-step lookup.

A checkpoint is one `torch.save` file holding G and D (with batch-norm
statistics and spectral-norm vectors), both optimisers, the step, the global
torch RNG state and a hash of the training configuration. Every other random
stream is derived from the run seed and the step, so nothing else is needed to
resume bit for bit.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import UserError
from benchmark.fileio import atomic_path

CHECKPOINT_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(r"^step-(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    """Return the file name of the checkpoint at `step`."""
    return directory / f"step-{step:09d}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename)."""
    state = dict(state, format=CHECKPOINT_FORMAT)
    with atomic_path(path) as temporary:
        # Through a handle, torch names the archive's inner folder "archive";
        # given a path it would use the temporary file's random name, and two
        # identical runs would write different bytes.
        with open(temporary, "wb") as handle:
            torch.save(state, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint, turning a corrupt or truncated file into a one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {str(path)!r}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise UserError(
            f"corrupt checkpoint {str(path)!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); "
            "delete it to resume from the previous checkpoint or start over"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"checkpoint {str(path)!r} has an unknown format; expected format "
            f"{CHECKPOINT_FORMAT} written by this version of the harness"
        )
    return state


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Return (step, path) of every checkpoint in `directory`, by step."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """Return SHA-256 over a state dict's names, dtypes, shapes and bytes.

    Independent of how the file was serialised, so two runs can be compared
    bit for bit from their records alone.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
