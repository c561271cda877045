#!/usr/bin/env bash
# Check that deterministic mode gives identical bits on a GPU, and what it costs.
#
# Trains each baseline four times for a few steps, each run in a fresh
# process: twice in deterministic mode (what `benchmark run` uses) and twice
# in fast mode (cuDNN autotuning, deterministic algorithms off). Prints, per
# baseline and mode, whether the pair ended with identical bits (checkpoint
# file, G and D weights, G's outputs on fixed latents) and the time per step,
# then a VERDICT line. Exit status: 0 PASS, 1 FAIL, 2 no GPU or bad arguments.
#
# Usage: scripts/gpu_determinism_check.sh [--steps N] [--batch-size B]
#            [--baselines NAME ...] [--json report.json] [--device cuda:1]
# Defaults: 100 steps at each baseline's own batch size, on cuda, for
# resnetcifar-ns-sn, sndcgan-ns-sn-celebahq and resnet19-ns-sn.
# Set PYTHON to the interpreter of the environment the harness is installed in.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"

if ! "$python" -c 'import benchmark' 2>/dev/null; then
    echo "error: $python cannot import the harness; install it (pip install -e .) or set PYTHON" >&2
    exit 2
fi
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: no CUDA device visible to torch ($("$python" -c 'import torch; print(torch.__version__)')); this check needs an NVIDIA GPU" >&2
    exit 2
fi
"$python" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())'
exec "$python" -m benchmark.repeatability check --device cuda "$@"
