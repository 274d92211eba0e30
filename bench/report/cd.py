"""Overall ranking across boards on image-level blocks, and its critical-difference figure.

The blocks are the (board, image) pairs (:func:`.verdicts.friedman_blocks`): in every (dataset,
task) board each solver contributes one cell, its best-ranked preset, and that cell's image means
of the board's primary metric (``Leaderboard.image_means``); the methods are the solvers present
in every board (oracles excluded), and a block is an image of a board that all of them have.
Within each block the solvers are ranked (1 = best, ties averaged); Friedman's test asks whether
the average ranks differ at all. Only when it rejects at α = 0.05 are the post-hoc cliques drawn:
solvers whose average ranks are closer than Nemenyi's critical difference
``CD = q_α · sqrt(k (k + 1) / (6 N))`` (Demšar 2006, "Statistical comparisons of classifiers over
multiple data sets", JMLR 7) are joined by a bar. When it does not reject, the figure shows the
average ranks and says that no pair can be told apart; it draws no bar.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from . import escape
from .names import solver_name
from .summary import Leaderboard
from .verdicts import ALPHA, OverallRanking, friedman_blocks, is_oracle

__all__ = ["CLIQUE_GID", "cd_figure", "critical_difference", "ranking_blocks"]

CLIQUE_GID = "cd-clique"   # the id of each clique bar in the figure (tests count them)


def ranking_blocks(boards: list[Leaderboard]) -> list[tuple[str, dict[str, pd.Series]]]:
    """Per board: its primary metric and, per solver, the image means of its best-ranked cell."""
    out = []
    for b in boards:
        cells: dict[str, pd.Series] = {}
        ranked = sorted((c for c in b.cells if c.rank is not None and not is_oracle(c.solver)),
                        key=lambda c: (c.rank, c.key))
        for c in ranked:
            series = b.image_means.get(c.key)
            if c.solver not in cells and series is not None and len(series):
                cells[c.solver] = series
        if cells:
            out.append((b.primary, cells))
    return out


def critical_difference(boards: list[Leaderboard], alpha: float = ALPHA) -> OverallRanking | None:
    """Friedman over the image blocks of ``boards`` (:func:`ranking_blocks`); None with fewer than
    3 solvers common to every board or fewer than 2 blocks."""
    blocks = ranking_blocks(boards)
    return friedman_blocks(blocks, alpha) if blocks else None


def _verdict(res: OverallRanking, alpha: float = ALPHA) -> str:
    p = "n/a" if not math.isfinite(res.friedman_p) else f"{res.friedman_p:.2g}"
    stat = "n/a" if not math.isfinite(res.friedman_stat) else f"{res.friedman_stat:.3g}"
    head = f"Friedman χ²({len(res.methods) - 1}) = {stat}, p = {p}"
    if res.rejects:
        return f"{head} < {alpha:g}: bars join solvers within CD = {res.cd:.2f}"
    return f"{head}: not significant at {alpha:g}, no pair told apart (no bars)"


def cd_figure(boards: list[Leaderboard], ctx) -> object | None:
    """The critical-difference figure (one per report and width), or None when there is no test."""
    from .figbase import save_figure, text_width_in, wrap_to

    res = critical_difference(boards)
    if res is None:
        return None
    k = len(res.methods)
    fs = 6.5
    labels = [escape.mpl(f"{solver_name(m)} ({r:.2f})") for m, r in zip(res.methods, res.avg_rank, strict=True)]
    margin = max(text_width_in(t, fs) for t in labels) + 0.22
    W = ctx.width
    head = f"Average rank over {res.n_blocks} image blocks ({res.n_boards} boards; 1 = best)"
    verdict = _verdict(res)
    title = wrap_to(head, W - 0.1, 7.0, max_lines=2) + "\n" + wrap_to(verdict, W - 0.1, fs, max_lines=2)
    n_title = title.count("\n") + 1
    half = math.ceil(k / 2)
    row = 0.15
    bars_h = 0.1 * len(res.cliques)
    top = 0.12 * n_title + 0.12
    axis_h = 0.32                      # tick labels and the axis label above the rank line
    H = top + axis_h + 0.1 + bars_h + row * half + 0.12
    fig = plt.figure(figsize=(W, H))
    # one axes in inches: x = rank, y = inches below the rank line
    body = H - top - axis_h
    ax = fig.add_axes((margin / W, 0.02 / H, (W - 2 * margin) / W, (body - 0.02) / H))
    ax.set_xlim(1, k)
    ax.set_ylim(-(body - 0.02), 0)
    ax.set_yticks([])
    for side in ("left", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.spines["top"].set_position(("data", 0))
    ax.xaxis.tick_top()
    ax.set_xticks(range(1, k + 1))
    ax.set_xlabel("average rank", fontsize=fs)
    ax.xaxis.set_label_position("top")
    ax.tick_params(axis="x", labelsize=fs, pad=1)
    ax.grid(False)
    per_in = (k - 1) / max(W - 2 * margin, 0.5)       # rank units per inch
    for j, (a, b_) in enumerate(res.cliques):
        yb = -0.08 - 0.1 * j
        ax.plot([res.avg_rank[a] - 0.04, res.avg_rank[b_] + 0.04], [yb, yb], color="0.15", linewidth=2.0,
                solid_capstyle="butt", gid=CLIQUE_GID)
    for i, (m, r) in enumerate(zip(res.methods, res.avg_rank, strict=True)):
        left = i < half
        yy = -(0.12 + bars_h + row * ((i if left else k - 1 - i) + 0.5))
        x_end = 1 - per_in * 0.08 if left else k + per_in * 0.08   # 0.08 in beyond the rank axis
        ax.plot([r, r, x_end], [0, yy, yy], color=ctx.pal.color(m), linewidth=0.9, clip_on=False)
        ax.text(x_end, yy, f" {labels[i]} ", ha="right" if left else "left", va="center", fontsize=fs, clip_on=False)
    fig.text(0.5, 1 - 0.04 / H, title, ha="center", va="top", fontsize=fs, linespacing=1.15)
    return save_figure(fig, ctx, "cd", None, "Overall ranking: critical-difference diagram",
                 f"Average rank of each solver (1 = best) over {res.n_blocks} blocks, the images of the "
                 f"{res.n_boards} (dataset, task) boards that every one of the {k} solvers has; each solver's "
                 "best-ranked preset per board, ranked by the board's primary metric on image means (seeds averaged); "
                 f"oracles excluded. {_verdict(res)}. Bars (Nemenyi, Demšar 2006) are drawn only when Friedman's test "
                 "rejects at α = 0.05.")

