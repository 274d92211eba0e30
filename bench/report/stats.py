"""Summary statistics and metric directions used by every report and by ``invbench compare``.

Confidence intervals are two-sided intervals for the mean over the ok rows of a cell (one value
per image x seed): Student-t, ``mean ± t_{1-alpha/2, n-1} · s / sqrt(n)`` with ``s`` the sample
standard deviation (ddof=1), for metrics that can take either sign (PSNR, SSIM, consistency), and
a seeded percentile bootstrap of the mean for non-negative ones (:data:`NONNEGATIVE`), printed as
``mean [low, high]`` so that no interval goes below zero. Rows of one image with different seeds are treated as
independent draws, which is what the stored rows are; with ``n < 2`` the half-width is undefined (NaN) and
reports print the mean alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

# Declared once: +1 higher is better, -1 lower is better, 0 no ranking direction.
DIRECTIONS: dict[str, int] = {
    "psnr": +1,
    "ssim": +1,
    "lpips": -1,
    "mse": -1,
    "consistency": 0,  # ideal value is 1 (residual at the noise level); not used for ranking
    "dist_to_map": -1,
    "rel_dist_to_map": -1,
    "logpost_gap": -1,
    "err_post_mean": -1,
    "fid": -1,
    "sliced_wasserstein": -1,
    "seconds": -1,
}

# Per-image metric columns of the results table (harness contract), in display order.
PER_IMAGE_METRICS: tuple[str, ...] = (
    "psnr",
    "ssim",
    "lpips",
    "mse",
    "consistency",
    "dist_to_map",
    "rel_dist_to_map",
    "logpost_gap",
    "err_post_mean",
)

# Units / meaning shown in table headers and docs.
UNITS: dict[str, str] = {
    "psnr": "dB",
    "seconds": "s/image",
}

# Decimal places used in Markdown / LaTeX / HTML (the CSV keeps full precision).
DECIMALS: dict[str, int] = {
    "psnr": 2,
    "ssim": 4,
    "lpips": 4,
    "mse": 5,
    "consistency": 3,
    "dist_to_map": 4,
    "rel_dist_to_map": 4,
    "logpost_gap": 3,
    "err_post_mean": 4,
    "fid": 2,
    "sliced_wasserstein": 4,
    "seconds": 3,
}

DEFAULT_PRIMARY = "psnr"


def direction(metric: str) -> int:
    """+1 higher-better, -1 lower-better, 0 none (unknown metrics default to 0)."""
    return DIRECTIONS.get(metric, 0)


def arrow(metric: str) -> str:
    return {1: "↑", -1: "↓"}.get(direction(metric), "")


# Metrics that cannot be negative: their intervals come from a bootstrap of the mean (percentile
# interval, seeded), so that no interval reaches below zero as a t-interval of skewed values can.
NONNEGATIVE: frozenset[str] = frozenset({"mse", "lpips", "dist_to_map", "rel_dist_to_map", "logpost_gap",
                                         "err_post_mean", "fid", "sliced_wasserstein", "seconds"})
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` finite values with a two-sided (1 - alpha) interval: a symmetric Student-t
    interval (``half_width``), or an asymmetric bootstrap interval (``lo``, ``hi``) for
    non-negative metrics, whose ``half_width`` is then half the interval's length."""

    mean: float
    half_width: float
    n: int
    lo: float | None = None
    hi: float | None = None

    @property
    def low(self) -> float:
        return self.lo if self.lo is not None else self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.hi if self.hi is not None else self.mean + self.half_width

    @property
    def symmetric(self) -> bool:
        return self.lo is None


def mean_ci(values, alpha: float = 0.05, *, nonneg: bool = False) -> MeanCI:
    """Interval of the mean of the finite entries of ``values`` (NaN/None dropped): Student-t, or
    with ``nonneg`` a seeded percentile bootstrap (never below zero for non-negative values)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    m = float(v.mean())
    if n < 2:
        return MeanCI(m, math.nan, 1)
    if nonneg:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        means = v[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
        lo, hi = (float(q) for q in np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0]))
        return MeanCI(m, (hi - lo) / 2.0, n, lo, hi)
    sd = float(v.std(ddof=1))
    t = float(_st.t.ppf(1.0 - alpha / 2.0, n - 1))
    return MeanCI(m, t * sd / math.sqrt(n), n)


def ci_for(metric: str, values, alpha: float = 0.05) -> MeanCI:
    """The interval a report shows for ``metric`` (bootstrap for :data:`NONNEGATIVE` metrics)."""
    return mean_ci(values, alpha, nonneg=metric in NONNEGATIVE)


def fmt_number(x: float | None, decimals: int) -> str:
    if x is None or not math.isfinite(float(x)):
        return "—"
    return f"{float(x):.{decimals}f}"


def fmt_mean_ci(ci: MeanCI, metric: str, pm: str = "±") -> str:
    """``"mean ± hw"`` (or the mean alone when n < 2; ``"—"`` when n == 0)."""
    d = DECIMALS.get(metric, 4)
    if ci.n == 0:
        return "—"
    if not math.isfinite(ci.half_width):
        return fmt_number(ci.mean, d)
    if not ci.symmetric:
        return f"{fmt_number(ci.mean, d)} [{fmt_number(ci.low, d)}, {fmt_number(ci.high, d)}]"
    return f"{fmt_number(ci.mean, d)} {pm} {fmt_number(ci.half_width, d)}"
