"""Paper figures of a run (matplotlib, Agg backend), each written as PDF and PNG at a fixed page size.

Per leaderboard (dataset × task):

* ``delta``    the main comparison: each solver cell's paired difference to the board's best cell
  (``delta_best``, cell − best on image means) with the Bonferroni-adjusted interval the table's
  marks are read from; best / tied / worse as in the tables; oracles left out;
* ``bars``     every metric, one panel each: each cell's mean with its (unpaired, image-level)
  95 % interval, oracles hollow grey; at single-column width split into files of ≤ 4 panels;
* ``pareto``   quality (primary metric) versus s/image on a log axis, with the Pareto front;
* ``grid``     sample grid: truth | measurement | cells (at single column: the best, the
  reference and VML-MAP), optional zoom insets at 3× under the images;
* ``nfe``      primary metric versus cost in forward-equivalents (NFE + VJP, as the matched-cost
  tables count it), only when a solver ran at two budgets or more;
* ``memory``   peak GPU memory per cell (skipped with a note when every value is NULL, e.g. CPU);
* ``dist_to_map`` distribution of the distance to the exact MAP (analytic priors only);

and once per run ``cd``, the critical-difference diagram (:mod:`.cd`).

Every figure is drawn at double-column width (6.8 in, ``<stem>.pdf|png``) and single-column width
(3.3 in, ≤ 4.5 in tall, ``<stem>__col1.pdf|png``); the figure size is the page size (no tight
bounding box). Text is ≥ 6 pt. Value axes follow :mod:`.figaxes` (log axis over > 2 decades, far
outside cells marked at the edge). Styles: :mod:`.style`; ``figures.json`` records every file and
each solver's colour and marker.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..fsafety import atomic_write_bytes
from . import escape, figaxes
from .data import RunData
from .names import solver_name, task_names_of_run
from .pixels import ImageTooLarge, read_image
from .stats import direction
from .style import MIN_FONT_PT, RC, Palette, is_oracle
from .summary import CellSummary, Leaderboard
from .tables import DISPLAY


@dataclass
class FigureRecord:
    kind: str
    title: str
    caption: str
    png: Path
    pdf: Path
    width_in: float = 6.8                 # the column width it was drawn for (inches)
    axis_labels: tuple = ()               # (xlabel, ylabel) of every visible axes, for checks
    height_in: float = 0.0                # the page height (inches)


# Journal column widths (inches): every figure is drawn once for each; the single-column files
# carry the suffix ``__col1`` and are at most MAX_SINGLE_HEIGHT_IN tall.
DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN = 6.8, 3.3
MAX_SINGLE_HEIGHT_IN, MAX_DOUBLE_HEIGHT_IN = 4.5, 8.5
ZOOM_MAGNIFICATION = 3

Inspect = Callable[[object, str], None]


@dataclass
class Ctx:
    """What every figure of one width needs: the width, the styles, where files go."""

    width: float
    pal: Palette
    out_dir: Path
    task_names: dict[str, str] = field(default_factory=dict)
    formats: tuple[str, ...] = ("png", "pdf")
    inspect: Inspect | None = None
    refused: list[str] = field(default_factory=list)   # images over the pixel cap

    @property
    def single(self) -> bool:
        return self.width < 5.0

    @property
    def suffix(self) -> str:
        return "__col1" if self.single else ""

    @property
    def max_height(self) -> float:
        return MAX_SINGLE_HEIGHT_IN if self.single else MAX_DOUBLE_HEIGHT_IN


# ---------------------------------------------------------------- names, labels, text fitting

# Axis units of each metric (docs/metrics.md); the ideal value gets a reference line.
AXIS_UNITS: dict[str, str] = {
    "psnr": "dB", "ssim": "unitless", "lpips": "unitless", "mse": "pixel units²",
    "consistency": "residual / noise level", "dist_to_map": "model units, RMS", "rel_dist_to_map": "ratio",
    "logpost_gap": "nats", "err_post_mean": "model units, RMS", "seconds": "s",
}
IDEAL: dict[str, float] = {"consistency": 1.0}


def _metric_label(m: str) -> str:
    return DISPLAY.get(m, m) + {1: " ↑", -1: " ↓"}.get(direction(m), "")


def axis_label(m: str, wrap: bool = False) -> str:
    """``"PSNR ↑ [dB]"``: the metric, its direction and its unit (the unit on a second line with
    ``wrap``, for panels side by side)."""
    unit = AXIS_UNITS.get(m, "")
    return _metric_label(m) + (("\n" if wrap else " ") + f"[{unit}]" if unit else "")


def cell_name(c: CellSummary) -> str:
    """A cell's printed name: the solver's display name, plus the preset unless ``default``."""
    name = solver_name(c.solver)
    return escape.mpl(name if str(c.preset) == "default" else f"{name} ({c.preset})")


def plain_title(b: Leaderboard, ctx: Ctx) -> str:
    """``"Inpainting (50 % missing) · crops32"``: the task's display name and the dataset."""
    return f"{ctx.task_names.get(b.task, b.task)} · {b.dataset}"


def board_title(b: Leaderboard, ctx: Ctx) -> str:
    return escape.mpl(plain_title(b, ctx))


TEXT_WIDTH_MARGIN = 1.1   # the renderer's hinted text is up to ~6 % wider than the outline measure


def text_width_in(s: str, size: float) -> float:
    """Width of ``s`` at ``size`` points in the figures' font, in inches (with a safety margin)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    w, _, _ = TextToPath().get_text_width_height_descent(s, FontProperties(size=size), ismath=False)
    return TEXT_WIDTH_MARGIN * w / 72.0


def _fill(tokens: list[str], width_in: float, size: float, lines: list[str], cur: str) -> str:
    """Greedy line filling of ``tokens`` into ``lines``; returns the unfinished last line."""
    for tok in tokens:
        if text_width_in((cur + tok).strip(), size) <= width_in:
            cur += tok
            continue
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
        if text_width_in(tok.strip(), size) <= width_in:
            cur = tok
            continue
        parts = [t for t in re.split(r"(?<=[\-_/])", tok) if t]
        if len(parts) > 1:                       # a word too wide: after its hyphens, underscores, slashes
            cur = _fill(parts, width_in, size, lines, "")
            continue
        for ch in tok:                           # one piece too wide: by characters
            if cur and text_width_in((cur + ch).strip(), size) > width_in:
                lines.append(cur.strip())
                cur = ""
            cur += ch
    return cur


def wrap_to(s: str, width_in: float, size: float, max_lines: int = 3) -> str:
    """``s`` broken into lines no wider than ``width_in`` at ``size`` pt: at spaces; a word wider
    than the line after its hyphens, underscores or slashes, then by characters; at most
    ``max_lines`` (the last one cut with "…")."""
    lines: list[str] = []
    cur = _fill([t for t in re.split(r"(?<=\s)", s) if t], width_in, size, lines, "")
    if cur.strip():
        lines.append(cur.strip())
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and text_width_in(last + "…", size) > width_in:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last + "…"]
    return "\n".join(lines) or s


def _value_ticks(axis, nbins: int) -> None:
    """Few linear ticks with short labels (``0.0025``, ``20``, ``1e-08``): no offset text."""
    axis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: figaxes.short_number(float(f"{v:.3g}")) if abs(v) > 1e-12
                                           else "0"))


def _ci_ends(ci) -> tuple[float, float]:
    if ci is None or not math.isfinite(ci.half_width):
        return math.nan, math.nan
    return ci.low, ci.high


# ---------------------------------------------------------------- saving

def _stem(kind: str, b: Leaderboard | None, ctx: Ctx, part: int = 1) -> str:
    stem = kind if b is None else f"{kind}__{escape.slug(b.dataset)}__{escape.slug(b.task)}"
    return stem + (f"__part{part}" if part > 1 else "") + ctx.suffix


def _save(fig, ctx: Ctx, kind: str, b: Leaderboard | None, title: str, caption: str, part: int = 1) -> FigureRecord:
    """Write ``fig`` as PNG and PDF (each rendered in memory, then written atomically) at its own
    size, and close it."""
    stem = _stem(kind, b, ctx, part)
    if ctx.inspect is not None:
        ctx.inspect(fig, stem)
    labels = tuple((ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes
                   if ax.get_visible() and (ax.get_xlabel() or ax.get_ylabel()))
    png, pdf = ctx.out_dir / f"{stem}.png", ctx.out_dir / f"{stem}.pdf"
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        if fmt in ctx.formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            atomic_write_bytes(path, buf.getvalue())
            fig.set_layout_engine("none")   # laid out once: the second format reuses the positions
    h = float(fig.get_size_inches()[1])
    plt.close(fig)
    return FigureRecord(kind, title, caption, png, pdf, ctx.width, labels, round(h, 3))


def _figure(ctx: Ctx, height: float, layout: str | None = "constrained"):
    return plt.figure(figsize=(ctx.width, min(height, ctx.max_height)), layout=layout)


def _rows_axis(ax, y, names: list[str] | None, bold: frozenset[int] = frozenset()) -> None:
    """Rows of cells on y (``names`` None: no labels, for panels right of the first)."""
    if names is None:
        ax.tick_params(axis="y", labelleft=False)
    else:
        ax.set_yticks(y, names)
        for i, t in enumerate(ax.get_yticklabels()):
            if i in bold:
                t.set_fontweight("bold")
    ax.set_ylim(min(y) - 0.7, max(y) + 0.7)
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", left=False, right=False)   # labels only: tick marks not drawn at all


ROW_IN = 0.125   # vertical space per cell row in the dot-and-interval figures


def _row_xlabel(ax, text: str, names: list[str], ctx: Ctx, right_in: float = 0.0) -> None:
    """The x label of an axes with cell names left of it (and ``right_in`` inches of text right
    of it), each line wrapped to the axes' width so that it stays on the page."""
    size = plt.rcParams["axes.labelsize"]
    name_in = max((text_width_in(n, plt.rcParams["ytick.labelsize"]) for n in names), default=0.0)
    width = max(ctx.width - name_in - right_in - 0.25, 1.0)
    lines = []
    for line in text.split("\n"):     # too wide: the unit goes to its own line first
        lines += line.replace(" [", "\n[").split("\n") if text_width_in(line, size) > width else [line]
    ax.set_xlabel("\n".join(wrap_to(line, width, size, max_lines=2) for line in lines))


def _dot(ax, x: float, y: float, lo: float, hi: float, kw: dict, along: str = "x"):
    """A cell's marker at (x, y) and its interval [lo, hi] along ``along`` as one line with short
    end caps (two artists per cell: much cheaper to draw than ``errorbar``'s container). Returns
    the marker's line (a legend handle)."""
    if math.isfinite(lo) and math.isfinite(hi):
        xs, ys = ([lo, hi], [y, y]) if along == "x" else ([x, x], [lo, hi])
        ax.plot(xs, ys, color=kw["color"], linewidth=0.9, marker="|" if along == "x" else "_", markersize=3,
                markeredgewidth=0.8, solid_capstyle="butt")
    return ax.plot([x], [y], linestyle="none", clip_on=False, **kw)[0]   # inside the limits: never cut


# ---------------------------------------------------------------- delta: the main comparison

def delta(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    """Paired Δ to the best cell, Bonferroni-adjusted intervals (the tables' marks), solvers only."""
    cells = sorted((c for c in b.cells if not c.is_oracle and c.rank is not None and c.is_best is not None),
                   key=lambda c: (c.rank, c.key))
    if len(cells) < 2 or not any(c.is_best for c in cells):
        return None
    vals = np.array([0.0 if c.is_best else (c.delta_best.mean if c.delta_best is not None else math.nan)
                     for c in cells])
    ends = np.array([(math.nan, math.nan) if c.is_best else _ci_ends(c.delta_best) for c in cells])
    fit = figaxes.fit(vals, ends[:, 0], ends[:, 1], nonneg=False, include=(0.0,))
    n = len(cells)
    fig = _figure(ctx, 0.95 + ROW_IN * 1.3 * n)
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
        _dot(ax, vals[i], y[i], ends[i, 0], ends[i, 1], kw)
    figaxes.apply(ax, fit, "x")
    _value_ticks(ax.xaxis, 4 if ctx.single else 6)
    figaxes.mark_outside(ax, fit, vals, y, [ctx.pal.color(c.solver) for c in cells])
    best = next(i for i, c in enumerate(cells) if c.is_best)
    _rows_axis(ax, y, [cell_name(c) for c in cells], frozenset({best}))
    for yy, verdict in zip(y, status, strict=True):   # the verdict right of each row (axes x, data y)
        ax.text(1.02, yy, verdict, transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontweight="bold" if verdict == "best" else "normal", color="0.45" if verdict == "worse" else "0.1")
    level = next((c.delta_level for c in cells if math.isfinite(c.delta_level)), math.nan)
    unit = AXIS_UNITS.get(b.primary, "")
    _row_xlabel(ax, f"Δ {_metric_label(b.primary)} (cell − best)" + (f" [{unit}]" if unit else "") + "\n"
                + (f"{level * 100:.3g} % paired intervals (Bonferroni)" if math.isfinite(level) else "paired intervals"),
                [cell_name(c) for c in cells], ctx, right_in=0.4)
    ax.set_title(board_title(b, ctx))
    lvl = f"{level * 100:.3g} %" if math.isfinite(level) else "adjusted"
    return _save(fig, ctx, "delta", b, f"Paired difference to the best: {plain_title(b, ctx)}",
                 f"Each solver cell's mean paired difference to the best cell (cell − best on the image means of "
                 f"{b.primary}, over the images both have) with its {lvl} interval: Bonferroni over the {n - 1} "
                 "comparisons with the best, the interval the tables' marks are read from. Filled marker: the best "
                 "(bold) or tied with it (interval reaches 0; underlined in the tables); hollow: significantly "
                 "worse. Oracles are exact references and are not compared. Cells far outside the others are "
                 "written at the axis edge with their value.")


# ---------------------------------------------------------------- bars: every metric

def _metric_panels(b: Leaderboard) -> list[str]:
    return [m for m in b.metrics if m not in b.unavailable and any(m in c.metrics for c in b.cells)]


def _panel(ax, m: str, cells: list[CellSummary], y, ctx: Ctx, label_in: float) -> None:
    cis = [c.metrics.get(m) for c in cells]
    means = np.array([ci.mean if ci is not None else math.nan for ci in cis], dtype=float)
    ends = np.array([_ci_ends(ci) for ci in cis])
    fit = figaxes.fit(means, ends[:, 0], ends[:, 1], metric=m,
                      include=(IDEAL[m],) if m in IDEAL else ())
    for i, c in enumerate(cells):
        if not math.isfinite(means[i]) or i in fit.outside:
            continue
        _dot(ax, means[i], y[i], ends[i, 0], ends[i, 1], ctx.pal.kw(c.solver, c.preset))
    if m in IDEAL:
        ax.axvline(IDEAL[m], color="0.4", linewidth=0.7, linestyle=":", zorder=0)
    figaxes.apply(ax, fit, "x", numticks=3 if ctx.single else 4)
    if not fit.log:
        _value_ticks(ax.xaxis, 3 if ctx.single else 4)
    figaxes.mark_outside(ax, fit, means, y, [ctx.pal.color(c.solver) for c in cells])
    size = 6.5 if ctx.single else plt.rcParams["axes.labelsize"]
    ax.set_xlabel("\n".join(wrap_to(line, label_in, size, max_lines=2) for line in axis_label(m, wrap=True).split("\n")),
                  fontsize=size)


def bars(b: Leaderboard, ctx: Ctx) -> list[FigureRecord]:
    """Dot-and-interval panels, one per metric: each cell's mean and its image-level 95 % interval."""
    ms = _metric_panels(b)
    cells = [c for c in b.cells if c.n_ok]
    if not ms or not cells:
        return []
    ncol = min(2 if ctx.single else 4, len(ms))
    row_h = 0.5 + ROW_IN * len(cells)
    rows_per_file = max(1, int((ctx.max_height - 0.3) // row_h))
    per_file = ncol * rows_per_file
    groups = [ms[i:i + per_file] for i in range(0, len(ms), per_file)]
    y = np.arange(len(cells))[::-1].astype(float)
    names = [cell_name(c) for c in cells]
    name_in = max(text_width_in(n, plt.rcParams["ytick.labelsize"]) for n in names)
    label_in = (ctx.width - name_in - 0.15) / ncol - 0.1    # the width of one panel, about
    recs = []
    for part, group in enumerate(groups, start=1):
        nrow = math.ceil(len(group) / ncol)
        fig = _figure(ctx, 0.3 + row_h * nrow)
        axes = fig.subplots(nrow, ncol, squeeze=False, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k >= len(group):
                ax.set_visible(False)
                continue
            _panel(ax, group[k], cells, y, ctx, label_in)
            _rows_axis(ax, y, names if k % ncol == 0 else None)
        part_note = f" ({part}/{len(groups)})" if len(groups) > 1 else ""
        fig.suptitle(board_title(b, ctx) + part_note)
        recs.append(_save(fig, ctx, "bars", b, f"Metrics: {plain_title(b, ctx)}{part_note}",
                          "Mean per cell with its 95 % interval over images (seeds averaged per image): Student-t for "
                          "PSNR, SSIM and consistency, a bootstrap for non-negative metrics. These intervals are not "
                          "paired; the paired comparison is the Δ-to-best figure. Oracles: grey, hollow markers; "
                          "dotted line: the ideal value; a log axis where the values span more than two decades; "
                          "cells far outside the others are written at the axis edge with their value.", part))
    return recs


# ---------------------------------------------------------------- pareto and nfe

def _legend(fig, ax, ctx: Ctx, handles: dict) -> None:
    """Legend below the axes (single column, two columns of entries) or right of it (double)."""
    if not handles:
        return
    if ctx.single:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=2, frameon=False,
                   handletextpad=0.3, columnspacing=0.8)
    else:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper", frameon=False, handletextpad=0.3)


def _legend_height(n: int, ctx: Ctx) -> float:
    return 0.14 * math.ceil(n / 2) + 0.1 if ctx.single else 0.0


def pareto(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    pts = [c for c in b.cells if b.primary in c.metrics and c.seconds.n and c.seconds.mean > 0]
    if not pts:
        return None
    d = direction(b.primary) or 1
    means = np.array([c.metrics[b.primary].mean for c in pts])
    ends = np.array([_ci_ends(c.metrics[b.primary]) for c in pts])
    fit = figaxes.fit(means, ends[:, 0], ends[:, 1], metric=b.primary)
    fig = _figure(ctx, (2.4 if ctx.single else 3.0) + _legend_height(len(pts), ctx))
    ax = fig.add_subplot()
    handles = {}
    for i, c in enumerate(pts):
        if i in fit.outside:
            continue
        handles[cell_name(c)] = _dot(ax, c.seconds.mean, means[i], ends[i, 0], ends[i, 1],
                                     ctx.pal.kw(c.solver, c.preset), along="y")
    front, best = [], -math.inf   # Pareto front of the solvers: sorted by time, better than every faster one
    for c in sorted((c for c in pts if not c.is_oracle), key=lambda c: (c.seconds.mean, -d * c.metrics[b.primary].mean)):
        v = d * c.metrics[b.primary].mean
        if v > best:
            front.append(c)
            best = v
    if len(front) > 1:
        ax.step([c.seconds.mean for c in front], [c.metrics[b.primary].mean for c in front], where="post",
                color="0.5", linestyle="--", linewidth=0.8, zorder=0)
    xs = np.array([c.seconds.mean for c in pts])
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 1.6, xs.max() * 1.6)
    figaxes.plain_log_ticks(ax.xaxis)
    figaxes.apply(ax, fit, "y")
    if not fit.log:
        _value_ticks(ax.yaxis, 5)
    figaxes.mark_outside(ax, fit, means, xs, [ctx.pal.color(c.solver) for c in pts], horizontal=False)
    for i in fit.outside:
        handles[cell_name(pts[i]) + " (off axis)"] = ax.plot([], [], linestyle="none",
                                                             **ctx.pal.kw(pts[i].solver, pts[i].preset))[0]
    ax.set_xlabel("time per image [s] (log scale)")
    ax.set_ylabel(axis_label(b.primary) + ", mean and 95 % CI")
    ax.set_title(board_title(b, ctx))
    _legend(fig, ax, ctx, handles)
    return _save(fig, ctx, "pareto", b, f"Quality vs time: {plain_title(b, ctx)}",
                 f"{b.primary} (mean and 95 % interval over images) against seconds per image (log axis); the "
                 "dashed line is the Pareto front (no other cell is both faster and better).")


def cost_of(c: CellSummary) -> float:
    """A cell's cost per image in forward-equivalents, as the matched-cost tables count it
    (:func:`.matched.cost`: NFE + VJP, a VJP counted as one forward pass; NaN without NFE)."""
    from .matched import cost

    return cost(c) if math.isfinite(c.nfe) else math.nan


def nfe_curves(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    """Quality against cost, when some solver ran at two budgets or more."""
    by: dict[tuple[str, str], list[CellSummary]] = {}
    for c in b.cells:
        if b.primary in c.metrics and math.isfinite(cost_of(c)) and cost_of(c) > 0:
            by.setdefault((c.solver, c.prior), []).append(c)
    if not any(len({round(cost_of(c), 6) for c in cs}) >= 2 for cs in by.values()):
        return None
    curves = {k: sorted(v, key=cost_of) for k, v in by.items()}
    fig = _figure(ctx, (2.4 if ctx.single else 3.0) + _legend_height(len(curves), ctx))
    ax = fig.add_subplot()
    allc = [c for cs in curves.values() for c in cs]
    means = np.array([c.metrics[b.primary].mean for c in allc])
    ends = np.array([_ci_ends(c.metrics[b.primary]) for c in allc])
    fit = figaxes.fit(means, ends[:, 0], ends[:, 1], metric=b.primary)
    off = {id(allc[i]) for i in fit.outside}
    priors = len({p for (_, p) in curves}) > 1
    handles = {}
    for (solver, prior), cs in sorted(curves.items()):
        shown = [c for c in cs if id(c) not in off]
        kw = ctx.pal.kw(solver, cs[0].preset)
        lab = escape.mpl(solver_name(solver) + (f" / {prior}" if priors else ""))
        xs = [cost_of(c) for c in shown]
        ys = [c.metrics[b.primary].mean for c in shown]
        e = np.array([_ci_ends(c.metrics[b.primary]) for c in shown]).reshape(-1, 2)
        err = np.array([np.nan_to_num(np.array(ys) - e[:, 0]), np.nan_to_num(e[:, 1] - np.array(ys))]) if shown else None
        handles[lab] = ax.errorbar(xs, ys, yerr=err, linestyle="-" if len(cs) > 1 else "none", **kw)
    xs_all = np.array([cost_of(c) for c in allc])
    if xs_all.max() / xs_all.min() > 10:
        ax.set_xscale("log")
        ax.set_xlim(xs_all.min() / 1.5, xs_all.max() * 1.5)
        figaxes.plain_log_ticks(ax.xaxis)
    figaxes.apply(ax, fit, "y")
    if not fit.log:
        _value_ticks(ax.yaxis, 5)
    figaxes.mark_outside(ax, fit, means, xs_all, [ctx.pal.color(c.solver) for c in allc], horizontal=False)
    ax.set_xlabel("cost per image [forward-equivalents: NFE + VJP]")
    ax.set_ylabel(axis_label(b.primary) + ", mean and 95 % CI")
    ax.set_title(board_title(b, ctx))
    _legend(fig, ax, ctx, handles)
    return _save(fig, ctx, "nfe", b, f"{DISPLAY.get(b.primary, b.primary)} vs cost: {plain_title(b, ctx)}",
                 "Quality at the cost each solver paid per image, in forward-equivalents: network evaluations plus "
                 "vector-Jacobian products through the network, a VJP counted as one forward pass (the lower bound; "
                 "one to two on the hardware measured), as in the matched-cost tables. A line joins one solver's budgets (presets or overrides); a lone point is a "
                 "solver run at one budget. Drawn because at least one solver ran at two budgets or more.")


# ---------------------------------------------------------------- memory, dist_to_map

def memory(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    cells = [c for c in b.cells if math.isfinite(c.peak_mem_mib)]
    if not cells:
        return None
    fig = _figure(ctx, 0.85 + ROW_IN * 1.2 * len(cells))
    ax = fig.add_subplot()
    y = np.arange(len(cells))[::-1].astype(float)
    ax.barh(y, [c.peak_mem_mib for c in cells], color=[ctx.pal.color(c.solver) for c in cells], height=0.6)
    _rows_axis(ax, y, [cell_name(c) for c in cells])
    _value_ticks(ax.xaxis, 4)
    _row_xlabel(ax, "peak GPU memory [MiB]", [cell_name(c) for c in cells], ctx)
    ax.set_title(board_title(b, ctx))
    return _save(fig, ctx, "memory", b, f"Peak GPU memory: {plain_title(b, ctx)}",
                 "Maximum over images of the per-cell peak GPU memory (reset per cell).")


def dist_to_map(b: Leaderboard, run: RunData, ctx: Ctx) -> FigureRecord | None:
    df = run.results
    if "dist_to_map" not in df:
        return None
    rows = df[(df["dataset"].astype(str) == b.dataset) & (df["task"].astype(str) == b.task)
              & (df["status"].astype(str) == "ok")].copy()
    rows["dist_to_map"] = pd.to_numeric(rows["dist_to_map"], errors="coerce")
    rows = rows[np.isfinite(rows["dist_to_map"])]
    rows = rows[rows["solver"].astype(str) != "oracle_map"]  # ≈ 0 by construction; it would crush the axis
    cells, data = [], []
    for c in b.cells:
        v = rows[(rows["solver"].astype(str) == c.solver) & (rows["preset"].astype(str) == c.preset)
                 & (rows["prior"].astype(str) == c.prior)]["dist_to_map"].to_numpy(float)
        if v.size:
            cells.append(c)
            data.append(v)
    if not cells:
        return None
    med = np.array([float(np.median(v)) for v in data])
    fit = figaxes.fit(med, [v.min() for v in data], [v.max() for v in data], metric="dist_to_map")
    fig = _figure(ctx, 0.85 + ROW_IN * 1.5 * len(cells))
    ax = fig.add_subplot()
    y = np.arange(len(cells))[::-1].astype(float)
    rng = np.random.default_rng(0)   # the same run always gives the same figure
    for i, (c, v) in enumerate(zip(cells, data, strict=True)):
        if i in fit.outside:
            continue
        col = ctx.pal.color(c.solver)
        ax.boxplot([v], positions=[y[i]], orientation="horizontal", widths=0.55, showfliers=False,
                   patch_artist=True, boxprops={"facecolor": "white", "edgecolor": col, "linewidth": 0.8},
                   medianprops={"color": col, "linewidth": 1.0}, whiskerprops={"color": col, "linewidth": 0.7},
                   capprops={"color": col, "linewidth": 0.7})
        ax.plot(v, y[i] + rng.uniform(-0.18, 0.18, v.size), linestyle="none", marker=ctx.pal.marker(c.solver),
                markersize=2.2, color="0.25", alpha=0.7, markeredgewidth=0)
    figaxes.apply(ax, fit, "x")
    if not fit.log:
        _value_ticks(ax.xaxis, 4)
    figaxes.mark_outside(ax, fit, med, y, [ctx.pal.color(c.solver) for c in cells])
    _rows_axis(ax, y, [cell_name(c) for c in cells])
    _row_xlabel(ax, axis_label("dist_to_map").replace("dist. to MAP", "distance to exact MAP"),
                [cell_name(c) for c in cells], ctx)
    ax.set_title(board_title(b, ctx))
    return _save(fig, ctx, "dist_to_map", b, f"Distance to the exact MAP: {plain_title(b, ctx)}",
                 "Per image × seed distance of the reconstruction to the exact MAP of the analytic prior's "
                 "posterior (box: quartiles, whiskers 1.5 IQR; points: rows); the exact-MAP oracle, at distance ≈ 0 "
                 "by construction, is left out; a log axis where the values span more than two decades.")


# ---------------------------------------------------------------- orchestration

def _board_figures(b: Leaderboard, run: RunData, ctx: Ctx, image_ids, zoom) -> list[FigureRecord]:
    from .figgrid import grid

    presets: dict[str, list[str]] = {}
    for c in b.cells:
        presets.setdefault(c.solver, []).append(c.preset)
    ctx.pal.set_presets(presets)
    made = [delta(b, ctx), *bars(b, ctx), pareto(b, ctx), grid(b, run, ctx, image_ids, zoom=zoom),
            nfe_curves(b, ctx), memory(b, ctx), dist_to_map(b, run, ctx)]
    return [r for r in made if r is not None]


def inside_run(run_dir: Path, rel: str | Path) -> Path | None:
    """``run_dir / rel`` if it stays inside ``run_dir`` and exists, else None."""
    try:
        root = run_dir.resolve()
        p = (run_dir / rel).resolve()
        p.relative_to(root)
    except (ValueError, OSError):
        return None
    return p if p.is_file() else None


_inside = inside_run


def _read_png(p: Path | None) -> np.ndarray | None:
    """The image at ``p`` in [0, 1] (:func:`invbench.bench.report.pixels.read_image`), None when
    ``p`` is None or unreadable; :class:`ImageTooLarge` over the pixel cap."""
    return None if p is None else read_image(p)


def read_image_or_note(p: Path | None, ctx: Ctx) -> np.ndarray | None:
    """The image at ``p`` (:func:`_read_png`), or None when absent, unreadable or over the pixel
    cap (then its one-line reason is kept for the notes)."""
    try:
        return _read_png(p)
    except ImageTooLarge as e:
        if str(e) not in ctx.refused:
            ctx.refused.append(str(e))
        return None


PARALLEL_MIN_TASKS = 8   # fewer figure tasks are drawn in the calling process: forking would not pay
MAX_WORKERS = 4


@dataclass
class _Job:
    """What the figure tasks of one :func:`make_figures` call read (inherited by forked workers)."""

    run: RunData
    boards: list[Leaderboard]
    out_dir: Path
    image_ids: list[str] | None
    zoom: tuple[float, float, float] | None
    pal: Palette
    task_names: dict[str, str]
    formats: tuple[str, ...]
    inspect: Inspect | None
    rc: dict


_JOB: dict[str, _Job] = {}


def _draw(task: tuple[float, int | None]) -> tuple[list[FigureRecord], list[str]]:
    """One task: the critical-difference figure (board None) or one board's figures, at a width;
    returns the records and the refused-image lines."""
    job = _JOB["job"]
    width, i = task
    ctx = Ctx(width, job.pal, job.out_dir, job.task_names, job.formats, job.inspect, [])
    with plt.rc_context(job.rc):
        if i is None:
            from .cd import cd_figure

            rec = cd_figure(job.boards, ctx)
            recs = [rec] if rec is not None else []
        else:
            recs = _board_figures(job.boards[i], job.run, ctx, job.image_ids, job.zoom)
    return recs, ctx.refused


def _die_with_parent(parent: int) -> None:
    """Worker start: end with the report process (Linux ``PR_SET_PDEATHSIG``), so a killed report
    leaves no worker writing into its staging folder."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def worker_count(n_tasks: int, workers: int | None = None) -> int:
    """Processes that draw the figures: ``workers`` if given, else 1 below
    :data:`PARALLEL_MIN_TASKS` tasks or off Linux (forking is safe there, and workers can be tied
    to the report's life), else the CPUs this process may use (at most :data:`MAX_WORKERS`)."""
    import multiprocessing

    if workers is not None:
        return max(1, int(workers))
    if (n_tasks < PARALLEL_MIN_TASKS or not sys.platform.startswith("linux")
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus, n_tasks))


def _run_tasks(tasks: list[tuple[float, int | None]], n: int) -> list[tuple[list[FigureRecord], list[str]]]:
    """The results of ``tasks`` in order: drawn here, or by ``n`` forked processes (each figure is
    independent; files are written atomically by whoever draws them)."""
    if n <= 1:
        return [_draw(t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        return list(pool.map(_draw, tasks))


def make_figures(run: RunData, boards: list[Leaderboard], out_dir: Path,
                 image_ids: list[str] | None = None, *, zoom: tuple[float, float, float] | None = None,
                 widths: tuple[float, ...] = (DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN),
                 refused: list[str] | None = None, inspect: Inspect | None = None,
                 formats: tuple[str, ...] = ("png", "pdf"), workers: int | None = None,
                 ) -> tuple[list[FigureRecord], list[str]]:
    """Write all figures into ``out_dir``, each at double-column (6.8 in, ``<stem>.pdf|png``) and
    single-column width (3.3 in, ``<stem>__col1.pdf|png``) unless ``widths`` names only one; returns
    the records and notes on skipped figures. ``zoom`` adds zoomed insets to the sample grids
    (:mod:`.figgrid`). Run images over the pixel cap are not drawn: one line each, naming the file,
    goes to the notes and to ``refused``. ``inspect(fig, stem)`` is called with every figure before
    it is written (the tests measure text there; the figures are then drawn in this process);
    ``formats`` () writes no figure file. ``workers``: processes drawing the figures
    (:func:`worker_count` when None)."""
    from . import fonts

    for width in widths:
        if width not in (DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN):
            raise ValueError(f"figure width {width} in: expected {DOUBLE_COLUMN_IN} or {SINGLE_COLUMN_IN}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pal = Palette({c.solver for b in boards for c in b.cells})
    rc = {**RC, "font.family": fonts.families()}
    tasks = [(w, i) for w in widths for i in (None, *range(len(boards)))]
    n = 1 if inspect is not None else worker_count(len(tasks), workers)
    _JOB["job"] = _Job(run, boards, out_dir, image_ids, zoom, pal, task_names_of_run(run.meta.get("config")),
                       formats, inspect, rc)
    try:
        results = _run_tasks(tasks, n)
    finally:
        _JOB.clear()
    recs = [r for rs, _ in results for r in rs]
    refused_here = list(dict.fromkeys(line for _, lines in results for line in lines))
    notes: list[str] = []
    if not any(r.kind == "cd" for r in recs):
        notes.append("No critical-difference diagram: it needs at least 3 solvers common to every "
                     "(dataset, task) board and at least 2 image blocks.")
    if boards and not any(math.isfinite(c.peak_mem_mib) for b in boards for c in b.cells):
        notes.append("Peak-memory bars skipped: peak GPU memory is NULL for every cell (CPU run); "
                     "peak RSS is in the tables.")
    if not any(r.kind == "nfe" for r in recs):
        notes.append("No quality-vs-cost plot: no solver ran at two budgets or more.")
    notes += refused_here
    if refused is not None:
        refused += refused_here
    if formats:
        write_manifest(recs, out_dir / MANIFEST, pal.record({c.solver for b in boards for c in b.cells}))
    return recs, notes


MANIFEST = "figures.json"


def write_manifest(recs: list[FigureRecord], path: Path, solvers: dict | None = None) -> None:
    """``figures.json``: ``figures``, one entry per figure file pair (kind, title, caption, PNG and
    PDF names, the column width and page height in inches, the (x, y) axis labels), and ``solvers``,
    each solver's display name, colour, marker and preset fills, for scripts that pick figures for
    a paper and for checks that read a report without drawing it again."""
    import json

    entries = [{"kind": r.kind, "title": r.title, "caption": r.caption, "png": r.png.name, "pdf": r.pdf.name,
                "width_in": r.width_in, "height_in": r.height_in, "axis_labels": [list(p) for p in r.axis_labels]}
               for r in recs]
    doc = {"figures": entries, "solvers": solvers or {},
           "cost": "forward-equivalents per image: NFE + VJP (a VJP counted as one forward pass)"}
    atomic_write_bytes(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())


def read_manifest(folder: Path) -> list[FigureRecord]:
    """The :class:`FigureRecord` list of a report's ``figures/`` folder (see :func:`write_manifest`)."""
    import json

    doc = json.loads((folder / MANIFEST).read_text())
    entries = doc["figures"] if isinstance(doc, dict) else doc
    return [FigureRecord(e["kind"], e["title"], e["caption"], folder / e["png"], folder / e["pdf"], e["width_in"],
                         tuple(tuple(p) for p in e["axis_labels"]), e.get("height_in", 0.0)) for e in entries]


def check_text(fig) -> list[str]:
    """Problems of a drawn figure's text (:func:`.figcheck.check_figure` at :data:`MIN_FONT_PT`)."""
    from .figcheck import check_figure

    return check_figure(fig, MIN_FONT_PT)


__all__ = [
    "DOUBLE_COLUMN_IN",
    "MANIFEST",
    "SINGLE_COLUMN_IN",
    "FigureRecord",
    "axis_label",
    "cell_name",
    "check_text",
    "cost_of",
    "is_oracle",
    "make_figures",
    "read_manifest",
    "write_manifest",
]
