"""Value axes of the figures: the range that shows the bulk, the log-axis rule, and the cells
drawn at the axis edge because they lie far outside.

Rules (docs/reports.md, "Figures"):

* **Outside cells.** One failing cell (a diverged solver's MSE of 19 beside others of 0.005) must
  not squash the rest. A value is a *candidate* when it lies more than :data:`Z_FAR` robust
  standard deviations (1.4826 × the median absolute deviation) from the median of the values (the
  farthest third at most); it is *outside* when its distance to the range the other values and
  their intervals cover is more than :data:`SQUASH` times that range (drawn, it would leave them
  less than a quarter of the axis) and more than a floor (a tenth of the largest magnitude; for a
  non-negative metric whose values are all positive everything is measured in decades and the
  floor is one decade). With fewer than :data:`MIN_VALUES` values none is outside. An outside
  value is drawn as an arrow at the axis edge with its value written beside it, whoever it belongs
  to (solver or oracle).
* **Log axis.** A non-negative metric whose remaining values span more than two decades
  (max / min > 100) is drawn on a log axis.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .stats import NONNEGATIVE

Z_FAR = 5.0               # candidates: more than this many robust SDs from the median
SQUASH = 3.0              # ... drawn at the edge when the axis would give the others under a quarter
MIN_VALUES = 5            # with fewer values none is called far (the median and MAD say too little)
LOG_FLOOR = 1.0           # never "far" within a decade (log-capable metrics) ...
LINEAR_FLOOR = 0.1        # ... or within a tenth of the largest magnitude (others)
LOG_SPAN = 100.0          # max / min of the remaining values above which the axis is logarithmic


@dataclass
class AxisFit:
    lo: float
    hi: float
    log: bool
    outside: list[int] = field(default_factory=list)   # indices of the values drawn at the edge


def nonnegative(metric: str) -> bool:
    """Metrics whose values cannot be negative (log-axis candidates)."""
    return metric in NONNEGATIVE or metric in ("consistency", "nfe", "cost", "peak_mem")


def _t(x: float, log: bool) -> float:
    """A value on the scale the rule measures: decades (log) or itself."""
    return math.log10(x) if log else float(x)


def outside(values, log: bool, lows=None, highs=None) -> list[int]:
    """Indices of the values far outside the others (see the module docstring); ``lows`` and
    ``highs`` are the interval ends of the values (they widen the bulk the others make)."""
    values = np.asarray(values, dtype=float)
    lows = np.asarray(lows if lows is not None else values, dtype=float)
    highs = np.asarray(highs if highs is not None else values, dtype=float)
    idx = [i for i in range(len(values)) if np.isfinite(values[i]) and (not log or values[i] > 0)]
    out = [i for i in range(len(values)) if log and np.isfinite(values[i]) and values[i] <= 0]
    if len(idx) < MIN_VALUES:
        return out
    v = np.array([_t(values[i], log) for i in idx])
    dev = np.abs(v - float(np.median(v)))
    sigma = 1.4826 * float(np.median(dev)) or 1.25 * float(dev.mean())
    cands = sorted(((dev[k], idx[k]) for k in range(len(idx)) if dev[k] > Z_FAR * sigma), reverse=True)
    cands = cands[: len(idx) // 3]
    bulk = [i for i in idx if i not in {c for _, c in cands}]
    ends = [_t(x, log) for i in bulk for x in (values[i], lows[i], highs[i]) if np.isfinite(x) and (not log or x > 0)]
    lo, hi = min(ends), max(ends)
    floor = LOG_FLOOR if log else LINEAR_FLOOR * float(np.abs(v).max())
    for _, i in cands:
        x = _t(values[i], log)
        gap = lo - x if x < lo else x - hi
        if gap > max(SQUASH * (hi - lo), floor):
            out.append(i)
    return sorted(out)


def fit(values, lows=None, highs=None, *, metric: str = "", include: tuple[float, ...] = (),
        nonneg: bool | None = None, pad: float = 0.06) -> AxisFit:
    """The axis for ``values`` (means; ``lows``/``highs`` their interval ends, NaN when none):
    the outside values found, the log rule applied to the rest, and limits that hold the rest with
    their intervals (intervals of outside values are not fitted), ``include`` and a margin."""
    v = np.asarray(values, dtype=float)
    lo_e = np.asarray(lows if lows is not None else v, dtype=float)
    hi_e = np.asarray(highs if highs is not None else v, dtype=float)
    nonneg = nonnegative(metric) if nonneg is None else nonneg
    fin = v[np.isfinite(v)]
    log_candidate = nonneg and fin.size > 0 and bool((fin > 0).all())
    out = outside(v, log_candidate, lo_e, hi_e)
    rest = [i for i in range(len(v)) if np.isfinite(v[i]) and i not in out]
    if not rest:
        return AxisFit(0.0, 1.0, False, out)
    r = v[rest]
    log = log_candidate and r.min() > 0 and r.max() / r.min() > LOG_SPAN
    ends = np.concatenate([r, lo_e[rest], hi_e[rest], np.asarray(include, float)])
    ends = ends[np.isfinite(ends)]
    if log:
        ends = ends[ends > 0]
        a, b = math.log10(ends.min()), math.log10(ends.max())
        # intervals no more than one decade beyond the values
        a, b = max(a, math.log10(r.min()) - 1), min(b, math.log10(r.max()) + 1)
        m = pad * max(b - a, 0.3)
        return AxisFit(10 ** (a - m), 10 ** (b + m), True, out)
    a, b = float(ends.min()), float(ends.max())
    # one interval far wider than the others and the values is cut (its end leaves the axis)
    widths = np.abs(hi_e[rest] - lo_e[rest])
    widths = widths[np.isfinite(widths)]
    span = max(float(r.max() - r.min()), float(np.median(widths)) if widths.size else 0.0)
    if span > 0:
        a, b = max(a, float(r.min()) - 2 * span), min(b, float(r.max()) + 2 * span)
        for x in include:
            a, b = min(a, x), max(b, x)
    if b <= a:
        w = abs(a) * 0.1 or 1.0
        a, b = a - w, b + w
    m = pad * (b - a)
    return AxisFit(a - m, b + m, False, out)


def fmt_value(x: float) -> str:
    """A short print of an outside value (3 significant digits)."""
    return f"{x:.3g}"


def mark_outside(ax, fit_: AxisFit, values, positions, colors, *, horizontal: bool = True,
                 fontsize: float = 6.0) -> None:
    """Draw each outside value of ``fit_`` at the axis edge it lies beyond: an arrow pointing out
    of the axis and the value beside it, in the cell's colour. ``horizontal``: the value axis is
    x (rows at ``positions`` on y); else the value axis is y."""
    hi = fit_.hi
    for i in fit_.outside:
        x = float(values[i])
        beyond_hi = x > hi
        frac = 0.985 if beyond_hi else 0.015
        txt = ("%s \u25b6" if beyond_hi else "\u25c0 %s") % fmt_value(x) if horizontal else \
            ("\u25b2 %s" if beyond_hi else "\u25bc %s") % fmt_value(x)
        if horizontal:
            ax.annotate(txt, xy=(frac, positions[i]), xycoords=("axes fraction", "data"), ha="right" if beyond_hi
                        else "left", va="center", fontsize=fontsize, color=colors[i], annotation_clip=False)
        else:
            ax.annotate(txt, xy=(positions[i], frac), xycoords=("data", "axes fraction"), ha="center",
                        va="top" if beyond_hi else "bottom", fontsize=fontsize, color=colors[i],
                        annotation_clip=False)


def short_number(v: float) -> str:
    """``0.2``, ``20``, ``1e-8``, ``1e+6``: ``%g`` without the exponent's leading zeros."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{v:g}")


def plain_log_ticks(axis, numticks: int = 5) -> None:
    """Log axis with plain-number labels (``0.2``, ``1``, ``20``, ``1e-08``), at most about
    ``numticks`` labelled ticks, and unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    wide = lo > 0 and hi / lo > 300           # over more than 2.5 decades: powers of ten only
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0), numticks=numticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))
    axis.set_minor_formatter(NullFormatter())


def apply(ax, fit_: AxisFit, axis: str = "x", numticks: int = 5) -> None:
    """Set the scale and limits of ``ax``'s ``axis`` from ``fit_`` (at most about ``numticks``
    labelled ticks on a log axis)."""
    if fit_.log:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(fit_.lo, fit_.hi)
    if fit_.log:
        plain_log_ticks(ax.xaxis if axis == "x" else ax.yaxis, numticks)
