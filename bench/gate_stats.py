"""Statistics of the speed verdict of ``invbench compare``: is NEW slower than BASE by more than a
threshold, beyond the noise of the timings?

For two samples of positive costs (seconds per image, or solver time ÷ network time) ``b`` and
``n``:

* ``ratio = median(n) / median(b)``;
* ``ci`` = percentile bootstrap interval (``1 - alpha``) of that ratio, from ``n_boot``
  resamples of each sample drawn independently (seeded: the same inputs give the same interval);
* ``p`` = one-sided Mann–Whitney U test (``scipy.stats.mannwhitneyu``, alternative "greater")
  that values of ``n`` tend to exceed values of ``b``;
* verdict ``regression`` when ``ratio > max_ratio`` **and** ``p < alpha`` **and** the median grew
  by more than ``min_abs`` (units of the samples); ``inconclusive`` when the point ratio is above
  ``max_ratio`` but a sample is smaller than ``min_n`` (a rank test on fewer values cannot reach
  significance: with 4 values per side the smallest one-sided p is 1/70); else ``ok``.

This follows the practice of established benchmark comparers (a threshold on the change *and*
a significance test on the repeated measurements) rather than a bare ratio of two medians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["RatioTest", "ratio_test"]


@dataclass(frozen=True)
class RatioTest:
    """Outcome of :func:`ratio_test`. ``ratio``/``ci_low``/``ci_high`` are dimensionless
    (new/base); ``p_value`` is one-sided; ``n_base``/``n_new`` are sample sizes."""

    verdict: str            # "ok" | "regression" | "inconclusive"
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    n_base: int
    n_new: int
    median_base: float
    median_new: float

    @property
    def n(self) -> int:
        return min(self.n_base, self.n_new)


def _boot_ci(b: np.ndarray, n: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[float, float]:
    if b.size < 2 or n.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, b.size, (n_boot, b.size))], axis=1)
    mn = np.median(n[rng.integers(0, n.size, (n_boot, n.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(mn) - np.log(mb)
    lr = lr[np.isfinite(lr)]
    if not lr.size:
        return math.nan, math.nan
    lo, hi = np.quantile(lr, [alpha / 2, 1 - alpha / 2])
    return float(math.exp(lo)), float(math.exp(hi))


def ratio_test(base: np.ndarray | list[float], new: np.ndarray | list[float], *, max_ratio: float,
               alpha: float = 0.05, min_n: int = 5, min_abs: float = 0.0, n_boot: int = 2000,
               seed: int = 0) -> RatioTest:
    """Speed verdict for samples ``base`` and ``new`` (see the module docstring). Non-finite and
    non-positive values are dropped. ``max_ratio`` > 0; ``min_abs`` in the samples' units."""
    b = np.asarray(base, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    b, n = b[np.isfinite(b) & (b > 0)], n[np.isfinite(n) & (n > 0)]
    if not b.size or not n.size:
        return RatioTest("ok", math.nan, math.nan, math.nan, math.nan, int(b.size), int(n.size), math.nan, math.nan)
    mb, mn = float(np.median(b)), float(np.median(n))
    ratio = mn / mb
    lo, hi = _boot_ci(b, n, alpha, n_boot, seed)
    p = float(stats.mannwhitneyu(n, b, alternative="greater").pvalue) if b.size and n.size else math.nan
    slower = ratio > max_ratio and (mn - mb) > min_abs
    if not slower:
        verdict = "ok"
    elif min(b.size, n.size) < min_n:
        verdict = "inconclusive"
    else:
        verdict = "regression" if p < alpha else "ok"
    return RatioTest(verdict, ratio, lo, hi, p, int(b.size), int(n.size), mb, mn)
