"""Statistics of ``invbench compare``: paired one-sided tests of "worse by more than the
threshold", and the run-level error control across every test of a run.

**Time** (:func:`paired_ratio_test`). Input: per *unit* (a timed solver call, paired between the
two runs; its ``timing_repeats`` averaged first, on the log scale) a positive cost in each run.
``d_i = log(new_i / base_i)``. The null hypothesis is "new is at most ``max_ratio`` times base"
(``median d ≤ log max_ratio``); the test is the exact one-sided **Wilcoxon signed-rank test** of
``d_i − log max_ratio`` (alternative "greater"; zero differences dropped, tied magnitudes given
mid-ranks, the p-value from the exact permutation distribution of those ranks). The estimate is
``exp`` of the Hodges–Lehmann estimate of ``d`` (median of the Walsh averages) and its interval
the distribution-free Walsh-average interval at ``1 − alpha`` — printed only from
:data:`MIN_CI_UNITS` units on (below, no such interval exists at 95 %). With ``n`` units the
smallest attainable p-value is ``2^-n``.

**Quality** (:func:`paired_drop_test`). Input: per image (seeds averaged first) the metric in
each run, ``d_i = new_i − base_i``. The null hypothesis is "the mean is worse by at most
``max_drop``"; the test is the one-sided paired Student t test of ``d_i ± max_drop``; the interval
the two-sided ``1 − alpha`` t interval of ``mean d``. Differences without spread (up to
round-off) are decided exactly: p = 0 when beyond the drop (by more than round-off), else 1.

**The family** (:func:`holm_tarone`). A run's verdict is one decision about the run, so the
p-values of all its tests form one family: the family-wise error rate (the probability that a
run with no change anywhere is flagged) is held at ``alpha`` by Holm's step-down procedure. A
test whose smallest attainable p-value exceeds ``alpha / K`` cannot be rejected and is left out
of the count ``K`` (Tarone, 1990); ``K`` is the smallest count for which that holds. The choice
depends only on the sample sizes, never on the data, so the family-wise level holds exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from invbench.bench.report.verdicts import holm
from scipy import stats

__all__ = ["MIN_CI_UNITS", "DropTest", "RatioTest", "holm_tarone", "paired_drop_test", "paired_ratio_test",
           "signed_rank_greater"]

MIN_CI_UNITS = 6
"""Fewest paired units with a 95 % Walsh-average interval (at 5 units P(W+ = 0) = 1/32 > 0.025)."""


@dataclass(frozen=True)
class RatioTest:
    """Outcome of :func:`paired_ratio_test`: ``ratio`` (new/base, Hodges–Lehmann), its interval
    (NaN below ``MIN_CI_UNITS`` units), one-sided ``p_value`` of "ratio > max_ratio", ``n`` paired
    units, ``min_p`` the smallest p-value ``n`` units can reach."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    min_p: float


@dataclass(frozen=True)
class DropTest:
    """Outcome of :func:`paired_drop_test`: ``mean`` difference new − base (metric units), its
    two-sided interval (NaN below ``min_n``), one-sided ``p_value`` of "worse by more than the
    drop", ``n`` images."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


_EXACT_TOL = 1e-9   # relative: differences within it are round-off (e.g. 0.3 - 0.2 != 0.1)
_EXACT_MAX = 200   # units above which the signed-rank p-value uses the normal approximation


@lru_cache(maxsize=256)
def _null_counts(weights: tuple[int, ...]) -> np.ndarray:
    """Number of sign patterns giving each sum of the positive ``weights`` (integers)."""
    counts = np.zeros(sum(weights) + 1, dtype=np.float64)
    counts[0] = 1.0
    for w in weights:
        counts[w:] = counts[w:] + counts[:-w].copy() if w else counts * 2
    return counts


def signed_rank_greater(x: Sequence[float] | np.ndarray) -> float:
    """Exact one-sided p-value of the Wilcoxon signed-rank test that ``x`` is centred above 0
    (zeros dropped; tied magnitudes get mid-ranks, the exact distribution of those ranks used).
    1.0 when nothing is left."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v) & (v != 0)]
    if not v.size:
        return 1.0
    if v.size > _EXACT_MAX:   # normal approximation (scipy's), exact enumeration too large
        return float(stats.wilcoxon(v, alternative="greater", method="approx").pvalue)
    ranks2 = np.rint(2 * stats.rankdata(np.abs(v))).astype(int)   # doubled mid-ranks: integers
    w = int(ranks2[v > 0].sum())
    counts = _null_counts(tuple(sorted(int(r) for r in ranks2)))
    return float(counts[w:].sum() / counts.sum())


def _walsh_ci(d: np.ndarray, alpha: float) -> tuple[float, float]:
    """Distribution-free ``1 - alpha`` interval of the pseudo-median (Walsh-average order
    statistics, exact no-ties signed-rank distribution); NaN when ``d`` is too short."""
    n = d.size
    if n < 1 or n > _EXACT_MAX:
        return math.nan, math.nan
    counts = _null_counts(tuple(range(1, n + 1)))
    cdf = np.cumsum(counts) / counts.sum()
    c = int(np.searchsorted(cdf, alpha / 2, side="right")) - 1   # largest c with P(W+ <= c) <= alpha/2
    if c < 0:
        return math.nan, math.nan
    walsh = np.sort((d[:, None] + d[None, :])[np.triu_indices(n)] / 2)
    return float(walsh[c]), float(walsh[walsh.size - 1 - c])


def paired_ratio_test(base: Sequence[float] | np.ndarray, new: Sequence[float] | np.ndarray, *,
                      max_ratio: float, alpha: float = 0.05, min_n: int = MIN_CI_UNITS) -> RatioTest:
    """One-sided paired test that ``new`` costs more than ``max_ratio`` × ``base`` (see the module
    docstring). ``base[i]`` and ``new[i]`` are one unit; pairs with a non-finite or non-positive
    value are dropped. The interval is given only from ``max(min_n, MIN_CI_UNITS)`` units."""
    b, n = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    keep = np.isfinite(b) & np.isfinite(n) & (b > 0) & (n > 0)
    d = np.log(n[keep]) - np.log(b[keep])
    k = int(d.size)
    if not k:
        return RatioTest(math.nan, math.nan, math.nan, math.nan, 0, 1.0)
    walsh = (d[:, None] + d[None, :])[np.triu_indices(k)] / 2
    ratio = float(math.exp(np.median(walsh)))
    lo = hi = math.nan
    if k >= max(min_n, MIN_CI_UNITS):
        lo, hi = (math.exp(v) for v in _walsh_ci(d, alpha))
    p = signed_rank_greater(d - math.log(max_ratio))
    return RatioTest(ratio, lo, hi, p, k, 2.0 ** -k)


def paired_drop_test(diffs: Sequence[float] | np.ndarray, *, max_drop: float, direction: int,
                     alpha: float = 0.05, min_n: int = MIN_CI_UNITS) -> DropTest:
    """One-sided paired t test that the mean of ``diffs`` (new − base per image) is worse than
    ``max_drop``: below ``-max_drop`` for ``direction`` +1 (higher is better), above
    ``+max_drop`` for −1. The two-sided ``1 - alpha`` interval only from ``min_n`` images."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    k = int(d.size)
    if not k:
        return DropTest(math.nan, math.nan, math.nan, 1.0, 0)
    m = float(d.mean())
    worse = -direction * (m + direction * max_drop)   # > 0: beyond the allowed drop
    if k < 2:
        return DropTest(m, math.nan, math.nan, 1.0, 1)
    se = float(d.std(ddof=1)) / math.sqrt(k)
    if se <= _EXACT_TOL * max(1.0, abs(m)):   # no spread (a deterministic rerun): decided exactly,
        p = 0.0 if worse > _EXACT_TOL * max(1.0, abs(m)) else 1.0   # a drop of the threshold itself is not beyond it
        lo = hi = m
    else:
        p = float(stats.t.sf(worse / se, k - 1))
        h = float(stats.t.ppf(1 - alpha / 2, k - 1)) * se
        lo, hi = m - h, m + h
    if k < min_n:
        lo = hi = math.nan
    return DropTest(m, lo, hi, p, k)


def holm_tarone(p_values: Sequence[float], min_p: Sequence[float], alpha: float) -> tuple[list[float], list[bool], int]:
    """Holm-adjusted p-values over the testable tests (Tarone's choice of the family, see the
    module docstring). Returns ``(adjusted, testable, K)``: ``adjusted[i]`` is NaN for a test
    left out; a test is rejected when ``adjusted[i] <= alpha``."""
    m = len(p_values)
    mp = [float(x) for x in min_p]
    k = 1
    while k <= m and sum(x <= alpha / k for x in mp) > k:
        k += 1
    testable = [x <= alpha / max(k, 1) for x in mp]
    adj = holm([float(p) if t else math.nan for p, t in zip(p_values, testable, strict=True)])
    return adj, testable, sum(testable)
