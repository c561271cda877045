"""`benchmark compare`: results on stores with other digests are not comparable."""

from __future__ import annotations

import copy
import json

import pytest

from benchmark.cli import main
from benchmark.compare import compare_results

EVAL_RESULT = {
    "store": {
        "dataset": "lsun",
        "spec_version": 1,
        "split_digests": {"train": "a" * 64, "test": "b" * 64},
    },
    "protocol": {"name": "kurach2019", "version": 1, "file_sha256": "c" * 64},
    "extractor": {"sha256": "d" * 64},
    "metrics": {"fid": 40.0},
}


def write(path, result):
    path.write_text(json.dumps(result))
    return path


def test_same_identity_is_comparable(tmp_path):
    """Check that an eval result and a run record with one identity compare equal."""
    record = {"evaluation": copy.deepcopy(EVAL_RESULT), "seed": 0}
    result = compare_results(
        write(tmp_path / "a.json", EVAL_RESULT), write(tmp_path / "b.json", record)
    )
    assert result["comparable"] is True
    assert result["reasons"] == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda r: r["store"]["split_digests"].update(test="e" * 64),
            "test split digest",
        ),
        (lambda r: r["store"].update(spec_version=2), "store spec_version"),
        (lambda r: r["protocol"].update(name="quick"), "protocol name"),
        (lambda r: r["extractor"].update(sha256="f" * 64), "extractor sha256"),
    ],
)
def test_difference_is_flagged(tmp_path, capsys, change, reason):
    """Check the reason and exit status 1 for each kind of difference."""
    other = copy.deepcopy(EVAL_RESULT)
    change(other)
    first = write(tmp_path / "a.json", EVAL_RESULT)
    second = write(tmp_path / "b.json", other)
    result = compare_results(first, second)
    assert result["comparable"] is False
    assert any(reason in line for line in result["reasons"])
    assert main(["compare", str(first), str(second)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("NOT comparable")
    assert reason in printed


def test_non_result_file_rejected(tmp_path, capsys):
    """Check a one-line error for JSON that is not a result."""
    path = write(tmp_path / "x.json", {"metrics": {}})
    assert main(["compare", str(path), str(path)]) == 2
    assert "has no 'store' record" in capsys.readouterr().err


ENVIRONMENT = {
    "python": "3.11.9",
    "platform": "Linux-6.1-x86_64-with-glibc2.36",
    "torch": "2.14.1+cu130",
    "cuda": "13.0",
    "cudnn": 91000,
    "device": {
        "type": "cpu",
        "name": "AMD EPYC 7B13",
        "cpu_capability": "AVX512",
        "cpu_count": 2,
    },
    "deterministic": {
        "use_deterministic_algorithms": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cuda_matmul_allow_tf32": False,
        "cudnn_allow_tf32": False,
        "cublas_workspace_config": ":4096:8",
        "torch_num_threads": 2,
    },
    "packages": {"numpy": "2.3.0", "scipy": "1.16.0", "benchmark": "0.1.0"},
    "git": {"commit": "a" * 40, "dirty": False},
}


def record_with(environment, sessions=None, train_digest="1" * 64):
    record = {
        "evaluation": copy.deepcopy(EVAL_RESULT),
        "dataset": {"train_split_digest": train_digest},
        "environment": copy.deepcopy(environment),
    }
    if sessions is not None:
        record["sessions"] = [{"environment": env} for env in sessions]
    return record


def changed(path: str, value):
    environment = copy.deepcopy(ENVIRONMENT)
    *parents, leaf = path.split(".")
    target = environment
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    return environment


def test_same_environment_expects_identical_bits(tmp_path, capsys):
    """Check that equal fingerprints in deterministic mode promise equal bits."""
    first = write(tmp_path / "a.json", record_with(ENVIRONMENT))
    second = write(tmp_path / "b.json", record_with(ENVIRONMENT))
    result = compare_results(first, second)
    assert result["environment"]["bitwise_expected"] is True
    assert result["environment"]["differences"] == []
    assert main(["compare", str(first), str(second)]) == 0
    assert "bitwise identity: expected" in capsys.readouterr().out


@pytest.mark.parametrize(
    "field, value",
    [
        ("python", "3.12.4"),
        ("torch", "2.15.0+cu130"),
        ("cuda", "12.8"),
        ("cudnn", 90800),
        ("device.type", "cuda"),
        ("device.name", "NVIDIA H100 80GB HBM3"),
        ("deterministic.cudnn_benchmark", True),
        ("deterministic.torch_num_threads", 16),
        ("git.commit", "b" * 40),
        ("git.dirty", True),
        ("packages.numpy", "2.4.0"),
        ("platform", "Linux-6.8-x86_64-with-glibc2.39"),
    ],
)
def test_environment_difference_breaks_bits_not_comparability(
    tmp_path, capsys, field, value
):
    """Check that each fingerprint field is named, keeps the numbers comparable
    and withdraws the promise of identical bits."""
    first = write(tmp_path / "a.json", record_with(ENVIRONMENT))
    second = write(tmp_path / "b.json", record_with(changed(field, value)))
    result = compare_results(first, second)
    assert result["comparable"] is True
    assert result["environment"]["bitwise_expected"] is False
    assert [row["field"] for row in result["environment"]["differences"]] == [field]
    assert main(["compare", str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("comparable")
    assert "bitwise identity: NOT expected" in printed
    assert f"{field}: " in printed
    assert "can change bits, not comparability" in printed


def test_cpu_count_alone_keeps_bits(tmp_path):
    """Check that a field recorded only for reference does not withdraw the promise."""
    first = write(tmp_path / "a.json", record_with(ENVIRONMENT))
    second = write(tmp_path / "b.json", record_with(changed("device.cpu_count", 64)))
    environment = compare_results(first, second)["environment"]
    assert environment["differences"][0]["field"] == "device.cpu_count"
    assert environment["bitwise_expected"] is True


def test_nondeterministic_run_never_expects_bits(tmp_path):
    """Check that two runs without deterministic algorithms promise no bits."""
    loose = changed("deterministic.use_deterministic_algorithms", False)
    first = write(tmp_path / "a.json", record_with(loose))
    second = write(tmp_path / "b.json", record_with(loose))
    assert compare_results(first, second)["environment"]["bitwise_expected"] is False


def test_resumed_elsewhere_is_reported(tmp_path, capsys):
    """Check that a record whose sessions ran on other torch versions is named."""
    mixed = record_with(
        ENVIRONMENT, sessions=[ENVIRONMENT, changed("torch", "2.15.0+cu130")]
    )
    first = write(tmp_path / "a.json", mixed)
    second = write(tmp_path / "b.json", record_with(ENVIRONMENT))
    result = compare_results(first, second)
    assert result["environment"]["bitwise_expected"] is False
    assert "session 2 ran with other torch" in result["environment"]["mixed"][0]
    assert main(["compare", str(first), str(second)]) == 0
    assert "resumed elsewhere" in capsys.readouterr().out


def test_training_data_difference_breaks_comparability(tmp_path):
    """Check that records of models trained on other images are not comparable."""
    first = write(tmp_path / "a.json", record_with(ENVIRONMENT))
    second = write(tmp_path / "b.json", record_with(ENVIRONMENT, train_digest="2" * 64))
    result = compare_results(first, second)
    assert result["comparable"] is False
    assert any("training split digest" in line for line in result["reasons"])


def test_missing_fingerprint_is_reported(tmp_path, capsys):
    """Check that a result without an environment makes bitwise identity unknown."""
    first = write(tmp_path / "a.json", EVAL_RESULT)
    second = write(tmp_path / "b.json", record_with(ENVIRONMENT))
    result = compare_results(first, second)
    assert result["environment"]["missing"] == [str(first)]
    assert result["environment"]["bitwise_expected"] is False
    main(["compare", str(first), str(second)])
    assert "bitwise identity: unknown" in capsys.readouterr().out


def test_missing_file_says_what_to_give(tmp_path, capsys):
    """Check that a missing result file gets one line naming it and what to pass."""
    present = write(tmp_path / "a.json", {"metrics": {}})
    missing = tmp_path / "b.json"
    assert main(["compare", str(present), str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(missing) in error
    assert "record.json" in error


def _with_spec(result: dict, **settings) -> dict:
    result = json.loads(json.dumps(result))
    spec = {"name": "kurach2019", "fake_seed": 42, "inception_batch": 16}
    result["protocol"]["spec"] = {**spec, **settings}
    return result


def test_inception_batch_keeps_results_comparable(tmp_path):
    """Check that protocols differing only in the Inception batch are comparable."""
    first = write(tmp_path / "a.json", _with_spec(EVAL_RESULT))
    changed = _with_spec(EVAL_RESULT, inception_batch=50)
    changed["protocol"]["file_sha256"] = "f" * 64
    second = write(tmp_path / "b.json", changed)
    outcome = compare_results(first, second)
    assert outcome["comparable"], outcome["reasons"]


def test_protocol_setting_difference_is_flagged(tmp_path):
    """Check that another fake seed in the recorded spec is not comparable."""
    first = write(tmp_path / "a.json", _with_spec(EVAL_RESULT))
    second = write(tmp_path / "b.json", _with_spec(EVAL_RESULT, fake_seed=7))
    outcome = compare_results(first, second)
    assert not outcome["comparable"]
    assert "protocol settings differ in fake_seed" in outcome["reasons"]


def test_file_hash_counts_without_recorded_settings(tmp_path):
    """Check that the protocol file hash decides where a record has no spec."""
    changed = json.loads(json.dumps(EVAL_RESULT))
    changed["protocol"]["file_sha256"] = "f" * 64
    outcome = compare_results(
        write(tmp_path / "a.json", EVAL_RESULT), write(tmp_path / "b.json", changed)
    )
    assert not outcome["comparable"]
    assert any("protocol file_sha256" in reason for reason in outcome["reasons"])
