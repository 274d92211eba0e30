"""The quality figures of a leaderboard: ``delta`` (each solver cell's paired difference to the
best cell, the tables' marks) and ``bars`` (every metric, one dot-and-interval panel each)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from . import figaxes
from .figbase import (
    AXIS_UNITS,
    IDEAL,
    ROW_IN,
    Ctx,
    FigureRecord,
    axis_label,
    board_title,
    cell_name,
    ci_ends,
    dot,
    metric_label,
    new_figure,
    plain_title,
    row_xlabel,
    rows_axis,
    save_figure,
    text_width_in,
    value_ticks,
    wrap_to,
)
from .summary import CellSummary, Leaderboard

# ---------------------------------------------------------------- delta: the main comparison


def delta(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    """Paired Δ to the best cell, Bonferroni-adjusted intervals (the tables' marks), solvers
    only."""
    cells = sorted(
        (c for c in b.cells if not c.is_oracle and c.rank is not None and c.is_best is not None),
        key=lambda c: (c.rank, c.key),
    )
    if len(cells) < 2 or not any(c.is_best for c in cells):
        return None
    vals = np.array(
        [
            0.0 if c.is_best else (c.delta_best.mean if c.delta_best is not None else math.nan)
            for c in cells
        ]
    )
    ends = np.array([(math.nan, math.nan) if c.is_best else ci_ends(c.delta_best) for c in cells])
    fit = figaxes.fit(vals, ends[:, 0], ends[:, 1], nonneg=False, include=(0.0,))
    n = len(cells)
    fig = new_figure(ctx, 0.95 + ROW_IN * 1.3 * n)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1].astype(float)
    ax.axvline(0.0, color="0.35", linewidth=0.7, zorder=0)
    status = []
    for i, c in enumerate(cells):
        verdict = "best" if c.is_best else "tied" if c.tied_with_best else "worse"
        status.append(verdict)
        if i in fit.outside or not math.isfinite(vals[i]):
            continue
        kw = ctx.pal.kw(c.solver, c.preset, size=4.5)
        kw["fillstyle"] = "full"
        if verdict == "worse":
            kw["markerfacecolor"] = "white"
        dot(ax, vals[i], y[i], ends[i, 0], ends[i, 1], kw)
    figaxes.apply(ax, fit, "x")
    value_ticks(ax.xaxis, 4 if ctx.single else 6)
    figaxes.mark_outside(ax, fit, vals, y, [ctx.pal.color(c.solver) for c in cells])
    best = next(i for i, c in enumerate(cells) if c.is_best)
    rows_axis(ax, y, [cell_name(c) for c in cells], frozenset({best}))
    _verdict_labels(ax, y, status)
    level = next((c.delta_level for c in cells if math.isfinite(c.delta_level)), math.nan)
    row_xlabel(ax, _delta_xlabel(b.primary, level), [cell_name(c) for c in cells], ctx,
               right_in=0.4)
    ax.set_title(board_title(b, ctx))
    return save_figure(fig, ctx, "delta", b,
                       f"Paired difference to the best: {plain_title(b, ctx)}",
                       _delta_caption(b.primary, level, n))


def _verdict_labels(ax, y, status: list[str]) -> None:
    """The verdict right of each row (axes x, data y): best in bold, worse in grey."""
    for yy, verdict in zip(y, status, strict=True):
        ax.text(1.02, yy, verdict, transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontweight="bold" if verdict == "best" else "normal",
                color="0.45" if verdict == "worse" else "0.1")


def _delta_xlabel(primary: str, level: float) -> str:
    unit = AXIS_UNITS.get(primary, "")
    return (f"Δ {metric_label(primary)} (cell − best)" + (f" [{unit}]" if unit else "") + "\n"
            + (f"{level * 100:.3g} % paired intervals (Bonferroni)" if math.isfinite(level)
               else "paired intervals"))


def _delta_caption(primary: str, level: float, n: int) -> str:
    lvl = f"{level * 100:.3g} %" if math.isfinite(level) else "adjusted"
    return ("Each solver cell's mean paired difference to the best cell (cell − best on the "
            f"image means of {primary}, over the images both have) with its {lvl} interval: "
            f"Bonferroni over the {n - 1} comparisons with the best, the interval the tables' "
            "marks are read from. Filled marker: the best (bold) or tied with it (interval "
            "reaches 0; underlined in the tables); hollow: significantly worse. Oracles are "
            "exact references and are not compared. Cells far outside the others are written at "
            "the axis edge with their value.")


# ---------------------------------------------------------------- bars: every metric


def _metric_panels(b: Leaderboard) -> list[str]:
    return [m for m in b.metrics if m not in b.unavailable and any(m in c.metrics for c in b.cells)]


def _panel(ax, m: str, cells: list[CellSummary], y, ctx: Ctx, label_in: float) -> None:
    cis = [c.metrics.get(m) for c in cells]
    means = np.array([ci.mean if ci is not None else math.nan for ci in cis], dtype=float)
    ends = np.array([ci_ends(ci) for ci in cis])
    fit = figaxes.fit(
        means, ends[:, 0], ends[:, 1], metric=m, include=(IDEAL[m],) if m in IDEAL else ()
    )
    for i, c in enumerate(cells):
        if not math.isfinite(means[i]) or i in fit.outside:
            continue
        dot(ax, means[i], y[i], ends[i, 0], ends[i, 1], ctx.pal.kw(c.solver, c.preset))
    if m in IDEAL:
        ax.axvline(IDEAL[m], color="0.4", linewidth=0.7, linestyle=":", zorder=0)
    figaxes.apply(ax, fit, "x", numticks=3 if ctx.single else 4)
    if not fit.log:
        value_ticks(ax.xaxis, 3 if ctx.single else 4)
    figaxes.mark_outside(ax, fit, means, y, [ctx.pal.color(c.solver) for c in cells])
    size = 6.5 if ctx.single else plt.rcParams["axes.labelsize"]
    ax.set_xlabel(
        "\n".join(
            wrap_to(line, label_in, size, max_lines=2)
            for line in axis_label(m, wrap=True).split("\n")
        ),
        fontsize=size,
    )


def bars(b: Leaderboard, ctx: Ctx) -> list[FigureRecord]:
    """Dot-and-interval panels, one per metric: each cell's mean and its image-level 95 %
    interval."""
    ms = _metric_panels(b)
    cells = [c for c in b.cells if c.n_ok]
    if not ms or not cells:
        return []
    ncol = min(2 if ctx.single else 4, len(ms))
    row_h = 0.5 + ROW_IN * len(cells)
    rows_per_file = max(1, int((ctx.max_height - 0.3) // row_h))
    per_file = ncol * rows_per_file
    groups = [ms[i : i + per_file] for i in range(0, len(ms), per_file)]
    y = np.arange(len(cells))[::-1].astype(float)
    names = [cell_name(c) for c in cells]
    name_in = max(text_width_in(n, plt.rcParams["ytick.labelsize"]) for n in names)
    label_in = (ctx.width - name_in - 0.15) / ncol - 0.1  # the width of one panel, about
    recs = []
    for part, group in enumerate(groups, start=1):
        nrow = math.ceil(len(group) / ncol)
        fig = new_figure(ctx, 0.3 + row_h * nrow)
        axes = fig.subplots(nrow, ncol, squeeze=False, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k >= len(group):
                ax.set_visible(False)
                continue
            _panel(ax, group[k], cells, y, ctx, label_in)
            rows_axis(ax, y, names if k % ncol == 0 else None)
        part_note = f" ({part}/{len(groups)})" if len(groups) > 1 else ""
        fig.suptitle(board_title(b, ctx) + part_note)
        recs.append(
            save_figure(
                fig,
                ctx,
                "bars",
                b,
                f"Metrics: {plain_title(b, ctx)}{part_note}",
                "Mean per cell with its 95 % interval over images (seeds averaged per image): "
                "Student-t for "
                "PSNR, SSIM and consistency, a bootstrap for non-negative metrics. These intervals "
                "are not "
                "paired; the paired comparison is the Δ-to-best figure. Oracles: grey, hollow "
                "markers; "
                "dotted line: the ideal value; a log axis where the values span more than two "
                "decades; "
                "cells far outside the others are written at the axis edge with their value.",
                part,
            )
        )
    return recs
