"""Figures laid out like Figures 1-4 of Kurach et al. (2019).

One column per panel (a study spec, usually one dataset). The top row shows
the FIDs of each method's top 5 % of trained models as box plots with the
individual models as points; the bottom row shows each method's minimum
attainable FID against the budget of settings, the mean over simulated
orders as a line and one standard deviation around it as a band; a dot
marks where each method's grid settings end and its Bayesian ones begin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.fileio import atomic_path
from benchmark.study.analysis import MethodSummary


@dataclass(frozen=True)
class Panel:
    """One column of the figure: a title and the summaries of its methods."""

    title: str
    methods: list[MethodSummary]


def draw_figure(panels: list[Panel], title: str, paths: list[Path]) -> None:
    """Draw the figure and save it to every path (format from the suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    columns = len(panels)
    figure, axes = pyplot.subplots(
        2, columns, figsize=(6.0 * columns, 8.0), squeeze=False
    )
    colours = pyplot.get_cmap("tab10")
    for column, panel in enumerate(panels):
        _draw_distributions(axes[0][column], panel, colours)
        _draw_budgets(axes[1][column], panel, colours)
    figure.suptitle(title)
    figure.tight_layout()
    for path in paths:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=path.suffix.lstrip("."), dpi=150)
    pyplot.close(figure)


def _draw_distributions(axis, panel: Panel, colours) -> None:
    labels = [method.label for method in panel.methods]
    data = []
    for method in panel.methods:
        finite = method.top[np.isfinite(method.top)]
        data.append(finite)
    positions = np.arange(1, len(data) + 1)
    shown = [index for index, values in enumerate(data) if values.size]
    if shown:
        boxes = axis.boxplot(
            [data[index] for index in shown],
            positions=positions[shown],
            widths=0.6,
            showfliers=False,
            patch_artist=True,
        )
        for box, index in zip(boxes["boxes"], shown, strict=True):
            box.set_facecolor(colours(index % 10))
            box.set_alpha(0.35)
    for index, values in enumerate(data):
        if values.size:
            # Fixed random jitter, so that equal values stay visible and the
            # same data give the same picture.
            offsets = np.random.default_rng(index).uniform(-0.15, 0.15, values.size)
            axis.scatter(
                positions[index] + offsets,
                values,
                s=12,
                color=colours(index % 10),
                zorder=3,
            )
        else:
            axis.annotate(
                "no finite FID",
                (positions[index], 0.5),
                xycoords=("data", "axes fraction"),
                ha="center",
                rotation=90,
                fontsize=8,
            )
    axis.set_xticks(positions, labels, rotation=30, ha="right")
    axis.set_xlim(0.4, len(data) + 0.6)
    axis.set_ylabel("FID (top 5 % of models)")
    axis.set_title(panel.title)
    axis.grid(axis="y", alpha=0.3)


def _draw_budgets(axis, panel: Panel, colours) -> None:
    from matplotlib.ticker import MaxNLocator

    drawn = False
    for index, method in enumerate(panel.methods):
        curve = method.curve
        if not len(curve.mean):
            continue
        budgets = curve.budgets
        finite = np.isfinite(curve.mean)
        mean = np.where(finite, curve.mean, np.nan)
        std = np.where(finite, curve.std, np.nan)
        colour = colours(index % 10)
        axis.plot(budgets, mean, color=colour, label=method.label, linewidth=1.5)
        axis.fill_between(budgets, mean - std, mean + std, color=colour, alpha=0.2)
        if 0 < method.grid_settings < len(budgets):
            end = method.grid_settings - 1
            axis.plot(budgets[end], mean[end], "o", color=colour, markersize=4)
        drawn = drawn or bool(finite.any())
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("budget (settings tried)")
    axis.set_ylabel("minimum FID (mean over orders)")
    axis.grid(alpha=0.3)
    if drawn:
        axis.legend(fontsize=8)
    low, high = axis.get_ylim()
    if math.isfinite(low) and math.isfinite(high) and low == high:
        axis.set_ylim(low - 1.0, high + 1.0)
