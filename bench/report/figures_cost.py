"""The cost figures of a leaderboard: ``pareto`` (quality against seconds per image), ``nfe``
(quality against forward-equivalents, when a solver ran at two budgets or more) and ``memory``
(peak GPU memory per cell)."""

from __future__ import annotations

import math

import numpy as np

from . import escape, figaxes
from .figbase import (
    ROW_IN,
    Ctx,
    FigureRecord,
    axis_label,
    board_title,
    cell_name,
    ci_ends,
    dot,
    legend,
    legend_height,
    new_figure,
    plain_title,
    row_xlabel,
    rows_axis,
    save_figure,
    value_ticks,
)
from .names import solver_name
from .stats import direction
from .summary import CellSummary, Leaderboard
from .tables import DISPLAY


def pareto(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    pts = [c for c in b.cells if b.primary in c.metrics and c.seconds.n and c.seconds.mean > 0]
    if not pts:
        return None
    means = np.array([c.metrics[b.primary].mean for c in pts])
    ends = np.array([ci_ends(c.metrics[b.primary]) for c in pts])
    fit = figaxes.fit(means, ends[:, 0], ends[:, 1], metric=b.primary)
    fig = new_figure(ctx, (2.4 if ctx.single else 3.0) + legend_height(len(pts), ctx))
    ax = fig.add_subplot()
    handles = {}
    for i, c in enumerate(pts):
        if i in fit.outside:
            continue
        handles[cell_name(c)] = dot(
            ax,
            c.seconds.mean,
            means[i],
            ends[i, 0],
            ends[i, 1],
            ctx.pal.kw(c.solver, c.preset),
            along="y",
        )
    front = _pareto_front(pts, b.primary)
    if len(front) > 1:
        ax.step([c.seconds.mean for c in front], [c.metrics[b.primary].mean for c in front],
                where="post", color="0.5", linestyle="--", linewidth=0.8, zorder=0)
    xs = np.array([c.seconds.mean for c in pts])
    ax.set_xscale("log")
    ax.set_xlim(xs.min() / 1.6, xs.max() * 1.6)
    figaxes.plain_log_ticks(ax.xaxis)
    figaxes.apply(ax, fit, "y")
    if not fit.log:
        value_ticks(ax.yaxis, 5)
    figaxes.mark_outside(
        ax, fit, means, xs, [ctx.pal.color(c.solver) for c in pts], horizontal=False
    )
    for i in fit.outside:
        handles[cell_name(pts[i]) + " (off axis)"] = ax.plot(
            [], [], linestyle="none", **ctx.pal.kw(pts[i].solver, pts[i].preset)
        )[0]
    ax.set_xlabel("time per image [s] (log scale)")
    ax.set_ylabel(axis_label(b.primary) + ", mean and 95 % CI")
    ax.set_title(board_title(b, ctx))
    legend(fig, ax, ctx, handles)
    return save_figure(fig, ctx, "pareto", b, f"Quality vs time: {plain_title(b, ctx)}",
                       f"{b.primary} (mean and 95 % interval over images) against seconds per "
                       "image (log axis); the dashed line is the Pareto front (no other cell is "
                       "both faster and better).")


def _pareto_front(pts: list[CellSummary], primary: str) -> list[CellSummary]:
    """The Pareto front of the solvers (oracles left out): sorted by time, each better than every
    faster one."""
    d = direction(primary) or 1
    front, best = [], -math.inf
    for c in sorted((c for c in pts if not c.is_oracle),
                    key=lambda c: (c.seconds.mean, -d * c.metrics[primary].mean)):
        v = d * c.metrics[primary].mean
        if v > best:
            front.append(c)
            best = v
    return front


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
    fig = new_figure(ctx, (2.4 if ctx.single else 3.0) + legend_height(len(curves), ctx))
    ax = fig.add_subplot()
    allc = [c for cs in curves.values() for c in cs]
    means = np.array([c.metrics[b.primary].mean for c in allc])
    ends = np.array([ci_ends(c.metrics[b.primary]) for c in allc])
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
        e = np.array([ci_ends(c.metrics[b.primary]) for c in shown]).reshape(-1, 2)
        err = (
            np.array([np.nan_to_num(np.array(ys) - e[:, 0]), np.nan_to_num(e[:, 1] - np.array(ys))])
            if shown
            else None
        )
        handles[lab] = ax.errorbar(xs, ys, yerr=err, linestyle="-" if len(cs) > 1 else "none", **kw)
    xs_all = np.array([cost_of(c) for c in allc])
    if xs_all.max() / xs_all.min() > 10:
        ax.set_xscale("log")
        ax.set_xlim(xs_all.min() / 1.5, xs_all.max() * 1.5)
        figaxes.plain_log_ticks(ax.xaxis)
    figaxes.apply(ax, fit, "y")
    if not fit.log:
        value_ticks(ax.yaxis, 5)
    figaxes.mark_outside(
        ax, fit, means, xs_all, [ctx.pal.color(c.solver) for c in allc], horizontal=False
    )
    ax.set_xlabel("cost per image [forward-equivalents: NFE + VJP]")
    ax.set_ylabel(axis_label(b.primary) + ", mean and 95 % CI")
    ax.set_title(board_title(b, ctx))
    legend(fig, ax, ctx, handles)
    return save_figure(
        fig,
        ctx,
        "nfe",
        b,
        f"{DISPLAY.get(b.primary, b.primary)} vs cost: {plain_title(b, ctx)}",
        "Quality at the cost each solver paid per image, in forward-equivalents: network "
        "evaluations plus "
        "vector-Jacobian products through the network, a VJP counted as one forward pass (the "
        "lower bound; "
        "one to two on the hardware measured), as in the matched-cost tables. A line joins one "
        "solver's budgets (presets or overrides); a lone point is a "
        "solver run at one budget. Drawn because at least one solver ran at two budgets or more.",
    )


# ---------------------------------------------------------------- memory, dist_to_map


def memory(b: Leaderboard, ctx: Ctx) -> FigureRecord | None:
    cells = [c for c in b.cells if math.isfinite(c.peak_mem_mib)]
    if not cells:
        return None
    fig = new_figure(ctx, 0.85 + ROW_IN * 1.2 * len(cells))
    ax = fig.add_subplot()
    y = np.arange(len(cells))[::-1].astype(float)
    ax.barh(
        y,
        [c.peak_mem_mib for c in cells],
        color=[ctx.pal.color(c.solver) for c in cells],
        height=0.6,
    )
    rows_axis(ax, y, [cell_name(c) for c in cells])
    value_ticks(ax.xaxis, 4)
    row_xlabel(ax, "peak GPU memory [MiB]", [cell_name(c) for c in cells], ctx)
    ax.set_title(board_title(b, ctx))
    return save_figure(
        fig,
        ctx,
        "memory",
        b,
        f"Peak GPU memory: {plain_title(b, ctx)}",
        "Maximum over images of the per-cell peak GPU memory (reset per cell).",
    )
