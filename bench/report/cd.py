"""Overall ranking across tasks: Friedman test and the Nemenyi critical difference (Demšar 2006,
"Statistical comparisons of classifiers over multiple data sets", JMLR 7).

Each (dataset, task) leaderboard is one block; the methods are the solvers present in every block
(oracles excluded; a solver with several presets in one block takes its best-ranked one). Within a
block the solvers are ranked by the primary metric's mean (ties share the average rank). The
Friedman test (``scipy.stats.friedmanchisquare``) asks whether the average ranks differ at all; the
critical difference ``CD = q_α · sqrt(k (k + 1) / (6 N))`` with ``q_α`` the studentized range
quantile for k groups and infinite degrees of freedom divided by √2 (``scipy.stats.studentized_range``)
says which pairs differ: two solvers whose average ranks are closer than CD are not
distinguishable (joined by a bar in the figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from .stats import direction
from .summary import Leaderboard

__all__ = ["CDResult", "critical_difference"]


@dataclass(frozen=True)
class CDResult:
    methods: list[str]            # in order of average rank (best first)
    avg_rank: list[float]
    n_blocks: int
    cd: float
    friedman_p: float
    cliques: list[tuple[int, int]]  # index ranges [i, j] (inclusive) of methods within CD of each other


def _block_scores(b: Leaderboard) -> dict[str, float]:
    d = direction(b.primary) or 1
    out: dict[str, float] = {}
    for c in b.cells:
        if c.solver.startswith("oracle") or b.primary not in c.metrics:
            continue
        v = d * c.metrics[b.primary].mean
        if math.isfinite(v) and v > out.get(c.solver, -math.inf):
            out[c.solver] = v
    return out


def critical_difference(boards: list[Leaderboard], alpha: float = 0.05) -> CDResult | None:
    """The Friedman/Nemenyi summary over ``boards``; None with fewer than 3 common solvers or 2 blocks."""
    blocks = [s for s in (_block_scores(b) for b in boards) if s]
    if len(blocks) < 2:
        return None
    common = sorted(set.intersection(*(set(s) for s in blocks)))
    k, n = len(common), len(blocks)
    if k < 3:
        return None
    ranks = np.array([_st.rankdata([-s[m] for m in common]) for s in blocks])   # 1 = best
    avg = ranks.mean(axis=0)
    scores = np.array([[s[m] for m in common] for s in blocks])
    try:
        p = float(_st.friedmanchisquare(*scores.T).pvalue)
    except ValueError:
        p = math.nan
    q = float(_st.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6.0 * n))
    order = np.argsort(avg, kind="stable")
    meth, ar = [common[i] for i in order], [float(avg[i]) for i in order]
    cliques: list[tuple[int, int]] = []
    for i in range(k):
        j = i
        while j + 1 < k and ar[j + 1] - ar[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    return CDResult(meth, ar, n, cd, p, cliques)
