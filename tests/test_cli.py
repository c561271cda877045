"""The command line end to end: errors, determinism of runs, resumption after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.fileio import read_json

TINY_PROTOCOL = """
name = "tiny"
version = 1
description = "kurach2019's pipeline on 12 reals vs 12 fakes, for tests only."
resize = "tf1_bilinear"
image_size = 299
inception_batch = 50
fake_seed = 42
quantize_fakes = false
kid_block_size = 1024
is_splits = 1

[extractor]
name = "tf-inception-2015-12-05"
sha256 = ["7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"]

[datasets.cifar10]
real_split = "test"
real_count = 12
fake_count = 12
"""

SHORT_RUN = [
    "--steps",
    "4",
    "--batch-size",
    "4",
    "--checkpoint-every",
    "2",
    "--eval-every",
    "2",
]


@pytest.fixture(scope="module")
def tiny_protocol(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("protocols") / "tiny.toml"
    path.write_text(TINY_PROTOCOL)
    return path


def run_command(synthetic_store, extractor_file, tiny_protocol, out, cache, *extra):
    return [
        "run",
        "baseline",
        "resnetcifar-ns-sn",
        "--dataset",
        "cifar10",
        "--root",
        str(synthetic_store),
        "--protocol",
        str(tiny_protocol),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--extractor",
        str(extractor_file),
        "--device",
        "cpu",
        "--no-progress",
        *SHORT_RUN,
        *extra,
    ]


@pytest.mark.parametrize(
    "arguments, close_match",
    [
        (["run", "baseline", "resnetcifar-ns-s"], "resnetcifar-ns-sn"),
        (["run", "baseline", "resnetcifar-ns-sn", "--dataset", "cifar1"], "cifar10"),
        (["run", "baseline", "resnetcifar-ns-sn", "--protocol", "quik"], "quick"),
        (["prepare", "cifar-10"], "cifar10"),
        (["verify", "cifa10"], "cifar10"),
    ],
)
def test_unknown_names_fail_with_close_matches(arguments, close_match, capsys):
    """Check exit status 2 and one line naming the close match."""
    assert main(arguments) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    assert message.startswith("error: unknown")
    assert f"did you mean '{close_match}'" in message


def test_prepare_without_source_names_the_flag(tmp_path, capsys):
    """Check the offline error when no source is given."""
    assert main(["prepare", "cifar10", "--root", str(tmp_path), "--no-download"]) == 2
    message = capsys.readouterr().err.strip()
    assert "--source PATH" in message
    assert "\n" not in message


def test_baseline_on_wrong_dataset_is_rejected(tmp_path, capsys):
    """Check that a baseline runs only on the dataset it is defined on."""
    specs_dir = tmp_path / "datasets"
    specs_dir.mkdir()
    result = main(
        [
            "run",
            "baseline",
            "resnetcifar-ns-sn",
            "--dataset",
            "cifar10",
            "--root",
            str(tmp_path / "missing"),
            "--no-download",
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "1",
        ]
    )
    assert result == 2
    assert "no prepared store" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(synthetic_store, extractor_file, tiny_protocol, tmp_path_factory):
    """One uninterrupted run of two seeds, through main()."""
    base = tmp_path_factory.mktemp("run")
    arguments = run_command(
        synthetic_store,
        extractor_file,
        tiny_protocol,
        base / "out",
        base / "cache",
        "--seeds",
        "2",
        "--json",
    )
    assert main(arguments) == 0
    return base / "out"


def comparable(record: dict) -> dict:
    """Drop what may differ between identical runs: wall times and environment."""
    kept = dict(record)
    for key in ("wall_seconds_last_session", "environment", "sessions"):
        kept.pop(key)
    for entry in kept["evaluations"]:
        entry.pop("seconds")
    return kept


def test_run_writes_records_and_summary(finished_run):
    """Check the records: metrics at every eval step, digests, extractor, protocol."""
    summary = read_json(finished_run / "summary.json")
    assert summary["seeds"] == [0, 1]
    assert summary["named_baseline"] is False
    assert summary["protocol"]["name"] == "tiny"
    record = read_json(finished_run / "seed-0" / "record.json")
    assert record["status"] == "completed"
    assert [e["step"] for e in record["evaluations"]] == [2, 4]
    metrics = record["final"]
    assert metrics["fid"] > 0
    assert metrics["inception_score"] is None
    assert "no 1008-class classifier" in metrics["inception_score_unavailable"]
    assert record["evaluation"]["extractor"]["sha256"].startswith("7ff4a85c")
    assert len(record["dataset"]["train_split_digest"]) == 64
    assert record["environment"]["deterministic"]["use_deterministic_algorithms"]
    from PIL import Image

    grid = Image.open(finished_run / "seed-0" / "samples" / "step-000000004.png")
    assert grid.size == (8 * 32, 8 * 32)
    fids = [row["fid_final"] for row in summary["per_seed"]]
    assert summary["median_fid_final"] == pytest.approx(sum(fids) / 2)


def test_same_command_twice_gives_same_bits(
    finished_run, synthetic_store, extractor_file, tiny_protocol, tmp_path
):
    """Check identical weights digests, checkpoints and metrics for a repeated run."""
    arguments = run_command(
        synthetic_store,
        extractor_file,
        tiny_protocol,
        tmp_path / "out",
        tmp_path / "cache",
        "--seeds",
        "2",
    )
    assert main(arguments) == 0
    for seed in (0, 1):
        first = read_json(finished_run / f"seed-{seed}" / "record.json")
        second = read_json(tmp_path / "out" / f"seed-{seed}" / "record.json")
        assert comparable(first) == comparable(second)
        checkpoint = f"seed-{seed}/checkpoints/step-000000004.pt"
        assert (finished_run / checkpoint).read_bytes() == (
            tmp_path / "out" / checkpoint
        ).read_bytes()
    zero = read_json(finished_run / "seed-0" / "record.json")
    one = read_json(finished_run / "seed-1" / "record.json")
    assert zero["weights"] != one["weights"]
    assert zero["final"]["fid"] != one["final"]["fid"]


def test_kill_and_resume_matches_uninterrupted(
    finished_run, synthetic_store, extractor_file, tiny_protocol, tmp_path
):
    """Check that SIGKILL after the step-2 checkpoint, then a re-run, ends bit-equal."""
    arguments = run_command(
        synthetic_store,
        extractor_file,
        tiny_protocol,
        tmp_path / "out",
        tmp_path / "cache",
        "--seeds",
        "1",
    )
    checkpoint = tmp_path / "out" / "seed-0" / "checkpoints" / "step-000000002.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmark", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None:
        assert time.monotonic() < deadline, "the run never wrote its step-2 checkpoint"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "out" / "seed-0" / "record.json").exists()

    assert main(arguments) == 0
    resumed = read_json(tmp_path / "out" / "seed-0" / "record.json")
    uninterrupted = read_json(finished_run / "seed-0" / "record.json")
    assert resumed["weights"] == uninterrupted["weights"]
    assert (
        resumed["evaluations"][-1]["metrics"]
        == uninterrupted["evaluations"][-1]["metrics"]
    )
    final = "seed-0/checkpoints/step-000000004.pt"
    assert (tmp_path / "out" / final).read_bytes() == (
        finished_run / final
    ).read_bytes()
    assert [s["start_step"] for s in resumed["sessions"]] == [0, 2]
    assert [e["step"] for e in resumed["evaluations"]] == [2, 4]


def test_two_runs_cannot_share_an_output_folder(tmp_path):
    """Check that a second process is refused while the first holds the lock."""
    from benchmark.errors import UserError
    from benchmark.run import output_lock

    with output_lock(tmp_path):
        with pytest.raises(UserError, match="another benchmark process"):
            with output_lock(tmp_path):
                pass


def test_json_flag_prints_only_json(finished_run, capsys):
    """Check that `list --json` stdout parses as JSON."""
    assert main(["list", "baselines", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert len(rows) == 30
    assert rows["resnetcifar-ns-sn"]["published_fid"] == [22.91, 23.22]


def test_eval_of_checkpoint_reproduces_run_metrics(
    finished_run, synthetic_store, extractor_file, tiny_protocol, tmp_path, capsys
):
    """Check that `eval --checkpoint` on the final checkpoint gives the run's metrics."""
    checkpoint = finished_run / "seed-1" / "checkpoints" / "step-000000004.pt"
    out = tmp_path / "eval.json"
    arguments = [
        "eval", "--dataset", "cifar10", "--protocol", str(tiny_protocol),
        "--checkpoint", str(checkpoint), "--root", str(synthetic_store),
        "--cache", str(tmp_path / "cache"), "--extractor", str(extractor_file),
        "--device", "cpu", "--no-progress", "--json", "--out", str(out),
    ]  # fmt: skip
    assert main(arguments) == 0
    printed = json.loads(capsys.readouterr().out)
    record = read_json(finished_run / "seed-1" / "record.json")
    assert printed["metrics"] == record["final"]
    assert printed["sample"]["step"] == 4
    assert read_json(out)["metrics"] == printed["metrics"]


def test_eval_of_split_against_reference(
    synthetic_store, extractor_file, tiny_protocol, tmp_path, capsys
):
    """Check a real-vs-real evaluation, and that the reference split is refused."""
    common = [
        "--dataset", "cifar10", "--protocol", str(tiny_protocol),
        "--root", str(synthetic_store), "--cache", str(tmp_path / "cache"),
        "--extractor", str(extractor_file), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(["eval", "--split", "train", "--count", "20", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sample"]["count"] == 20
    assert result["reference"]["split"] == "test"
    assert result["metrics"]["fid"] > 0
    assert main(["eval", "--split", "test", *common]) == 2
    assert "reference split" in capsys.readouterr().err
