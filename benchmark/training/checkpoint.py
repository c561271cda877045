"""Training checkpoints: atomic writes, integrity errors, latest-step lookup.

A checkpoint is one `torch.save` file holding G and D (with batch-norm
statistics and spectral-norm vectors), both optimisers, the step, the global
torch RNG state and a hash of the training configuration. Every other random
stream is derived from the run seed and the step, so nothing else is needed to
resume bit for bit. Beside each checkpoint, `<name>.sha256` contains the
file's SHA-256, which every load checks.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import torch

from benchmark import faults
from benchmark.errors import UserError
from benchmark.fileio import atomic_path, atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
DIGEST_SUFFIX = ".sha256"
CHECKPOINT_PATTERN = re.compile(r"^step-(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    """Return the file name of the checkpoint at `step`."""
    return directory / f"step-{step:09d}.pt"


def _unshared(value: Any) -> Any:
    """Rebuild containers and strings as new objects, leaving tensors alone.

    pickle writes an object seen twice as a back-reference, so the bytes depend
    on which objects happen to be shared: a fresh optimiser shares its `betas`
    tuple and key strings with its twin, one loaded from a checkpoint does not.
    Rebuilding gives every checkpoint the same sharing, hence the same bytes.
    """
    if isinstance(value, dict):
        return {_unshared(key): _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_unshared(item) for item in value)
    if isinstance(value, str):
        return value.encode("utf-8").decode("utf-8")
    return value


class _KeepWriteError:
    """A binary file wrapper that remembers the OSError of a failed write."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def digest_path(path: Path) -> Path:
    """Return the file that contains the SHA-256 of checkpoint `path`."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename).

    The file's SHA-256 goes to `<name>.sha256` before the checkpoint is renamed
    into place, so every checkpoint has its digest. torch.load checks no
    checksum: a flipped byte in a tensor loads without an error, and only the
    digest reveals it.
    """
    state = _unshared(dict(state, format=CHECKPOINT_FORMAT))
    with atomic_path(path) as temporary:
        # Through a handle, torch names the archive's inner folder "archive";
        # given a path it would use the temporary file's random name, and two
        # identical runs would write different bytes.
        with open(temporary, "wb") as handle:
            writer = _KeepWriteError(handle)
            try:
                torch.save(state, writer)
            except RuntimeError:
                # torch reports a failed write (a full disk) as a RuntimeError
                # about stream positions. The write's own error names the
                # reason, and atomic_path turns it into a message with the file.
                if writer.error is not None:
                    raise writer.error from None
                raise
        atomic_write_bytes(digest_path(path), f"{sha256_file(temporary)}\n".encode())
        faults.reach("checkpoint-write")


def _check_digest(path: Path) -> None:
    """Compare a checkpoint with its recorded SHA-256, when one was recorded."""
    recorded_path = digest_path(path)
    if not recorded_path.is_file():
        logger.warning(
            "checkpoint %s has no %s file, so its bytes cannot be checked",
            path,
            DIGEST_SUFFIX,
        )
        return
    recorded = recorded_path.read_text(encoding="ascii", errors="replace").strip()
    found = sha256_file(path)
    if found != recorded:
        raise UserError(
            f"corrupt checkpoint {str(path)!r}: its SHA-256 is {found[:16]}..., "
            f"{recorded_path.name} records {recorded[:16]}...; delete both files: "
            "a run then resumes from its best checkpoint if one is left, else "
            "from step 0"
        )


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and its digest file."""
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint, turning a corrupt or truncated file into a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {str(path)!r} is not a file")
    _check_digest(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        pickle.UnpicklingError,
    ) as error:
        detail = " ".join(str(error).split())[:120] or "no detail"
        raise UserError(
            f"corrupt checkpoint {str(path)!r} ({type(error).__name__}: {detail}); "
            "delete it: a run then resumes from its best checkpoint if one is "
            "left, else from step 0"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"checkpoint {str(path)!r} has an unknown format; expected format "
            f"{CHECKPOINT_FORMAT} written by this version of the harness"
        )
    return state


def load_generator(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild G from a checkpoint; return it with a description for records.

    Raises:
        UserError: the file is not a checkpoint of this harness, or its
            configuration or weights do not fit together.
    """
    from benchmark.models import build_models

    saved = load_checkpoint(path)
    config = saved.get("config")
    required = ("architecture", "resolution", "z_dim", "d_norm", "batch_size")
    if not isinstance(config, dict) or any(key not in config for key in required):
        raise UserError(
            f"checkpoint {str(path)!r} records no usable model config (needs "
            f"{', '.join(required)}); use a checkpoint written by `benchmark run`"
        )
    if not isinstance(saved.get("generator"), dict):
        raise UserError(f"checkpoint {str(path)!r} holds no generator weights")
    try:
        generator, _ = build_models(
            config["architecture"],
            config["z_dim"],
            config["d_norm"],
            init_seed=0,
            resolution=config["resolution"],
        )
        generator.load_state_dict(saved["generator"])
    except (ValueError, RuntimeError, TypeError) as error:
        detail = " ".join(str(error).split())[:160]
        raise UserError(
            f"checkpoint {str(path)!r}: the generator weights do not fit the recorded "
            f"config ({detail})"
        ) from error
    description = {
        "checkpoint": str(path),
        "checkpoint_sha256": sha256_file(path),
        "step": saved.get("step"),
        "run_seed": saved.get("run_seed"),
        "config_digest": saved.get("config_digest"),
        "config": config,
        "generator_sha256": state_digest(saved["generator"]),
    }
    return generator, description


def remove_temporary_files(directory: Path) -> list[Path]:
    """Delete what a process killed while writing a checkpoint left behind.

    That is temporary files (`atomic_path` names them `.step-<step>.pt.<random>
    .tmp`; each is as large as a checkpoint) and digest files whose checkpoint
    was never renamed into place. Call this only while holding the run
    folder's lock, because a live writer would lose its files.
    """
    if not directory.is_dir():
        return []
    removed = sorted(directory.glob(".step-*.pt*.tmp"))
    # A digest file is written before its checkpoint is renamed into place.
    removed += [
        path
        for path in sorted(directory.glob(f"step-*.pt{DIGEST_SUFFIX}"))
        if not path.with_name(path.name.removesuffix(DIGEST_SUFFIX)).exists()
    ]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


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
