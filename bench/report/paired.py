"""Paired comparisons within a leaderboard: every solver is run on the same images and seeds, so
solvers are compared on their per-row differences, which are far tighter than two unpaired means.

For one (dataset, task) and its primary metric, a cell's values are keyed by (image_id, seed) over
its ok rows; two cells are compared on the keys both have.

* ``delta_best``: the mean paired difference ``cell − best`` (best = rank 1 by mean) with its
  two-sided 95% Student-t interval over the shared keys (:func:`invbench.bench.report.stats.mean_ci`).
* ``group``: a rank with ties by significance — ``1 +`` the number of cells significantly better
  than this one, where "significantly" is a two-sided paired t-test (``scipy.stats.ttest_rel``) over
  the shared keys with Holm's step-down correction of all pairwise p-values of the leaderboard at
  family-wise level alpha (Holm 1979). Cells that no other cell beats share group 1 (tied best).
  Pairs with fewer than 2 shared keys, or whose differences do not vary, are never significant.
* ``delta_ref``: when a reference solver is named, the mean paired difference ``cell − reference``
  (its best-ranked cell in the leaderboard) with the same Student-t interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as _st

from .stats import MeanCI, direction, mean_ci

__all__ = ["PairedResult", "holm", "paired_delta", "paired_groups"]


@dataclass(frozen=True)
class PairedResult:
    delta_best: MeanCI | None     # cell − best, paired; None for the best itself or no shared keys
    p_best: float                 # Holm-adjusted p-value of the comparison with the best (NaN if none)
    group: int | None             # significance rank (1 = not significantly worse than any cell)


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


def _values(rows: pd.DataFrame, metric: str) -> pd.Series:
    ok = rows[rows["status"].astype(str) == "ok"]
    v = pd.to_numeric(ok[metric], errors="coerce")
    s = pd.Series(v.to_numpy(float), index=pd.MultiIndex.from_arrays(
        [ok["image_id"].astype(str), ok["seed"].astype(str)]))
    return s[np.isfinite(s.to_numpy())]


def _paired(a: pd.Series, b: pd.Series) -> np.ndarray:
    keys = a.index.intersection(b.index)
    return a.loc[keys].to_numpy(float) - b.loc[keys].to_numpy(float)


def _p(d: np.ndarray) -> float:
    if d.size < 2 or np.ptp(d) == 0:   # no test without spread: never significant
        return math.nan
    return float(_st.ttest_rel(d, np.zeros_like(d)).pvalue)


def paired_delta(cell: pd.DataFrame, ref: pd.DataFrame, metric: str) -> MeanCI | None:
    """Mean paired difference ``cell − ref`` of ``metric`` over shared (image, seed) keys with its
    95% Student-t interval (units of the metric); None when the two share no key."""
    dd = _paired(_values(cell, metric), _values(ref, metric))
    return mean_ci(dd) if dd.size else None


def paired_groups(cell_rows: dict[tuple, pd.DataFrame], ranked: list[tuple], metric: str,
                  alpha: float = 0.05) -> dict[tuple, PairedResult]:
    """Paired Δ to the best and significance groups for the cells ``ranked`` (keys in rank order,
    best first) of one leaderboard; ``cell_rows`` maps each key to its result rows."""
    d = direction(metric) or 1
    vals = {k: _values(cell_rows[k], metric) for k in ranked}
    pairs = list(combinations(ranked, 2))
    diffs = {pr: _paired(vals[pr[0]], vals[pr[1]]) for pr in pairs}
    adj = dict(zip(pairs, holm([_p(diffs[pr]) for pr in pairs]), strict=True))
    out: dict[tuple, PairedResult] = {}
    best = ranked[0] if ranked else None
    for k in ranked:
        better = 0
        for j in ranked:
            if j == k:
                continue
            pr = (j, k) if (j, k) in diffs else (k, j)
            dd = diffs[pr] if pr == (j, k) else -diffs[pr]        # j − k
            if math.isfinite(adj[pr]) and adj[pr] < alpha and d * float(np.mean(dd)) > 0:
                better += 1
        if k == best:
            out[k] = PairedResult(None, math.nan, better + 1)
            continue
        pr = (best, k)
        dd = -diffs[pr]                                             # k − best
        out[k] = PairedResult(mean_ci(dd) if dd.size else None, adj[pr], better + 1)
    return out
