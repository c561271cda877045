"""`benchmark check`: verdicts, tolerances and the refusal of other data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmark import specs
from benchmark.cli import main
from benchmark.fileio import atomic_write_json, read_json
from benchmark.references import load_references, references_directory

WHEEL_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
JPEG_TRAIN = "d79c949e24413e7dd7a425ed375cbca7f17824a4fe0e97e38dac5a2b3ce9413e"
JPEG_TEST = "5715a37fc6d580c676401f74f04d5c9ca65fb52829a0db63d79c12c28c9be85e"
OFFICIAL_TRAIN = "a" * 64
OFFICIAL_TEST = "b" * 64


def _protocol_record(name: str = "kurach2019") -> dict:
    protocol = specs.load_protocol(name)
    counts = protocol.for_dataset("cifar10")
    return json.loads(
        json.dumps(
            {
                "name": protocol.name,
                "version": protocol.version,
                "real_split": counts.real_split,
                "real_count": counts.real_count,
                "fake_count": counts.fake_count,
                "spec": specs.as_dict(protocol),
            }
        )
    )


def _store(source_format: str, train: str, test: str, complete: bool = True) -> dict:
    return {
        "dataset": "cifar10",
        "spec_version": 1,
        "reference_split": complete,
        "source_format": source_format,
        "source_sha256": "c" * 64,
        "split_digests": {"train": train, "test": test},
    }


def _floor_result(fid: float) -> dict:
    """An eval result shaped like `benchmark eval --split train --out`."""
    return {
        "store": _store("image-folder-archive", JPEG_TRAIN, JPEG_TEST),
        "protocol": _protocol_record(),
        "extractor": {"name": "wheel", "sha256": WHEEL_SHA256, "layout": "pool3_only"},
        "dataset": "cifar10",
        "sample": {"kind": "split", "split": "train", "count": 10000},
        "metrics": {"fid": fid},
    }


def _summary(median_fid: float | None, store: dict, **changes) -> dict:
    """A run summary shaped like `benchmark run baseline`'s summary.json."""
    summary = {
        "baseline": "resnetcifar-ns-sn",
        "named_baseline": True,
        "not_named_because": [],
        "overrides": {},
        "protocol": _protocol_record(),
        "extractor": {"name": "wheel", "sha256": WHEEL_SHA256},
        "store": store,
        "dataset": {"name": "cifar10"},
        "seeds": [0, 1, 2, 3, 4],
        "median_fid_best": median_fid,
    }
    summary.update(changes)
    return summary


def _write(tmp_path: Path, result: dict, name: str = "result.json") -> Path:
    path = tmp_path / name
    atomic_write_json(path, result)
    return path


def _check(path: Path, capsys, *extra: str) -> tuple[int, dict]:
    status = main(["check", str(path), "--json", *extra])
    return status, json.loads(capsys.readouterr().out)


def test_packaged_references_are_valid():
    """Check every packaged references file and the published tolerances."""
    files = sorted(references_directory().glob("*.toml"))
    assert files
    for path in files:
        references = load_references(path.stem)
        assert references.protocol_version == specs.load_protocol(path.stem).version
    kurach = load_references("kurach2019")
    for name in specs.available("baselines"):
        baseline = specs.load_baseline(name)
        assert baseline.dataset in kurach.published_tolerance, name


def test_floor_within_tolerance_passes(tmp_path, capsys):
    """Check the JPEG floor: 5.1546 + 0.005 passes with exit status 0."""
    status, outcome = _check(_write(tmp_path, _floor_result(5.1596)), capsys)
    assert status == 0
    assert outcome["verdict"] == "pass"
    assert outcome["reference_fid"] == 5.1546
    assert outcome["difference"] == pytest.approx(0.005)


def test_floor_outside_tolerance_fails(tmp_path, capsys):
    """Check that 5.1546 + 0.02 fails with exit status 4 and the numbers."""
    path = _write(tmp_path, _floor_result(5.1746))
    assert main(["check", str(path)]) == 4
    text = capsys.readouterr().out
    assert "FID 5.1546 +- 0.0100" in text
    assert "measured   FID 5.1746" in text
    assert "verdict    FAIL" in text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r["store"]["split_digests"].update(test="d" * 64), "test split"),
        (lambda r: r["extractor"].update(sha256="e" * 64), "extractor sha256"),
        (lambda r: r["protocol"].update(version=2), "protocol version"),
        (lambda r: r["protocol"]["spec"].update(fake_seed=7), "fake_seed"),
    ],
    ids=["digest", "extractor", "version", "settings"],
)
def test_floor_on_other_identity_not_comparable(tmp_path, capsys, change, reason):
    """Check exit status 1 and the reason for other data, network or protocol."""
    result = _floor_result(5.1546)
    change(result)
    status, outcome = _check(_write(tmp_path, result), capsys)
    assert status == 1
    assert outcome["verdict"] == "not comparable"
    assert any(reason in line for line in outcome["reasons"]), outcome["reasons"]


def test_inception_batch_is_not_part_of_the_identity(tmp_path, capsys):
    """Check that a result evaluated at compare_gan's batch of 50 stays comparable.

    The batch changes no bit of the features, so results from before the
    protocols moved to 10 keep their references.
    """
    result = _floor_result(5.1546)
    assert result["protocol"]["spec"]["inception_batch"] == 10
    result["protocol"]["spec"]["inception_batch"] = 50
    status, outcome = _check(_write(tmp_path, result), capsys)
    assert status == 0
    assert outcome["verdict"] == "pass"


def test_floor_without_reference_names_known_ones(tmp_path, capsys):
    """Check that a sample count with no reference is a one-line error."""
    result = _floor_result(5.0)
    result["sample"]["count"] = 123
    assert main(["check", str(_write(tmp_path, result))]) == 2
    message = capsys.readouterr().err
    assert "no reference for cifar10 train x 123" in message
    assert "cifar10-jpeg-train10k-vs-test" in message


def test_published_on_official_store(tmp_path, capsys):
    """Check a named-baseline summary against 22.91 / 23.22 with 10 % tolerance."""
    store = _store("official-archive", OFFICIAL_TRAIN, OFFICIAL_TEST)
    status, outcome = _check(_write(tmp_path, _summary(24.5, store)), capsys)
    assert status == 0
    assert outcome["reference_fid"] == 23.22
    assert outcome["tolerance"] == pytest.approx(2.322)
    status, outcome = _check(_write(tmp_path, _summary(26.0, store)), capsys)
    assert status == 4
    assert outcome["verdict"] == "fail"


def test_published_rejects_jpeg_and_partial_stores(tmp_path, capsys):
    """Check that published FIDs refuse a JPEG copy and a partial store."""
    jpeg = _store("image-folder-archive", JPEG_TRAIN, JPEG_TEST)
    status, outcome = _check(_write(tmp_path, _summary(23.0, jpeg)), capsys)
    assert status == 1
    assert any("not the official release" in line for line in outcome["reasons"])
    partial = _store("official-archive", OFFICIAL_TRAIN, OFFICIAL_TEST, False)
    status, outcome = _check(_write(tmp_path, _summary(23.0, partial)), capsys)
    assert status == 1
    assert any("partial" in line for line in outcome["reasons"])


def test_published_diverged_median_fails(tmp_path, capsys):
    """Check that a run whose median seed diverged fails, not passes."""
    store = _store("official-archive", OFFICIAL_TRAIN, OFFICIAL_TEST)
    status, outcome = _check(_write(tmp_path, _summary(None, store)), capsys)
    assert status == 4
    assert outcome["measured_fid"] is None


def test_modified_run_has_no_published_reference(tmp_path, capsys):
    """Check that a modified spec or unrecorded overrides are rejected."""
    store = _store("official-archive", OFFICIAL_TRAIN, OFFICIAL_TEST)
    summary = _summary(
        23.0,
        store,
        named_baseline=False,
        not_named_because=["my.toml differs from the packaged resnetcifar-ns-sn"],
    )
    assert main(["check", str(_write(tmp_path, summary))]) == 2
    assert "not the named baseline" in capsys.readouterr().err
    summary["overrides"] = {"batch_size": 32}
    assert main(["check", str(_write(tmp_path, summary))]) == 2
    assert "no golden run" in capsys.readouterr().err


GOLDEN_REFERENCES = """
protocol = "kurach2019"
protocol_version = 1

[[measured]]
name = "golden"
kind = "run"
dataset = "cifar10"
baseline = "resnetcifar-ns-sn"
overrides = {{ steps = 20 }}
seeds = [0, 1]
fid = 400.0
tolerance = 2.0
reason = "test"
source = "test"
extractor_sha256 = ["{wheel}"]

[measured.split_digests]
train = "{train}"
test = "{test}"
"""


def test_golden_run_against_references_file(tmp_path, capsys):
    """Check a short run against a golden run given with --references."""
    references = tmp_path / "references.toml"
    references.write_text(
        GOLDEN_REFERENCES.format(wheel=WHEEL_SHA256, train=JPEG_TRAIN, test=JPEG_TEST)
    )
    store = _store("image-folder-archive", JPEG_TRAIN, JPEG_TEST)
    summary = _summary(
        401.5, store, named_baseline=False, overrides={"steps": 20}, seeds=[0, 1]
    )
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    _write(run_folder, summary, "summary.json")
    status, outcome = _check(run_folder, capsys, "--references", str(references))
    assert status == 0
    assert outcome["reference"]["name"] == "golden"
    other_seeds = copy.deepcopy(summary)
    other_seeds["seeds"] = [0, 1, 2]
    _write(run_folder, other_seeds, "summary.json")
    assert main(["check", str(run_folder), "--references", str(references)]) == 2


# About 80 s on a loaded 2-core CPU (32 Inception forward passes and loading).
@pytest.mark.slow
def test_check_of_real_eval_result(synthetic_store, extractor_file, tmp_path, capsys):
    """Check `eval --out` then `check` end to end on a small store."""
    protocol = tmp_path / "tiny.toml"
    protocol.write_text(
        (Path(__file__).parent / "test_cli.py")
        .read_text()
        .split('TINY_PROTOCOL = """', 1)[1]
        .split('"""', 1)[0]
    )
    out = tmp_path / "floor.json"
    arguments = [
        "eval", "--dataset", "cifar10", "--protocol", str(protocol),
        "--split", "train", "--count", "20", "--root", str(synthetic_store),
        "--cache", str(tmp_path / "cache"), "--extractor", str(extractor_file),
        "--device", "cpu", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert main(arguments) == 0
    capsys.readouterr()
    result = read_json(out)
    digests = result["store"]["split_digests"]
    measured = result["metrics"]["fid"]

    def references(fid: float, train_digest: str) -> Path:
        path = tmp_path / f"references-{fid}-{train_digest[:4]}.toml"
        path.write_text(
            'protocol = "tiny"\nprotocol_version = 1\n[[measured]]\n'
            'name = "tiny-floor"\nkind = "split"\ndataset = "cifar10"\n'
            f'split = "train"\ncount = 20\nfid = {fid}\ntolerance = 0.001\n'
            'reason = "test"\nsource = "test"\n'
            f'extractor_sha256 = ["{result["extractor"]["sha256"]}"]\n'
            "[measured.split_digests]\n"
            f'train = "{train_digest}"\ntest = "{digests["test"]}"\n'
        )
        return path

    assert (
        main(
            [
                "check",
                str(out),
                "--references",
                str(references(measured, digests["train"])),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "check",
                str(out),
                "--references",
                str(references(measured + 1, digests["train"])),
            ]
        )
        == 4
    )
    assert (
        main(["check", str(out), "--references", str(references(measured, "f" * 64))])
        == 1
    )


def test_missing_path_says_what_to_give(tmp_path, capsys):
    """Check that a path that does not exist gets one line saying what to pass."""
    missing = tmp_path / "no-such-run"
    assert main(["check", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(missing) in error
    assert "summary.json" in error
