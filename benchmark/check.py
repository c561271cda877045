"""`benchmark check`: hold a result's FID against its reference.

A result is a run folder (its `summary.json`), a `summary.json`, or the JSON
of `benchmark eval --split ... --out`. The reference comes from the result's
protocol (see `benchmark.references`):

* a summary of the named baseline, unmodified, is held against the baseline's
  published FIDs. It passes when its median best FID lies within the
  tolerance of any of them, because released models of one configuration
  differ by training run only. Published FIDs were measured on the official
  data, so the store must come from the official release with the complete
  reference split;
* a summary of a run with overrides (such as `--steps`) is held against a
  measured golden run of the same baseline, overrides and seeds;
* an eval result of a split is held against a measured real-vs-real floor of
  the same split and count.

Before any number is compared, the result must have been measured under the
reference's protocol name, version and settings, on a store with the
reference's split digests, and with an extractor file the reference accepts.
Otherwise the result is not comparable and no verdict is given.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from benchmark import specs
from benchmark.errors import UserError
from benchmark.fileio import read_json
from benchmark.references import MeasuredReference, load_references

PASS = "pass"
FAIL = "fail"
NOT_COMPARABLE = "not comparable"

# Source formats whose pixels are the official release (see benchmark.run).
OFFICIAL_FORMATS = ("official-archive", "official-folder")


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 15 else text


def read_result(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """Read a run folder's summary.json or a result JSON file."""
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"no run folder or result file at {str(path)!r}; give the folder of a "
            "`benchmark run baseline`, its summary.json, or the --out file of "
            "`benchmark eval`"
        )
    if path.is_dir():
        summary = path / "summary.json"
        if not summary.is_file():
            raise UserError(
                f"run folder {str(path)!r} has no summary.json; the run has not "
                "finished, so run `benchmark run baseline` again to complete it"
            )
        path = summary
    return read_json(path), path


def _protocol_reasons(result: dict[str, Any], references) -> list[str]:
    """List the ways the result's protocol differs from the references' one."""
    recorded = result.get("protocol") or {}
    reasons = []
    if recorded.get("name") != references.protocol:
        reasons.append(
            f"protocol name: {recorded.get('name')!r} vs {references.protocol!r}"
        )
    if recorded.get("version") != references.protocol_version:
        reasons.append(
            f"protocol version: {recorded.get('version')!r} vs "
            f"{references.protocol_version}"
        )
    spec = recorded.get("spec")
    packaged_file = specs.spec_directory("protocols") / f"{references.protocol}.toml"
    # A protocol that is not packaged (a test's own file) is checked by name
    # and version only.
    if not reasons and isinstance(spec, dict) and packaged_file.is_file():
        packaged = specs.as_dict(specs.load_protocol(references.protocol))
        # JSON stores tuples as lists, so compare through the same conversion.
        changed = specs.protocol_settings_changed(_jsonable(packaged), spec)
        if changed:
            reasons.append(
                "protocol settings differ from the packaged "
                f"{references.protocol} v{references.protocol_version} in "
                + ", ".join(changed)
            )
    return reasons


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _identity_reasons(
    result: dict[str, Any], reference: MeasuredReference
) -> list[str]:
    """List the differences in data and extractor from a measured reference."""
    reasons = []
    store = result.get("store") or {}
    if store.get("dataset") != reference.dataset:
        reasons.append(f"dataset: {store.get('dataset')!r} vs {reference.dataset!r}")
    digests = store.get("split_digests") or {}
    for split, expected in sorted(reference.split_digests.items()):
        if digests.get(split) != expected:
            reasons.append(
                f"{split} split digest: {_short(digests.get(split))} vs "
                f"{_short(expected)} (different images)"
            )
    extractor = (result.get("extractor") or {}).get("sha256")
    if extractor not in reference.extractor_sha256:
        accepted = ", ".join(_short(digest) for digest in reference.extractor_sha256)
        reasons.append(f"extractor sha256: {_short(extractor)} vs {accepted}")
    return reasons


def _official_store_reasons(result: dict[str, Any]) -> list[str]:
    """List why a store is not the official data published FIDs were measured on."""
    store = result.get("store") or {}
    reasons = []
    if store.get("source_format") not in OFFICIAL_FORMATS:
        reasons.append(
            f"store source {store.get('source_format')!r} is not the official "
            "release, and published FIDs were measured on official pixels"
        )
    if not store.get("reference_split"):
        reasons.append("store is partial, not the complete reference split")
    dataset = specs.load_dataset(store.get("dataset") or result["dataset"]["name"])
    digests = store.get("split_digests") or {}
    for split, expected in sorted(dataset.expected_digests.items()):
        if digests.get(split) != expected:
            reasons.append(
                f"{split} split digest: {_short(digests.get(split))} vs the "
                f"official {_short(expected)}"
            )
    return reasons


def _verdict(
    measured: float | None, reference_fid: float, tolerance: float
) -> tuple[str, float | None]:
    if measured is None or not math.isfinite(measured):
        return FAIL, None
    difference = measured - reference_fid
    return (PASS if abs(difference) <= tolerance else FAIL), difference


def _check_measured(
    result: dict[str, Any],
    candidates: list[MeasuredReference],
    measured: float | None,
    protocol_reasons: list[str],
) -> dict[str, Any]:
    """Hold `measured` against the first candidate whose identity matches."""
    attempts = []
    for reference in candidates:
        reasons = protocol_reasons + _identity_reasons(result, reference)
        if not reasons:
            verdict, difference = _verdict(measured, reference.fid, reference.tolerance)
            return {
                "verdict": verdict,
                "reference": dataclasses.asdict(reference),
                "reference_fid": reference.fid,
                "tolerance": reference.tolerance,
                "measured_fid": measured,
                "difference": difference,
                "reasons": [],
            }
        attempts.append((reference, reasons))
    reference, reasons = attempts[0]
    return {
        "verdict": NOT_COMPARABLE,
        "reference": dataclasses.asdict(reference),
        "reference_fid": reference.fid,
        "tolerance": reference.tolerance,
        "measured_fid": measured,
        "difference": None,
        "reasons": reasons,
    }


def _check_split(result: dict[str, Any], references) -> dict[str, Any]:
    sample = result.get("sample") or {}
    if sample.get("kind") != "split":
        raise UserError(
            "only eval results of a split (`benchmark eval --split`) have "
            "references; check a checkpoint through its run's summary.json"
        )
    dataset = result.get("dataset")
    candidates = [
        reference
        for reference in references.measured
        if reference.kind == "split"
        and reference.dataset == dataset
        and reference.split == sample.get("split")
        and reference.count == sample.get("count")
    ]
    if not candidates:
        known = [
            f"{r.name} ({r.dataset} {r.split} {r.count})"
            for r in references.measured
            if r.kind == "split"
        ]
        raise UserError(
            f"protocol {references.protocol!r} has no reference for {dataset} "
            f"{sample.get('split')} x {sample.get('count')}; known: "
            f"{', '.join(known) or 'none'}"
        )
    measured = (result.get("metrics") or {}).get("fid")
    return _check_measured(
        result, candidates, measured, _protocol_reasons(result, references)
    )


def _check_summary(result: dict[str, Any], references) -> dict[str, Any]:
    baseline = result.get("baseline")
    overrides = result.get("overrides") or {}
    measured = result.get("median_fid_best")
    protocol_reasons = _protocol_reasons(result, references)
    if overrides:
        candidates = [
            reference
            for reference in references.measured
            if reference.kind == "run"
            and reference.baseline == baseline
            and reference.overrides == overrides
            and list(reference.seeds) == list(result.get("seeds") or [])
        ]
        if not candidates:
            raise UserError(
                f"protocol {references.protocol!r} has no golden run of "
                f"{baseline} with overrides {overrides} and seeds "
                f"{result.get('seeds')}; only runs recorded in its references "
                "file or unmodified named baselines can be checked"
            )
        return _check_measured(result, candidates, measured, protocol_reasons)
    if not result.get("named_baseline"):
        because = "; ".join(result.get("not_named_because") or []) or "unknown"
        raise UserError(
            f"the run is not the named baseline {baseline!r} ({because}), so no "
            "published FID applies"
        )

    spec = specs.load_baseline(baseline)
    published = [
        entry for entry in spec.published if entry.protocol == references.protocol
    ]
    dataset = spec.dataset
    if not published:
        raise UserError(
            f"baseline {baseline!r} has no published FID under protocol "
            f"{references.protocol!r}"
        )
    if dataset not in references.published_tolerance:
        raise UserError(
            f"{references.path or 'the references file'} gives no published "
            f"tolerance for dataset {dataset!r}; add [published_tolerance.{dataset}]"
        )
    rule = references.published_tolerance[dataset]
    reasons = protocol_reasons + _official_store_reasons(result)
    extractor = (result.get("extractor") or {}).get("sha256")
    accepted = specs.load_protocol(references.protocol).extractor.sha256
    if extractor not in accepted:
        reasons.append(f"extractor sha256 {_short(extractor)} is not accepted")

    checks = []
    for entry in published:
        tolerance = rule.for_fid(entry.fid)
        verdict, difference = _verdict(measured, entry.fid, tolerance)
        checks.append(
            {
                "reference_fid": entry.fid,
                "source": entry.source,
                "tolerance": tolerance,
                "verdict": verdict,
                "difference": difference,
            }
        )
    best = min(
        checks,
        key=lambda check: (
            math.inf if check["difference"] is None else abs(check["difference"])
        ),
    )
    return {
        "verdict": NOT_COMPARABLE if reasons else best["verdict"],
        "reference": {
            "name": baseline,
            "kind": "published",
            "published": checks,
            "tolerance_rule": dataclasses.asdict(rule),
        },
        "reference_fid": best["reference_fid"],
        "tolerance": best["tolerance"],
        "measured_fid": measured,
        "difference": None if reasons else best["difference"],
        "reasons": reasons,
    }


def check_result(
    path: str | os.PathLike, references_file: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Compare a result's FID with its reference.

    Args:
        path: Run folder, summary.json, or `benchmark eval --out` JSON.
        references_file: References TOML to use instead of the packaged one
            of the result's protocol.

    Returns:
        `verdict` (PASS, FAIL or NOT_COMPARABLE), `reference`,
        `reference_fid`, `tolerance`, `measured_fid`, `difference` and
        `reasons` (why the result is not comparable), plus `file`.

    Raises:
        UserError: The file is not a result, or no reference applies to it.
    """
    result, file = read_result(path)
    protocol = (result.get("protocol") or {}).get("name")
    if not protocol:
        raise UserError(
            f"{str(file)!r} names no protocol; pass a run folder, its "
            "summary.json, or the JSON of `benchmark eval --out`"
        )
    references = load_references(protocol, references_file)
    if "median_fid_best" in result:
        outcome = _check_summary(result, references)
    elif "metrics" in result:
        outcome = _check_split(result, references)
    else:
        raise UserError(
            f"{str(file)!r} is neither a run summary nor an eval result; pass a "
            "run folder, its summary.json, or the JSON of `benchmark eval --out`"
        )
    return {**outcome, "file": str(file), "protocol": protocol}


def format_check(outcome: dict[str, Any]) -> str:
    """Return the reference, measured value, tolerance and verdict as text."""
    reference = outcome["reference"]
    measured = outcome["measured_fid"]
    lines = [
        f"result     {outcome['file']}",
        f"reference  {reference['name']} ({outcome['protocol']}): FID "
        f"{outcome['reference_fid']:.4f} +- {outcome['tolerance']:.4f}",
    ]
    if reference.get("kind") == "published":
        for check in reference["published"]:
            lines.append(
                f"           published {check['reference_fid']} ({check['source']})"
            )
        lines.append(f"           tolerance: {reference['tolerance_rule']['reason']}")
    else:
        lines.append(f"           source: {reference['source']}")
        lines.append(f"           tolerance: {reference['reason']}")
    lines.append(
        "measured   FID "
        + (f"{measured:.4f}" if measured is not None else "n/a (no finite FID)")
    )
    if outcome["difference"] is not None:
        lines.append(f"difference {outcome['difference']:+.4f}")
    if outcome["verdict"] == NOT_COMPARABLE:
        lines.append("verdict    NOT COMPARABLE:")
        lines.extend(f"             {reason}" for reason in outcome["reasons"])
    else:
        lines.append(f"verdict    {outcome['verdict'].upper()}")
    return "\n".join(lines)
