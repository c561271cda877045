"""Decide whether two result files measured the same thing.

A result file is the JSON of `benchmark eval --out`, a run's `record.json`
or its `summary.json`. Two results are comparable only when they were made
on stores with the same dataset, spec version and split digests, under the
same protocol (name, version and file hash) and with the same extractor
file. Anything else changes the number for reasons other than the models.
"""

from __future__ import annotations

import os
from typing import Any

from benchmark.errors import UserError
from benchmark.fileio import read_json


def _identity(result: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the store, protocol and extractor a result names."""
    where = result.get("evaluation", result)
    parts = {}
    for part in ("store", "protocol", "extractor"):
        value = where.get(part) if isinstance(where, dict) else None
        if not isinstance(value, dict):
            raise UserError(
                f"{name!r} has no {part!r} record; pass the JSON written by "
                "`benchmark eval --out`, or a run's record.json or summary.json"
            )
        parts[part] = value
    return parts


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 15 else text


def compare_results(
    first: str | os.PathLike, second: str | os.PathLike
) -> dict[str, Any]:
    """Compare the data, protocol and extractor identities of two result files.

    Returns:
        `comparable` (bool), `reasons` (one line per difference) and the two
        files' store digests.

    Raises:
        UserError: a file is missing, not JSON, or not a result file.
    """
    a = _identity(read_json(first), str(first))
    b = _identity(read_json(second), str(second))
    reasons = []
    for field in ("dataset", "spec_version"):
        if a["store"].get(field) != b["store"].get(field):
            reasons.append(
                f"store {field}: {a['store'].get(field)!r} vs {b['store'].get(field)!r}"
            )
    digests_a = a["store"].get("split_digests") or {}
    digests_b = b["store"].get("split_digests") or {}
    for split in sorted(set(digests_a) | set(digests_b)):
        if digests_a.get(split) != digests_b.get(split):
            reasons.append(
                f"{split} split digest: {_short(digests_a.get(split))} vs "
                f"{_short(digests_b.get(split))} (different images)"
            )
    for field in ("name", "version", "file_sha256"):
        if a["protocol"].get(field) != b["protocol"].get(field):
            reasons.append(
                f"protocol {field}: {_short(a['protocol'].get(field))} vs "
                f"{_short(b['protocol'].get(field))}"
            )
    if a["extractor"].get("sha256") != b["extractor"].get("sha256"):
        reasons.append(
            f"extractor sha256: {_short(a['extractor'].get('sha256'))} vs "
            f"{_short(b['extractor'].get('sha256'))}"
        )
    return {
        "comparable": not reasons,
        "reasons": reasons,
        "files": [str(first), str(second)],
        "split_digests": [digests_a, digests_b],
    }
