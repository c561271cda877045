"""Decide whether two result files measured the same thing.

A result file is the JSON of `benchmark eval --out`, a run's `record.json`
or its `summary.json`. Two results are comparable only when they were made
on stores with the same dataset, spec version and split digests, under the
same protocol (name, version and every setting that can move a number; the
file hash where a record lacks the settings) and with the same extractor
file. Anything else changes the number for reasons other than the models.

Comparable numbers need not be equal bit for bit. Bits are promised only
for the same environment fingerprint (Python, torch, CUDA, cuDNN, device,
deterministic flags and thread count, package versions, git commit and
dirty state, platform), so the comparison also lists every fingerprint
field that differs, including between the sessions of a resumed run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmark import specs
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


def _protocol_reasons(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """List the differences between two recorded protocols that can move numbers.

    Name and version always count. Where both records contain the spec, its
    settings are compared, except those that change no number (the Inception
    batch). Otherwise the protocol files' SHA-256 must agree.
    """
    spec_a, spec_b = a.get("spec"), b.get("spec")
    have_specs = isinstance(spec_a, dict) and isinstance(spec_b, dict)
    fields = ("name", "version") if have_specs else ("name", "version", "file_sha256")
    reasons = [
        f"protocol {field}: {_short(a.get(field))} vs {_short(b.get(field))}"
        for field in fields
        if a.get(field) != b.get(field)
    ]
    if have_specs:
        changed = specs.protocol_settings_changed(spec_a, spec_b)
        if changed:
            reasons.append("protocol settings differ in " + ", ".join(changed))
    return reasons


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
    for path in (first, second):
        if not Path(path).is_file():
            raise UserError(
                f"no result file at {str(path)!r}; give two result files: the "
                "--out file of `benchmark eval`, or a run's record.json or "
                "summary.json"
            )
    first_result = read_json(first)
    second_result = read_json(second)
    a = _identity(first_result, str(first))
    b = _identity(second_result, str(second))
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
    reasons += _protocol_reasons(a["protocol"], b["protocol"])
    if a["extractor"].get("sha256") != b["extractor"].get("sha256"):
        reasons.append(
            f"extractor sha256: {_short(a['extractor'].get('sha256'))} vs "
            f"{_short(b['extractor'].get('sha256'))}"
        )
    train_a = _train_digest(first_result)
    train_b = _train_digest(second_result)
    if train_a and train_b and train_a != train_b:
        reasons.append(
            f"training split digest: {_short(train_a)} vs {_short(train_b)} "
            "(models trained on different images)"
        )
    return {
        "comparable": not reasons,
        "reasons": reasons,
        "files": [str(first), str(second)],
        "split_digests": [digests_a, digests_b],
        "environment": compare_environments(
            first_result, second_result, str(first), str(second)
        ),
    }


# Fingerprint fields that are recorded for reference but cannot change a bit.
NO_EFFECT_ON_BITS = ("device.cpu_count",)


def _train_digest(result: dict[str, Any]) -> str | None:
    dataset = result.get("dataset")
    if isinstance(dataset, dict):
        return dataset.get("train_split_digest")
    return None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Return nested dicts as {"a.b.c": leaf}."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _fingerprints(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the environment of each session that produced a result.

    A run record lists one environment per session (process) that worked on
    the seed; other results carry one environment.
    """
    sessions = result.get("sessions")
    found = []
    if isinstance(sessions, list):
        found = [
            session["environment"]
            for session in sessions
            if isinstance(session, dict)
            and isinstance(session.get("environment"), dict)
        ]
    if not found and isinstance(result.get("environment"), dict):
        found = [result["environment"]]
    return found


def _diff(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    flat_a, flat_b = _flatten(first), _flatten(second)
    rows = []
    for field in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(field) != flat_b.get(field):
            rows.append(
                {
                    "field": field,
                    "first": flat_a.get(field),
                    "second": flat_b.get(field),
                    "breaks_bitwise_identity": field not in NO_EFFECT_ON_BITS,
                }
            )
    return rows


def compare_environments(
    first: dict[str, Any], second: dict[str, Any], first_name: str, second_name: str
) -> dict[str, Any]:
    """Compare the environment fingerprints of two results.

    Returns:
        A dict with these keys. `differences`: one row per differing field,
        with both values and whether it can change bits. `mixed`: lines naming
        a result whose sessions ran in different environments. `same`: the
        fields that agree. `missing`: the results without a fingerprint.
        `bitwise_expected`: True only when both fingerprints exist, agree on
        every field that can change bits in every session, and have
        deterministic algorithms on.
    """
    envs_a = _fingerprints(first)
    envs_b = _fingerprints(second)
    missing = [
        name for name, envs in ((first_name, envs_a), (second_name, envs_b)) if not envs
    ]
    if missing:
        return {
            "differences": [],
            "mixed": [],
            "same": [],
            "missing": missing,
            "bitwise_expected": False,
        }
    mixed = []
    for name, envs in ((first_name, envs_a), (second_name, envs_b)):
        for index, env in enumerate(envs[1:], start=2):
            changed = [
                row["field"]
                for row in _diff(envs[0], env)
                if row["breaks_bitwise_identity"]
            ]
            if changed:
                mixed.append(
                    f"{name}: session {index} ran with other {', '.join(changed)} "
                    "than session 1 (resumed elsewhere)"
                )
    differences = _diff(envs_a[0], envs_b[0])
    differing = {row["field"] for row in differences}
    same = sorted(set(_flatten(envs_a[0])) - differing)
    deterministic = all(
        env.get("deterministic", {}).get("use_deterministic_algorithms") is True
        for env in envs_a + envs_b
    )
    return {
        "differences": differences,
        "mixed": mixed,
        "same": same,
        "missing": [],
        "bitwise_expected": deterministic
        and not mixed
        and not any(row["breaks_bitwise_identity"] for row in differences),
    }


def format_comparison(result: dict[str, Any]) -> str:
    """Return the text `benchmark compare` prints."""
    if result["comparable"]:
        lines = ["comparable: same store digests, protocol and extractor"]
    else:
        lines = ["NOT comparable:"]
        lines += [f"  {reason}" for reason in result["reasons"]]
    environment = result["environment"]
    if environment["missing"]:
        lines.append(
            "bitwise identity: unknown, no environment fingerprint in "
            + ", ".join(environment["missing"])
        )
        return "\n".join(lines)
    verdict = "expected" if environment["bitwise_expected"] else "NOT expected"
    lines.append(
        f"bitwise identity: {verdict} (needs the same environment fingerprint "
        "and deterministic mode)"
    )
    for row in environment["differences"]:
        effect = (
            "can change bits, not comparability"
            if row["breaks_bitwise_identity"]
            else "no effect on numbers"
        )
        lines.append(
            f"  {row['field']}: {str(row['first'])[:40]} vs "
            f"{str(row['second'])[:40]} ({effect})"
        )
    lines += [f"  {line}" for line in environment["mixed"]]
    if environment["same"]:
        lines.append(f"  same: {', '.join(environment['same'])}")
    return "\n".join(lines)
