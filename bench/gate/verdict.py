"""What the gate decides: the per-cell verdict, the thresholds it is judged by, the run's family
of tests, the exit codes, and the network share below which time is not gated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .stats import MIN_CI_UNITS, DropTest, RatioTest

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_NOT_GATED = 0, 1, 2, 3
EXIT_INCONCLUSIVE = EXIT_NOT_GATED  # the name of exit 3 before "not gated" replaced "inconclusive"
FORMATS = ("text", "markdown", "json")
COSTS = ("auto", "normalised", "wall")
COST_COLS = ("seconds", "net_seconds", "timings", "nfe", "vjp")
MACHINE_KEYS = ("device", "cpu_model", "cpu_capability", "gpu_name", "torch_threads")
LOAD_SKEW = 3.0
"""Bound on how much more machine load can stretch a solve's time outside the network than its
time inside it (the busy-loop pair of a cheap analytic network measured ×2.9); sets
:func:`min_network_share`."""


def min_network_share(max_slowdown: float) -> float:
    """Fewest network share of a cell's solve time for which load moves solver time ÷ network
    time by less than ``max_slowdown`` even when it stretches the rest :data:`LOAD_SKEW` times
    more: with share f the ratio moves by ``f + LOAD_SKEW·(1 − f)`` at most, so
    ``f ≥ 1 − (max_slowdown − 1)/(LOAD_SKEW − 1)`` (0.9 at ×1.2)."""
    return min(1.0, max(0.0, 1.0 - (max_slowdown - 1.0) / (LOAD_SKEW - 1.0)))


class CompareError(ValueError):
    """Bad input to compare (exit code 2)."""


@dataclass
class CellVerdict:
    key: tuple[str, ...]
    n_pairs: int = 0
    n_metric: int = 0  # images with a paired metric value (seeds averaged)
    diff_mean: float = math.nan
    diff_low: float = math.nan  # interval of the mean difference (NaN below --min-samples)
    diff_high: float = math.nan
    quality: DropTest | None = None  # the quality test, when gated
    time_ratio: float = math.nan  # Hodges–Lehmann ratio new/base of the judged cost
    base_median_s: float = math.nan  # median seconds per image (wall), for reference
    new_median_s: float = math.nan
    speed: RatioTest | None = None  # the time test on the judged basis (also when not gated)
    speed_basis: str = ""  # "normalised" | "wall"
    speed_gated: bool = False
    network_share: float = math.nan  # base run: network seconds / solve seconds (median call)
    p_adjusted: dict[str, float] = field(
        default_factory=dict
    )  # "quality" / "time": Holm-adjusted p
    nfe: tuple[float, float] = (math.nan, math.nan)  # mean NFE per image (base, new)
    vjp: tuple[float, float] = (math.nan, math.nan)
    status_changes: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    reasons: list[str] = field(default_factory=list)
    not_gated: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.reasons)

    @property
    def verdict(self) -> str:
        return "regression" if self.reasons else "not gated" if self.not_gated else "ok"

    @property
    def inconclusive(self) -> list[str]:
        """The former name of :attr:`not_gated`."""
        return self.not_gated


@dataclass(frozen=True)
class Thresholds:
    metric: str = "psnr"
    max_drop: float = 0.1
    max_slowdown: float = 1.2
    min_slowdown_s: float = 0.0
    alpha: float = 0.05
    allow_missing: bool = False
    cost: str = "auto"
    min_samples: int = MIN_CI_UNITS
    allow_config_change: bool = False


@dataclass
class Family:
    """The run's tests: how many of each kind entered Holm's procedure and how many were left
    out because their sample could never reach the run-level significance (Tarone)."""

    quality: int = 0
    time: int = 0
    left_out: int = 0

    @property
    def size(self) -> int:
        return self.quality + self.time


@dataclass
class Comparison:
    """Verdicts plus what they were judged on (``cost`` resolved from ``auto``), warnings and the
    family of tests."""

    verdicts: list[CellVerdict]
    cost: str
    warnings: list[str]
    machines: dict[str, dict[str, str]]
    family: Family = field(default_factory=Family)


def fmt(x: float, spec: str = ".3f") -> str:
    """A number for the gate's text, or "—" when it is missing or not finite."""
    return "—" if x is None or not math.isfinite(x) else format(x, spec)
