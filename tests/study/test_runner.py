"""`benchmark study run` and `report`: rounds, resumption, failures, Ray end to end."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.fileio import read_json
from benchmark.study import runner as runner_module
from benchmark.study.executors import InProcessExecutor
from benchmark.study.runner import run_study
from benchmark.study.spec import load_study
from benchmark.study.storage import (
    COMPLETED,
    DIVERGED,
    StudyStorage,
    TrialResult,
    sqlite_url,
)

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


def write_study(
    folder: Path,
    name: str,
    grid_lr: list[float],
    rounds: int,
    per_round: int = 1,
    methods: tuple[str, ...] = ("sn",),
    lr_high: float = 1e-2,
) -> Path:
    """Write a study spec (ResNet-CIFAR, 2 seeds, 2 steps at batch 4) and its protocol."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.toml").write_text(TINY_PROTOCOL)
    kinds = {
        "sn": ('"spectral"', '"none"'),
        "gp": ('"none"', '"gp"'),
    }
    method_tables = "".join(
        f'\n[[methods]]\nname = "{method}"\nlabel = "{method.upper()}"\n'
        f'loss = "ns"\nd_norm = {kinds[method][0]}\npenalty = {kinds[method][1]}\n'
        for method in methods
    )
    text = f"""
name = "{name}"
version = 1
description = "test study"
figure = "test"
dataset = "cifar10"
protocol = "tiny.toml"
architecture = "resnet_cifar"
z_dim = 128
batch_size = 4
steps = 2
checkpoint_every = 2
eval_every = 2
seeds = 2
seed = 0
{method_tables}
[grid]
lr = {grid_lr!r}
penalty_weight = [10.0]

[[grid.adam]]
beta1 = 0.5
beta2 = 0.999
n_disc = 1

[bayesian]
rounds = {rounds}
settings_per_round = {per_round}
n_disc = [1, 5]
lr = {{ low = 1e-5, high = {lr_high!r}, log = true }}
beta1 = {{ low = 0.0, high = 1.0 }}
beta2 = {{ low = 0.0, high = 1.0 }}
penalty_weight = {{ low = 0.1, high = 100.0, log = true }}
penalty_weight_l2 = {{ low = 1e-4, high = 10.0, log = true }}
"""
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def common_flags(synthetic_store, extractor_file, cache) -> list[str]:
    return [
        "--root",
        str(synthetic_store),
        "--cache",
        str(cache),
        "--extractor",
        str(extractor_file),
        "--no-progress",
    ]


def stored_trials(out: Path, name: str) -> list[dict]:
    storage = StudyStorage(sqlite_url(out / name / "study.db"), name)
    try:
        return storage.trials()
    finally:
        storage.close()


# ----------------------------------------------------------------------------
# Orchestration, with a fast stand-in for training


class FakeTrials:
    """Returns an FID from the setting (a bowl in log lr) without training.

    A setting with lr >= 1 "diverges". With `interrupt_after`, the call after
    that many trials raises KeyboardInterrupt, as Ctrl-C in the middle of a
    trial would.
    """

    def __init__(self, interrupt_after: int | None = None):
        self.calls: list[int] = []
        self.interrupt_after = interrupt_after

    def __call__(self, task) -> TrialResult:
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(task.trial_id)
        lr = task.config["lr"]
        if lr >= 1.0:
            return TrialResult(status=DIVERGED, diverged_step=1)
        fid = 30.0 + 20.0 * (math.log10(lr) + 3.5) ** 2 + task.seed
        return TrialResult(status=COMPLETED, fid=fid, fid_step=2)


def run_with(spec, out, store, extractor, cache, trials):
    @contextlib.contextmanager
    def factory():
        yield InProcessExecutor("cpu", trial_function=trials)

    return run_study(
        spec,
        out / spec.name,
        None,
        factory,
        store,
        cache,
        str(extractor),
        progress=False,
    )


def test_rounds_resume_and_failures_reach_optimiser(
    tmp_path, synthetic_store, extractor_file, monkeypatch
):
    """Check rounds, a resumed interruption and that failed settings reach the optimiser."""
    spec = load_study(
        write_study(
            tmp_path / "specs",
            "orchestra",
            [2e-4, 1e8],
            rounds=2,
            per_round=1,
            methods=("sn", "gp"),
            lr_high=1e9,
        )
    )
    histories = []
    propose = runner_module.propose

    def spy(spec, method, history, count, round_number):
        histories.append((method.name, round_number, history))
        return propose(spec, method, history, count, round_number)

    monkeypatch.setattr(runner_module, "propose", spy)
    cache = tmp_path / "cache"

    first = FakeTrials(interrupt_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_with(spec, tmp_path, synthetic_store, extractor_file, cache, first)
    stored = stored_trials(tmp_path, spec.name)
    finished = {t["id"]: t for t in stored if t["status"] in (COMPLETED, DIVERGED)}
    assert len(finished) == 5
    assert sum(t["status"] == "running" for t in stored) == 1

    second = FakeTrials()
    summary = run_with(spec, tmp_path, synthetic_store, extractor_file, cache, second)
    planned = 2 * (2 + 2 * 1) * 2  # methods x (grid + rounds x per round) x seeds
    assert summary["planned_trials"] == planned
    assert sum(summary["trials"].values()) == planned
    # Finished trials were not run again; every other trial ran exactly once.
    assert not set(second.calls) & set(finished)
    assert len(first.calls) + len(second.calls) == planned
    assert len(set(first.calls + second.calls)) == planned
    for trial in stored_trials(tmp_path, spec.name):
        if trial["id"] in finished:
            assert trial["finished_utc"] == finished[trial["id"]]["finished_utc"]

    # Each method's rounds saw every earlier finished setting, the diverged
    # one included as infinite with all seeds failed.
    assert [(name, r) for name, r, _ in histories] == [
        ("sn", 1),
        ("gp", 1),
        ("sn", 2),
        ("gp", 2),
    ]
    for _, round_number, history in histories:
        assert len(history) == 2 + (round_number - 1)
        diverged = [s for s in history if s.setting.lr == 1e8]
        assert len(diverged) == 1
        assert diverged[0].median_fid == math.inf
        assert diverged[0].failed_seeds == 2

    # Running again finds nothing to do.
    third = FakeTrials()
    run_with(spec, tmp_path, synthetic_store, extractor_file, cache, third)
    assert third.calls == []


def test_changed_spec_is_rejected(tmp_path, synthetic_store, extractor_file):
    """Check a study folder refuses a spec edited after it started."""
    path = write_study(tmp_path / "specs", "edited", [2e-4], rounds=0)
    cache = tmp_path / "cache"
    run_with(
        load_study(path), tmp_path, synthetic_store, extractor_file, cache, FakeTrials()
    )
    path.write_text(path.read_text().replace("seed = 0", "seed = 1"))
    from benchmark.errors import UserError

    with pytest.raises(UserError, match="run with another spec"):
        run_with(
            load_study(path),
            tmp_path,
            synthetic_store,
            extractor_file,
            cache,
            FakeTrials(),
        )


# ----------------------------------------------------------------------------
# Real training


def test_diverging_trial_is_recorded_and_reported(
    tmp_path, synthetic_store, extractor_file, capsys
):
    """Check a real diverging setting: status, step, record, report, exit 0."""
    # Without spectral norm the gradient penalty's loss is NaN after one step.
    spec = write_study(
        tmp_path / "specs", "diverging", [1e8], rounds=0, methods=("gp",)
    )
    out = tmp_path / "studies"
    flags = common_flags(synthetic_store, extractor_file, tmp_path / "cache")
    status = main(
        [
            "study",
            "run",
            str(spec),
            "--out",
            str(out),
            "--executor",
            "inprocess",
            "--device",
            "cpu",
            *flags,
        ]
    )
    assert status == 0
    trials = stored_trials(out, "diverging")
    assert [t["status"] for t in trials] == [DIVERGED, DIVERGED]
    assert all(t["diverged_step"] == 1 for t in trials)
    assert all(t["fid"] is None for t in trials)
    record = read_json(Path(trials[0]["run_dir"]) / "record.json")
    assert record["status"] == "diverged"
    assert record["study"]["setting"]["lr"] == 1e8
    assert "2 of 2 trials stored (diverged 2)" in capsys.readouterr().out

    assert main(["study", "report", str(spec), "--out", str(out)]) == 0
    report = out / "diverging" / "report"
    summary = (report / "summary.md").read_text()
    assert "diverged 2" in summary
    assert "none with a finite median" in summary
    rows = (report / "trials.csv").read_text().splitlines()
    assert len(rows) == 3
    assert rows[1].split(",")[12] == "diverged"
    assert (report / "figure.png").stat().st_size > 0
    assert (report / "figure.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["study", "report", "tiny-cifar10", "--out", "{tmp}"], "no study database at"),
        (
            [
                "study",
                "run",
                "tiny-cifar10",
                "--executor",
                "inprocess",
                "--address",
                "auto",
            ],
            "--address needs --executor ray",
        ),
        (["study", "run", "tiny-cifar10", "--device", "cpu"], "--device applies to"),
        (
            ["study", "run", "tiny-cifar10", "--cpus-per-trial", "0"],
            "--cpus-per-trial must be at least 1",
        ),
        (["study", "run", "figure1-lsn"], "did you mean 'figure1-lsun'"),
    ],
)
def test_bad_study_arguments_fail_in_one_line(tmp_path, capsys, arguments, message):
    """Check exit status 2 and one line naming the problem."""
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert message in error


# ----------------------------------------------------------------------------
# End to end through Ray, and a resumed kill -9 (real training, minutes on 2 cores)


@pytest.fixture(scope="module")
def ray_study(tmp_path_factory, synthetic_store, extractor_file):
    """One grid setting and one Bayesian round of one setting, 2 seeds, through Ray."""
    base = tmp_path_factory.mktemp("ray-study")
    spec = write_study(base / "specs", "endtoend", [2e-4], rounds=1)
    out = base / "studies"
    flags = common_flags(synthetic_store, extractor_file, base / "cache")
    status = main(
        [
            "study",
            "run",
            str(spec),
            "--out",
            str(out),
            "--workers",
            "2",
            "--cpus-per-trial",
            "1",
            *flags,
        ]
    )
    assert status == 0
    return spec, out, flags


@pytest.mark.slow
def test_ray_study_end_to_end(ray_study):
    """Check every trial finished through Ray, the report and that Ray stopped."""
    import ray

    spec, out, _ = ray_study
    assert not ray.is_initialized()
    trials = stored_trials(out, "endtoend")
    assert len(trials) == 4
    assert {t["status"] for t in trials} == {COMPLETED}
    assert [t["phase"] for t in trials] == ["grid", "grid", "bayesian", "bayesian"]
    assert all(t["fid"] > 0 and t["fid_step"] == 2 for t in trials)
    assert all(t["threads"] == 1 for t in trials)
    record = read_json(Path(trials[0]["run_dir"]) / "record.json")
    assert record["study"]["name"] == "endtoend"
    assert record["config"]["lr"] == 2e-4

    assert main(["study", "report", str(spec), "--out", str(out), "--json"]) == 0
    report = out / "endtoend" / "report"
    assert len((report / "trials.csv").read_text().splitlines()) == 5
    from PIL import Image

    with Image.open(report / "figure.png") as image:
        assert image.size[0] > 500
        assert image.size[1] > 500


@pytest.mark.slow
def test_killed_study_resumes_with_same_results(ray_study, tmp_path):
    """Check kill -9 mid-study, then a rerun: nothing lost, nothing rerun, same FIDs.

    The in-process rerun with one torch thread must reproduce the Ray run's
    FIDs bit for bit, which also checks that the executor does not matter.
    """
    spec, ray_out, flags = ray_study
    out = tmp_path / "studies"
    command = [
        sys.executable,
        "-m",
        "benchmark",
        "study",
        "run",
        str(spec),
        "--out",
        str(out),
        "--executor",
        "inprocess",
        "--cpus-per-trial",
        "1",
        *flags,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    database = out / "endtoend" / "study.db"
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if database.exists():
                with contextlib.closing(sqlite3.connect(database)) as connection:
                    done = connection.execute(
                        "select count(*) from trials where status = 'completed'"
                    ).fetchone()[0]
                if done >= 1:
                    break
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    before = {
        t["id"]: t for t in stored_trials(out, "endtoend") if t["status"] == COMPLETED
    }
    assert 1 <= len(before) < 4

    assert (
        main(
            [
                "study",
                "run",
                str(spec),
                "--out",
                str(out),
                "--executor",
                "inprocess",
                "--cpus-per-trial",
                "1",
                *flags,
            ]
        )
        == 0
    )
    after = stored_trials(out, "endtoend")
    assert {t["status"] for t in after} == {COMPLETED}
    for trial in after:
        if trial["id"] in before:
            assert trial["finished_utc"] == before[trial["id"]]["finished_utc"]
            sessions = (Path(trial["run_dir"]) / "sessions.jsonl").read_text()
            assert len(sessions.splitlines()) == 1
    reference = {
        (t["round"], t["seed"]): t["fid"] for t in stored_trials(ray_out, "endtoend")
    }
    assert {(t["round"], t["seed"]): t["fid"] for t in after} == reference


def test_trial_restores_caller_threads(monkeypatch):
    """Check that a trial run in-process leaves torch's thread count as it was."""
    import torch

    from benchmark.study import trial as trial_module

    seen = []

    def fail_run_seed(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise RuntimeError("stop after reading the thread count")

    monkeypatch.setattr("benchmark.run.run_seed", fail_run_seed)
    context = {"train_images": None, "evaluator": None, "reference": None, "shared": {}}
    monkeypatch.setattr(trial_module, "_context", lambda task, device: context)
    monkeypatch.setattr("benchmark.training.loop.TrainConfig", dict)
    before = torch.get_num_threads()
    task = types.SimpleNamespace(
        threads=1 if before != 1 else 2, device="cpu", trial_id=1, method="m",
        setting_key="s", seed=0, config={}, run_dir="unused", shared={},
    )  # fmt: skip
    result = trial_module.execute_trial(task)
    assert seen == [task.threads]
    assert result.status == trial_module.ERROR
    assert torch.get_num_threads() == before
