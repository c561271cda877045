"""The GPU determinism check: the parts that run without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import repeatability

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_determinism_check.sh"


def result(mode: str, digest: str = "a", seconds: float = 0.1, **extra) -> dict:
    entry = {
        "baseline": "resnetcifar-ns-sn",
        "mode": mode,
        "seconds_per_step": seconds,
        **{name: digest for name in repeatability.DIGESTS},
    }
    entry.update(extra)
    return entry


def test_identical_pairs_pass_with_slowdown():
    """Check the verdict and the time ratio of deterministic to fast mode."""
    summary = repeatability.summarise(
        [
            result("deterministic", seconds=0.3),
            result("deterministic", seconds=0.3),
            result("fast", "b", seconds=0.1),
            result("fast", "c", seconds=0.1),
        ]
    )
    entry = summary["baselines"]["resnetcifar-ns-sn"]
    assert summary["verdict"] == "PASS"
    assert entry["deterministic"]["identical"] is True
    assert entry["fast"]["identical"] is False
    assert entry["slowdown"] == pytest.approx(3.0)
    text = repeatability.format_report(summary, "cuda")
    assert text.splitlines()[-1].startswith("VERDICT: PASS")
    assert "+200.0 % time per step" in text


def test_differing_deterministic_pair_fails():
    """Check that one differing digest in deterministic mode fails the check."""
    second = result("deterministic")
    second["samples_sha256"] = "z"
    summary = repeatability.summarise([result("deterministic"), second])
    row = summary["baselines"]["resnetcifar-ns-sn"]["deterministic"]
    assert summary["verdict"] == "FAIL"
    assert row["differing"] == ["samples_sha256"]
    text = repeatability.format_report(summary, "cuda")
    assert "DIFFERENT: samples_sha256" in text
    assert text.splitlines()[-1].startswith("VERDICT: FAIL")


def test_error_in_deterministic_run_fails():
    """Check that a run that raised (an op without a deterministic kernel) fails."""
    error = {"baseline": "resnetcifar-ns-sn", "mode": "deterministic"}
    error["error"] = "exit 1: RuntimeError: adaptive_avg_pool2d_backward_cuda"
    summary = repeatability.summarise([result("deterministic"), error])
    assert summary["verdict"] == "FAIL"
    assert "ERROR: exit 1" in repeatability.format_report(summary, "cuda")


def test_empty_summary_fails():
    """Check that no runs at all is not a pass."""
    assert repeatability.summarise([])["verdict"] == "FAIL"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_script_without_gpu_fails_clearly(tmp_path):
    """Check exit status 2 and a one-line reason on a machine without CUDA."""
    env = {**os.environ, "PYTHON": sys.executable}
    finished = subprocess.run(
        [str(SCRIPT), "--steps", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: no CUDA device")
    assert "NVIDIA GPU" in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_module_without_gpu_fails_clearly(capsys):
    """Check the same refusal from the Python entry point."""
    assert repeatability.main(["check", "--device", "cuda", "--steps", "1"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: no CUDA device")
    assert "--device cpu" in message


@pytest.mark.slow
def test_check_on_cpu_passes(tmp_path, capsys):
    """Check the whole flow on the CPU: four fresh processes, one baseline, two
    steps; deterministic mode must give identical bits."""
    report = tmp_path / "report.json"
    status = repeatability.main(
        [
            "check", "--device", "cpu", "--baselines", "resnetcifar-ns-sn",
            "--steps", "2", "--batch-size", "2", "--json", str(report),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert printed.splitlines()[-1].startswith("VERDICT: PASS")
    summary = json.loads(report.read_text())
    runs = summary["runs"]
    assert len(runs) == 4
    assert {run["mode"] for run in runs} == {"deterministic", "fast"}
    deterministic = [run for run in runs if run["mode"] == "deterministic"]
    assert deterministic[0]["flags"]["use_deterministic_algorithms"] is True
    fast = [run for run in runs if run["mode"] == "fast"]
    assert fast[0]["flags"]["use_deterministic_algorithms"] is False
    assert fast[0]["flags"]["cudnn_benchmark"] is True
    assert summary["baselines"]["resnetcifar-ns-sn"]["slowdown"] > 0


@pytest.fixture
def restored_flags(monkeypatch):
    """Put torch's global determinism switches back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.deterministic = saved[1]
    torch.backends.cudnn.benchmark = saved[2]
    torch.backends.cuda.matmul.allow_tf32 = saved[3]
    torch.backends.cudnn.allow_tf32 = saved[4]


def test_modes_set_and_report_flags(restored_flags):
    """Check every switch of deterministic mode, and that fast mode differs
    only in the algorithm choice, with TF32 still off."""
    deterministic = repeatability.set_mode("deterministic")
    assert deterministic["use_deterministic_algorithms"] is True
    assert deterministic["cudnn_deterministic"] is True
    assert deterministic["cudnn_benchmark"] is False
    assert deterministic["cuda_matmul_allow_tf32"] is False
    assert deterministic["cudnn_allow_tf32"] is False
    assert deterministic["cublas_workspace_config"] == ":4096:8"
    fast = repeatability.set_mode("fast")
    assert fast["use_deterministic_algorithms"] is False
    assert fast["cudnn_deterministic"] is False
    assert fast["cudnn_benchmark"] is True
    assert fast["cuda_matmul_allow_tf32"] is False
    assert fast["cudnn_allow_tf32"] is False
