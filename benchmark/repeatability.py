"""Train short runs in separate processes and compare their bits.

`scripts/gpu_determinism_check.sh` runs this on a GPU. For each baseline it
trains four short runs, each in a fresh process: two in deterministic mode
and two in fast mode, interleaved. It then reports whether each pair ended
with identical bits (checkpoint file, G and D weights, and G's outputs on
fixed latents), and the time per step of each mode.

Modes:

* deterministic: `benchmark.training.determinism.enable_deterministic_mode`,
  exactly what `benchmark run` uses (deterministic algorithms, cuDNN
  deterministic without autotuning, TF32 off, `CUBLAS_WORKSPACE_CONFIG`).
* fast: deterministic algorithms off, cuDNN autotuning on, no cuBLAS
  workspace setting. TF32 stays off as in deterministic mode, so the timing
  difference comes from the algorithm choice, not from lower precision.

Runs train on seeded random images at the baseline's resolution (no prepared
store is needed) through the harness's own training loop, with the
baseline's settings except for steps and, optionally, batch size. The time
per step is the wall time of the whole run divided by its steps, so it
includes the first steps' warm-up (cuDNN autotuning in fast mode).

Usage: `python -m benchmark.repeatability check --device cuda` (see --help).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import UserError
from benchmark.fileio import atomic_write_json

MODES = ("deterministic", "fast")
DEFAULT_BASELINES = ("resnetcifar-ns-sn", "sndcgan-ns-sn-celebahq", "resnet19-ns-sn")
# Images in the seeded random training set; batches cycle through them.
SYNTHETIC_IMAGES = 256
SYNTHETIC_SEED = 20190101
# Fixed latents at which G's outputs are hashed after training.
SAMPLE_COUNT = 16
SAMPLE_SEED = 42
EXIT_DIFFERENT = 1
EXIT_USAGE = 2


def set_mode(mode: str) -> dict[str, object]:
    """Switch torch to one of `MODES`; return the flags as set."""
    import torch

    from benchmark.training import determinism

    if mode == "deterministic":
        return determinism.enable_deterministic_mode()
    if mode != "fast":
        raise UserError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return determinism.deterministic_flags()


def train_once(
    baseline: str,
    seed: int,
    steps: int,
    batch_size: int | None,
    device_name: str,
    mode: str,
    out_dir: Path,
) -> dict[str, Any]:
    """Train one short run in this process and return digests and timing.

    Call `set_mode` first, in a fresh process: cuBLAS reads its workspace
    setting once, at its first call.
    """
    import torch

    from benchmark.records import environment
    from benchmark.run import resolve_config
    from benchmark.specs import load_baseline, load_dataset
    from benchmark.training.checkpoint import list_checkpoints, state_digest
    from benchmark.training.loop import train

    device = torch.device(device_name)
    spec = load_baseline(baseline)
    overrides = {"steps": steps, "checkpoint_every": steps, "eval_every": steps}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    config = resolve_config(spec, overrides, load_dataset(spec.dataset).resolution)
    shape = (SYNTHETIC_IMAGES, config.resolution, config.resolution, 3)
    images = np.random.default_rng(SYNTHETIC_SEED).integers(
        0, 256, size=shape, dtype=np.uint8
    )

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    state = train(
        config, seed, torch.from_numpy(images), out_dir, device, progress=False
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started

    generator = state.generator.eval()
    latents = np.random.RandomState(SAMPLE_SEED).uniform(
        -1.0, 1.0, size=(SAMPLE_COUNT, config.z_dim)
    )
    with torch.no_grad():
        samples = generator(torch.from_numpy(latents.astype(np.float32)).to(device))
    samples_bytes = samples.detach().cpu().contiguous().numpy().tobytes()
    checkpoint = list_checkpoints(out_dir / "checkpoints")[-1][1]
    return {
        "baseline": baseline,
        "seed": seed,
        "steps": steps,
        "batch_size": config.batch_size,
        "mode": mode,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "generator_sha256": state_digest(state.generator.state_dict()),
        "discriminator_sha256": state_digest(state.discriminator.state_dict()),
        "samples_sha256": hashlib.sha256(samples_bytes).hexdigest(),
        "seconds": round(seconds, 4),
        "seconds_per_step": seconds / steps,
        "environment": environment(device),
    }


DIGESTS = (
    "checkpoint_sha256",
    "generator_sha256",
    "discriminator_sha256",
    "samples_sha256",
)


def compare_pair(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Return the digest names that differ between two runs' results."""
    return [name for name in DIGESTS if first.get(name) != second.get(name)]


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Group run results by baseline and mode, then compare pairs and timings.

    Returns:
        `baselines`: per baseline and mode, `identical` (bool), the differing
        digests, `errors` and the mean seconds per step. Each baseline also
        gets `slowdown`, deterministic over fast time per step. `verdict`:
        "PASS" when every deterministic pair is identical, else "FAIL".
    """
    table: dict[str, dict[str, Any]] = {}
    for result in results:
        modes = table.setdefault(result["baseline"], {})
        modes.setdefault(result["mode"], []).append(result)
    report: dict[str, Any] = {}
    passed = bool(table)
    for baseline, modes in table.items():
        entry: dict[str, Any] = {}
        for mode, runs in modes.items():
            errors = [run["error"] for run in runs if "error" in run]
            finished = [run for run in runs if "error" not in run]
            differing = (
                compare_pair(finished[0], finished[1]) if len(finished) == 2 else None
            )
            entry[mode] = {
                "runs": len(runs),
                "errors": errors,
                "identical": differing == [],
                "differing": differing,
                "seconds_per_step": (
                    sum(run["seconds_per_step"] for run in finished) / len(finished)
                    if finished
                    else None
                ),
            }
        deterministic = entry.get("deterministic", {})
        fast = entry.get("fast", {})
        if deterministic.get("seconds_per_step") and fast.get("seconds_per_step"):
            entry["slowdown"] = (
                deterministic["seconds_per_step"] / fast["seconds_per_step"]
            )
        passed = passed and deterministic.get("identical") is True
        report[baseline] = entry
    return {"verdict": "PASS" if passed else "FAIL", "baselines": report}


def format_report(summary: dict[str, Any], device: str) -> str:
    """Return the report as printed text, ending with the verdict line."""
    lines = [f"bitwise repeatability on {device}, two processes per mode:"]
    for baseline, entry in summary["baselines"].items():
        for mode in MODES:
            if mode not in entry:
                continue
            row = entry[mode]
            if row["errors"]:
                state = "ERROR: " + row["errors"][0]
            elif row["identical"]:
                state = "identical bits"
            else:
                state = "DIFFERENT: " + ", ".join(row["differing"] or ["incomplete"])
            timing = (
                f"{row['seconds_per_step'] * 1000:.1f} ms/step"
                if row["seconds_per_step"]
                else "no timing"
            )
            lines.append(f"  {baseline:<26} {mode:<13} {timing:>14}  {state}")
        if "slowdown" in entry:
            lines.append(
                f"  {baseline:<26} deterministic mode costs "
                f"{(entry['slowdown'] - 1) * 100:+.1f} % time per step"
            )
    if summary["verdict"] == "PASS":
        lines.append("VERDICT: PASS (deterministic mode gave identical bits)")
    else:
        lines.append(
            "VERDICT: FAIL (a deterministic pair differs, raised an error or is "
            "missing)"
        )
    return "\n".join(lines)


def _run_child(arguments: list[str], mode: str, out_dir: Path) -> dict[str, Any]:
    """Run one `train` in a fresh process; return its result or an error entry."""
    env = dict(os.environ)
    if mode == "fast":
        env.pop("CUBLAS_WORKSPACE_CONFIG", None)
    result_path = out_dir / "result.json"
    command = [
        sys.executable,
        "-m",
        "benchmark.repeatability",
        "train",
        *arguments,
        "--mode",
        mode,
        "--out",
        str(out_dir),
        "--result",
        str(result_path),
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0 or not result_path.is_file():
        lines = (finished.stderr or finished.stdout or "no output").strip().splitlines()
        return {"error": f"exit {finished.returncode}: {lines[-1] if lines else ''}"}
    return json.loads(result_path.read_text())


def check(
    baselines: list[str],
    steps: int,
    batch_size: int | None,
    device: str,
    seed: int,
    work_dir: Path,
) -> dict[str, Any]:
    """Train every baseline twice per mode in fresh processes and summarise."""
    results = []
    for baseline in baselines:
        arguments = [
            "--baseline",
            baseline,
            "--seed",
            str(seed),
            "--steps",
            str(steps),
            "--device",
            device,
        ]
        if batch_size is not None:
            arguments += ["--batch-size", str(batch_size)]
        for repeat in ("a", "b"):
            for mode in MODES:
                out_dir = work_dir / f"{baseline}-{mode}-{repeat}"
                result = _run_child(arguments, mode, out_dir)
                result.setdefault("baseline", baseline)
                result.setdefault("mode", mode)
                results.append(result)
                shown = result.get("error") or f"{result['seconds']:.1f} s"
                print(f"{baseline} {mode} run {repeat}: {shown}", file=sys.stderr)
    summary = summarise(results)
    summary["runs"] = results
    return summary


def _require_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"no CUDA device: torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda}) sees no GPU, and this check measures GPU "
            "determinism; run it on a machine with an NVIDIA GPU, or pass "
            "--device cpu to check the CPU instead"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.repeatability",
        description="Train short runs in fresh processes and compare their bits.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "train"):
        sub = commands.add_parser(name)
        sub.add_argument("--steps", type=int, default=100, help="training steps")
        sub.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="override the baseline's batch size",
        )
        sub.add_argument("--device", default="cuda", help="torch device")
        sub.add_argument("--seed", type=int, default=0, help="run seed")

    check_parser = commands.choices["check"]
    check_parser.add_argument(
        "--baselines",
        nargs="+",
        default=list(DEFAULT_BASELINES),
        help="baselines to train (default: one per architecture)",
    )
    check_parser.add_argument(
        "--work-dir", type=Path, default=None, help="folder for the runs (temporary)"
    )
    check_parser.add_argument(
        "--json", type=Path, default=None, help="also write the report as JSON here"
    )

    train_parser = commands.choices["train"]
    train_parser.add_argument("--baseline", required=True)
    train_parser.add_argument("--mode", choices=MODES, required=True)
    train_parser.add_argument("--out", type=Path, required=True)
    train_parser.add_argument("--result", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `check` or one `train`; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.steps < 1:
            raise UserError(f"--steps must be at least 1, got {args.steps}")
        _require_device(args.device)
        if args.command == "train":
            flags = set_mode(args.mode)
            result = train_once(
                args.baseline,
                args.seed,
                args.steps,
                args.batch_size,
                args.device,
                args.mode,
                args.out,
            )
            result["flags"] = flags
            atomic_write_json(args.result, result)
            return 0
        with tempfile.TemporaryDirectory(prefix="repeatability-") as scratch:
            work_dir = args.work_dir or Path(scratch)
            summary = check(
                args.baselines,
                args.steps,
                args.batch_size,
                args.device,
                args.seed,
                work_dir,
            )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json is not None:
        atomic_write_json(args.json, summary)
    print(format_report(summary, args.device))
    return 0 if summary["verdict"] == "PASS" else EXIT_DIFFERENT


if __name__ == "__main__":
    sys.exit(main())
