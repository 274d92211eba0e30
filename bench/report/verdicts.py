"""The marks of a leaderboard and the overall ranking: what bold, underline and "tied" mean.

Unit of replication: the image. A cell's rows are averaged over seeds per image first
(:func:`image_means`); every interval and test below is over images, paired by image.

**One-vs-best (the marks of a board).** In one (dataset, task) board the *best* cell is the
solver cell with the best mean of its image means (oracles are never candidates and never
marked). Each of the other ``m = k − 1`` solver cells is compared with it on the paired
image-level differences ``Δ_i = x_i(cell) − x_i(best)`` over the images both have: the interval
of the mean difference is the Student-t interval at level ``1 − α/m`` (Bonferroni over the
``m`` comparisons, family-wise level α = 0.05), and the cell is **tied with the best** exactly
when that interval reaches 0 — i.e. when it does not lie entirely on the worse side. The printed
Δ-best interval *is* this adjusted interval, so a mark can never disagree with the number beside
it. (Bonferroni rather than Holm: Holm's step-down has no intervals that agree with its
decisions; Bonferroni's test is its interval.) The comparison is with the observed best, a
choice made from the same data, as in every "best in bold" table; a cell with a single shared
image has no interval and is counted as tied (it cannot be separated).

A cell tied with the best can have a *lower* mean than a cell that is not tied, when its
differences vary more (or it shares fewer images): :func:`non_monotone` finds such pairs so that
the tables can say why in a footnote.

**Overall ranking.** :func:`friedman_blocks` ranks the solvers present in every board within
each *(board, image)* block (image means, best = rank 1, ties averaged) and applies Friedman's
test over those blocks; post-hoc cliques (Nemenyi's critical difference, Demšar 2006) are drawn
only when Friedman rejects at α. :func:`wilcoxon_vs_best` compares each solver with the solver
of best average rank by a Wilcoxon signed-rank test over the same blocks (differences of the
primary metric, direction-adjusted; Holm over the ``k − 1`` tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from .stats import MeanCI, direction

__all__ = ["ALPHA", "OverallRanking", "Verdict", "friedman_blocks", "holm", "image_means", "is_oracle", "non_monotone",
           "one_vs_best", "paired_interval", "seed_spread", "wilcoxon_vs_best"]

ALPHA = 0.05


def is_oracle(solver: str) -> bool:
    """Exact reference procedures (``oracle_*``): shown in their own block, never marked."""
    return str(solver).startswith("oracle")


def image_means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Mean over seeds of the finite ``metric`` values of the ok rows, per image id (sorted)."""
    if metric not in rows or not len(rows):
        return pd.Series(dtype=float)
    ok = rows[rows["status"].astype(str) == "ok"]
    v = pd.to_numeric(ok[metric], errors="coerce")
    df = pd.DataFrame({"image": ok["image_id"].astype(str).to_numpy(), "v": v.to_numpy(float)})
    df = df[np.isfinite(df["v"])]
    return df.groupby("image", sort=True)["v"].mean()


def seed_spread(rows: pd.DataFrame, metric: str) -> float:
    """Mean over images of the standard deviation (ddof=1) across seeds of ``metric``: the
    seed-to-seed spread, reported beside the image-level interval; NaN with one seed."""
    if metric not in rows or not len(rows):
        return math.nan
    ok = rows[rows["status"].astype(str) == "ok"]
    v = pd.to_numeric(ok[metric], errors="coerce")
    df = pd.DataFrame({"image": ok["image_id"].astype(str).to_numpy(), "v": v.to_numpy(float)})
    df = df[np.isfinite(df["v"])]
    sd = df.groupby("image")["v"].std(ddof=1).dropna()
    return float(sd.mean()) if len(sd) else math.nan


def _t_interval(d: np.ndarray, level: float) -> MeanCI:
    n = int(d.size)
    m = float(d.mean())
    if n < 2:
        return MeanCI(m, math.nan, n)
    sd = float(d.std(ddof=1))
    t = float(_st.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1))
    return MeanCI(m, t * sd / math.sqrt(n), n)


def paired_interval(a: pd.Series, b: pd.Series, level: float = 1 - ALPHA) -> MeanCI | None:
    """``a − b`` over the images both have (image means), mean with its Student-t interval at
    ``level``; None when they share no image."""
    shared = a.index.intersection(b.index)
    if not len(shared):
        return None
    return _t_interval(a.loc[shared].to_numpy(float) - b.loc[shared].to_numpy(float), level)


@dataclass(frozen=True)
class Verdict:
    """A solver cell's standing in its board. ``delta`` is ``cell − best`` (metric units) with
    the Bonferroni-adjusted interval the marks are read from; ``level`` its confidence level."""

    is_best: bool
    tied_with_best: bool
    delta: MeanCI | None
    level: float
    m: int                    # size of the family (comparisons with the best in this board)
    worse_sd: float = math.nan   # SD of the paired differences (for footnotes)


def _worse_side(ci: MeanCI, sign: int) -> bool:
    """True when the whole interval of ``cell − best`` lies on the worse side of 0."""
    if ci.n < 2 or not math.isfinite(ci.half_width):
        return False
    return ci.high < 0 if sign > 0 else ci.low > 0


def one_vs_best(cells: dict[tuple, pd.Series], metric: str, alpha: float = ALPHA) -> dict[tuple, Verdict]:
    """Verdicts for the solver cells of one board; ``cells`` maps a cell key to its image means
    (:func:`image_means`; oracles must not be passed). Cells with no value get no verdict."""
    sign = direction(metric) or 1
    scored = {k: float(v.mean()) for k, v in cells.items() if len(v)}
    if not scored:
        return {}
    best = max(scored, key=lambda k: (sign * scored[k], -len(str(k)), str(k)))
    m = len(scored) - 1
    level = 1.0 - alpha / max(m, 1)
    out = {best: Verdict(True, False, None, level, m)}
    b = cells[best]
    for k in scored:
        if k == best:
            continue
        shared = cells[k].index.intersection(b.index)
        d = cells[k].loc[shared].to_numpy(float) - b.loc[shared].to_numpy(float)
        if not d.size:
            out[k] = Verdict(False, True, None, level, m)
            continue
        ci = _t_interval(d, level)
        if ci.n >= 2 and ci.half_width == 0.0:   # identical difference on every image: no doubt
            tied = ci.mean == 0.0
        else:
            tied = not _worse_side(ci, sign)
        out[k] = Verdict(False, tied, ci, level, m, float(d.std(ddof=1)) if d.size > 1 else math.nan)
    return out


def non_monotone(verdicts: dict[tuple, Verdict], means: dict[tuple, float], metric: str) -> list[tuple[tuple, tuple]]:
    """Pairs ``(tied, untied)`` where the tied cell has the worse mean: the marks are then not
    monotone in the mean and a footnote must say why (the tied cell's interval is wider)."""
    sign = direction(metric) or 1
    tied = [k for k, v in verdicts.items() if v.tied_with_best]
    untied = [k for k, v in verdicts.items() if not v.tied_with_best and not v.is_best]
    return [(a, b) for a in tied for b in untied if sign * means[b] > sign * means[a]]


@dataclass(frozen=True)
class OverallRanking:
    """Friedman over image-level blocks, and what may be concluded from it."""

    methods: list[str]            # best average rank first
    avg_rank: list[float]
    n_blocks: int                 # (board, image) blocks with every method present
    n_boards: int
    friedman_stat: float
    friedman_p: float
    cd: float                     # Nemenyi critical difference of average ranks (alpha)
    cliques: list[tuple[int, int]]  # only when Friedman rejects; else []
    rejects: bool
    wilcoxon: dict[str, tuple[float, float]]   # method -> (raw p, Holm p) against methods[0]


def friedman_blocks(boards: list[tuple[str, dict[str, pd.Series]]], alpha: float = ALPHA) -> OverallRanking | None:
    """``boards``: (primary metric, {solver: image means}) per board, oracles excluded, one cell
    per solver. None when fewer than 3 solvers are common to all boards or fewer than 2 blocks."""
    present = [set(cells) for _, cells in boards if cells]
    if not present:
        return None
    common = sorted(set.intersection(*present))
    if len(common) < 3:
        return None
    rows = []
    used = 0
    for metric, cells in boards:
        if not cells:
            continue
        sign = direction(metric) or 1
        frame = pd.concat([cells[s].rename(s) for s in common], axis=1, join="inner")
        if len(frame):
            used += 1
        rows.append(sign * frame.to_numpy(float))
    if not rows:
        return None
    scores = np.vstack(rows)                        # blocks x methods, higher = better
    n, k = scores.shape
    if n < 2:
        return None
    ranks = np.vstack([_st.rankdata(-r) for r in scores])
    avg = ranks.mean(axis=0)
    try:
        res = _st.friedmanchisquare(*scores.T)
        stat, p = float(res.statistic), float(res.pvalue)
    except ValueError:
        stat, p = math.nan, math.nan
    q = float(_st.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6.0 * n))
    order = np.argsort(avg, kind="stable")
    meth, ar = [common[i] for i in order], [float(avg[i]) for i in order]
    rejects = math.isfinite(p) and p < alpha
    cliques: list[tuple[int, int]] = []
    if rejects:
        for i in range(k):
            j = i
            while j + 1 < k and ar[j + 1] - ar[i] < cd:
                j += 1
            if j > i and not any(a <= i and j <= b for a, b in cliques):
                cliques.append((i, j))
    wil = wilcoxon_vs_best(scores[:, order], meth)
    return OverallRanking(meth, ar, n, used, stat, p, cd, cliques, rejects, wil)


def holm(pvals: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1); NaN entries stay NaN."""
    idx = [i for i, p in enumerate(pvals) if math.isfinite(p)]
    order = sorted(idx, key=lambda i: pvals[i])
    m = len(order)
    adj = [math.nan] * len(pvals)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvals[i]))
        adj[i] = running
    return adj


def wilcoxon_vs_best(scores: np.ndarray, methods: list[str]) -> dict[str, tuple[float, float]]:
    """Wilcoxon signed-rank of ``methods[0]`` against each other method over the blocks (rows of
    ``scores``, higher = better), with Holm's correction over the ``k − 1`` tests."""
    raw = []
    for j in range(1, len(methods)):
        d = scores[:, 0] - scores[:, j]
        if d.size < 2 or not np.any(d != 0):
            raw.append(math.nan)
            continue
        raw.append(float(_st.wilcoxon(d, zero_method="wilcox").pvalue))
    adj = holm(raw)
    return {methods[j]: (raw[j - 1], adj[j - 1]) for j in range(1, len(methods))}
