"""The posterior figure of a leaderboard: ``dist_to_map``, the distribution of each cell's
distance to the exact MAP (analytic priors only)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import figaxes
from .data import RunData
from .figbase import (
    ROW_IN,
    Ctx,
    FigureRecord,
    axis_label,
    board_title,
    cell_name,
    new_figure,
    plain_title,
    row_xlabel,
    rows_axis,
    save_figure,
    value_ticks,
)
from .summary import CellSummary, Leaderboard


def dist_to_map(b: Leaderboard, run: RunData, ctx: Ctx) -> FigureRecord | None:
    cells, data = _cell_distances(b, run)
    if not cells:
        return None
    med = np.array([float(np.median(v)) for v in data])
    fit = figaxes.fit(med, [v.min() for v in data], [v.max() for v in data], metric="dist_to_map")
    fig = new_figure(ctx, 0.85 + ROW_IN * 1.5 * len(cells))
    ax = fig.add_subplot()
    y = np.arange(len(cells))[::-1].astype(float)
    rng = np.random.default_rng(0)  # the same run always gives the same figure
    for i, (c, v) in enumerate(zip(cells, data, strict=True)):
        if i in fit.outside:
            continue
        col = ctx.pal.color(c.solver)
        ax.boxplot(
            [v],
            positions=[y[i]],
            orientation="horizontal",
            widths=0.55,
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": "white", "edgecolor": col, "linewidth": 0.8},
            medianprops={"color": col, "linewidth": 1.0},
            whiskerprops={"color": col, "linewidth": 0.7},
            capprops={"color": col, "linewidth": 0.7},
        )
        ax.plot(
            v,
            y[i] + rng.uniform(-0.18, 0.18, v.size),
            linestyle="none",
            marker=ctx.pal.marker(c.solver),
            markersize=2.2,
            color="0.25",
            alpha=0.7,
            markeredgewidth=0,
        )
    figaxes.apply(ax, fit, "x")
    if not fit.log:
        value_ticks(ax.xaxis, 4)
    figaxes.mark_outside(ax, fit, med, y, [ctx.pal.color(c.solver) for c in cells])
    rows_axis(ax, y, [cell_name(c) for c in cells])
    row_xlabel(
        ax,
        axis_label("dist_to_map").replace("dist. to MAP", "distance to exact MAP"),
        [cell_name(c) for c in cells],
        ctx,
    )
    ax.set_title(board_title(b, ctx))
    return save_figure(
        fig,
        ctx,
        "dist_to_map",
        b,
        f"Distance to the exact MAP: {plain_title(b, ctx)}",
        "Per image × seed distance of the reconstruction to the exact MAP of the analytic prior's "
        "posterior (box: quartiles, whiskers 1.5 IQR; points: rows); the exact-MAP oracle, at "
        "distance ≈ 0 "
        "by construction, is left out; a log axis where the values span more than two decades.",
    )


def _cell_distances(b: Leaderboard, run: RunData) -> tuple[list[CellSummary], list[np.ndarray]]:
    """The cells of ``b`` with finite distances to the exact MAP, and each one's distances (the
    rows of the board that finished; the exact-MAP oracle, ≈ 0 by construction, left out: it
    would crush the axis)."""
    df = run.results
    if "dist_to_map" not in df:
        return [], []
    rows = df[(df["dataset"].astype(str) == b.dataset) & (df["task"].astype(str) == b.task)
              & (df["status"].astype(str) == "ok")].copy()
    rows["dist_to_map"] = pd.to_numeric(rows["dist_to_map"], errors="coerce")
    rows = rows[np.isfinite(rows["dist_to_map"])]
    rows = rows[rows["solver"].astype(str) != "oracle_map"]
    cells, data = [], []
    for c in b.cells:
        v = rows[(rows["solver"].astype(str) == c.solver) & (rows["preset"].astype(str) == c.preset)
                 & (rows["prior"].astype(str) == c.prior)]["dist_to_map"].to_numpy(float)
        if v.size:
            cells.append(c)
            data.append(v)
    return cells, data
