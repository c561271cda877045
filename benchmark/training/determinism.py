"""Seeds for every random stream, and the switches of deterministic mode.

Seed rule: the seed of stream `name` (and optional index, such as a step or an
epoch) for run seed `s` is the first 8 bytes, big-endian, of
SHA-256("gan-benchmark:{s}:{name}[:{index}]"), with the top bit cleared so it
fits torch's and NumPy's seed range. Streams are independent of one another,
and a stream indexed by step or epoch needs no saved state to resume.
"""

from __future__ import annotations

import hashlib
import os

import torch

# Streams drawn from the run seed. Adding a stream never changes the others.
STREAM_INIT = "init"  # G and D weights, spectral-norm vectors
STREAM_DATA = "data"  # order of training images, one permutation per epoch
STREAM_LATENT = "latent"  # z for each training step
STREAM_PENALTY = "penalty"  # interpolation and perturbation noise per step
STREAM_GLOBAL = "global"  # torch's global generator, for library code that uses it
STREAMS = (STREAM_INIT, STREAM_DATA, STREAM_LATENT, STREAM_PENALTY, STREAM_GLOBAL)

# cuBLAS needs a fixed workspace to be deterministic; this is one of the two
# settings NVIDIA documents for it.
CUBLAS_WORKSPACE = ":4096:8"


def derive_seed(run_seed: int, stream: str, index: int | None = None) -> int:
    """Return the 63-bit seed of one stream (and index) for a run seed."""
    label = f"gan-benchmark:{run_seed}:{stream}"
    if index is not None:
        label += f":{index}"
    digest = hashlib.sha256(label.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def stream_seeds(run_seed: int) -> dict[str, int]:
    """Return the base seed of every stream, for the run record."""
    return {stream: derive_seed(run_seed, stream) for stream in STREAMS}


def enable_deterministic_mode() -> dict[str, object]:
    """Switch torch to deterministic kernels and return the flags as set.

    Sets `CUBLAS_WORKSPACE_CONFIG` (it must be set before the first cuBLAS
    call, so call this before any CUDA work), makes torch raise on any op
    without a deterministic implementation, pins cuDNN to deterministic
    algorithms without autotuning, and turns TF32 off for matmul and
    convolutions.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return deterministic_flags()


def deterministic_flags() -> dict[str, object]:
    """Return the current determinism-related settings, for the run record."""
    return {
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch_num_threads": torch.get_num_threads(),
    }
