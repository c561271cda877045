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
