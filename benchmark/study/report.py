"""`benchmark study report`: markdown summary, CSV of all trials, figures.

Files written to the report folder:

    summary.md    per panel and method: trials by status, settings, best
                  setting, top-5 % FIDs, the budget curve at a few budgets
    trials.csv    one row per trial of every panel (unfinished ones too)
    figure.png    the figure at 150 dpi (see benchmark.study.figures)
    figure.pdf    the same figure as vector graphics
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import UserError
from benchmark.fileio import atomic_write_bytes, ensure_directory, sha256_file
from benchmark.study.analysis import MethodSummary, summarise_method
from benchmark.study.figures import Panel, draw_figure
from benchmark.study.spec import StudySpec
from benchmark.study.storage import StudyStorage

CSV_COLUMNS = (
    "study",
    "method",
    "phase",
    "round",
    "position",
    "key",
    "lr",
    "beta1",
    "beta2",
    "n_disc",
    "penalty_weight",
    "seed",
    "status",
    "fid",
    "fid_step",
    "fid_final",
    "kid_final",
    "diverged_step",
    "error",
    "seconds",
    "host",
    "threads",
    "started_utc",
    "finished_utc",
    "run_dir",
)

# Budgets listed in the summary table (those beyond a method's settings are skipped).
SUMMARY_BUDGETS = (1, 5, 10, 12, 24, 50, 100, 144)


def _number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def summarise_study(spec: StudySpec, storage: StudyStorage) -> list[MethodSummary]:
    """Return the summary of every method of a stored study."""
    trials = storage.trials()
    if not trials:
        raise UserError(
            f"no trials of study {spec.name!r} in {storage.url!r}; run "
            f"`benchmark study run {spec.name}` first or pass the right --out/--storage"
        )
    return [
        summarise_method(
            method.name,
            method.label,
            trials,
            spec.top_fraction,
            spec.budget_simulations,
            spec.seed,
        )
        for method in spec.methods
    ]


def trials_csv(rows: list[dict[str, Any]]) -> str:
    """Return the trials as CSV text with the columns of CSV_COLUMNS."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key) for key in CSV_COLUMNS})
    return buffer.getvalue()


def _method_lines(spec: StudySpec, summary: MethodSummary) -> list[str]:
    finite = summary.top[np.isfinite(summary.top)]
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items()))
    best = summary.best
    if best is None:
        best_text = "none with a finite median"
    else:
        values = best.setting
        best_text = (
            f"{_number(best.median_fid)} ({best.phase} round {best.round}: lr "
            f"{values.lr:.3g}, beta1 {values.beta1:.3g}, beta2 {values.beta2:.3g}, "
            f"n_disc {values.n_disc}"
            + (
                f", lambda {values.penalty_weight:.3g}"
                if spec.method(summary.method).penalty != "none"
                else ""
            )
            + ")"
        )
    top_text = (
        f"{finite.size} of {summary.top.size} finite; median "
        f"{_number(float(np.median(finite)))}, range {_number(float(finite.min()))}"
        f"-{_number(float(finite.max()))}"
        if finite.size
        else f"no finite FID among {summary.top.size}"
    )
    return [
        f"| {summary.label} | {summary.trials} ({statuses}) | "
        f"{summary.grid_settings} + {summary.bayesian_settings} | {best_text} | "
        f"{top_text} |"
    ]


def _budget_lines(summaries: list[MethodSummary]) -> list[str]:
    longest = max((len(s.curve.mean) for s in summaries), default=0)
    budgets = [k for k in SUMMARY_BUDGETS if k <= longest]
    if longest and longest not in budgets:
        budgets.append(longest)
    if not budgets:
        return ["No finished settings yet."]
    lines = [
        "| method | " + " | ".join(f"k = {k}" for k in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for summary in summaries:
        cells = []
        for k in budgets:
            if k > len(summary.curve.mean):
                cells.append("")
                continue
            mean = float(summary.curve.mean[k - 1])
            std = float(summary.curve.std[k - 1])
            cells.append(f"{_number(mean)} ± {_number(std)}")
        lines.append(f"| {summary.label} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(
    title: str,
    panels: list[tuple[StudySpec, str, list[MethodSummary]]],
) -> str:
    """Return the markdown summary of one or more panels."""
    lines = [f"# {title}", ""]
    for spec, url, summaries in panels:
        protocol = spec.load_protocol()
        counts = protocol.for_dataset(spec.dataset)
        lines += [
            f"## {spec.name}: {spec.description}",
            "",
            f"- spec `{spec.path}` (sha256 {sha256_file(spec.path)[:12]}), "
            f"version {spec.version}; database `{url}`",
            f"- dataset {spec.dataset}, protocol {protocol.name} v{protocol.version} "
            f"({counts.real_count} {counts.real_split} images vs "
            f"{counts.fake_count} generated), {spec.steps} steps at batch "
            f"{spec.batch_size}, {spec.seeds} seeds per setting",
            f"- a trial's FID is its lowest over evaluated checkpoints; a "
            f"setting's is the median over seeds (failed seeds count as "
            f"infinite); top {spec.top_fraction:.0%} of trials; budget curves "
            f"are means ± standard deviation over {spec.budget_simulations} "
            f"orders (grid settings first), seed {spec.seed}",
            "",
            "| method | trials | settings (grid + Bayesian) | best setting: median FID "
            f"| top {spec.top_fraction:.0%} FIDs |",
            "|---|---|---|---|---|",
        ]
        for summary in summaries:
            lines += _method_lines(spec, summary)
        lines += ["", "Minimum attainable FID for a budget of k settings:", ""]
        lines += _budget_lines(summaries)
        lines.append("")
    return "\n".join(lines)


def write_report(
    entries: list[tuple[StudySpec, str]], report_dir: Path
) -> dict[str, Any]:
    """Write summary.md, trials.csv, figure.png and figure.pdf for the panels.

    Args:
        entries: (spec, storage URL) for each panel, in column order.
        report_dir: the output folder.

    Returns:
        The paths written and the per-panel trial counts.
    """
    panels = []
    rows: list[dict[str, Any]] = []
    for spec, url in entries:
        storage = StudyStorage(url, spec.name)
        try:
            summaries = summarise_study(spec, storage)
            rows += [{"study": spec.name, **trial} for trial in storage.trials()]
        finally:
            storage.close()
        panels.append((spec, url, summaries))
    figures = {spec.figure for spec, _ in entries}
    title = (
        f"Figure {figures.pop()}"
        if len(figures) == 1
        else "Studies " + ", ".join(spec.name for spec, _ in entries)
    )
    ensure_directory(report_dir)
    summary_path = report_dir / "summary.md"
    csv_path = report_dir / "trials.csv"
    figure_paths = [report_dir / "figure.png", report_dir / "figure.pdf"]
    atomic_write_bytes(summary_path, summary_markdown(title, panels).encode("utf-8"))
    atomic_write_bytes(csv_path, trials_csv(rows).encode("utf-8"))
    draw_figure(
        [
            Panel(f"{spec.name} ({spec.dataset})", summaries)
            for spec, _, summaries in panels
        ],
        title,
        figure_paths,
    )
    return {
        "summary": str(summary_path),
        "trials_csv": str(csv_path),
        "figures": [str(path) for path in figure_paths],
        "trials": {
            spec.name: sum(s.trials for s in summaries) for spec, _, summaries in panels
        },
    }
