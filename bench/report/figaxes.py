"""Value axes of the figures: the range that shows the bulk, the log-axis rule, and the cells
drawn at the axis edge because they lie far outside.

Rules (docs/reports.md, "Figures"):

* **Outside cells.** One failing cell (a diverged solver's MSE of 19 beside others of 0.005) must
  not squash the rest. A value is *outside* when it lies more than :data:`Z_FAR` robust standard
  deviations (1.4826 × the median absolute deviation) from the median of the values and more than
  a tenth of the largest magnitude away; at most a third of the values are, the farthest first,
  and with fewer than :data:`MIN_VALUES` values none is. For a non-negative metric whose values
  are all positive this is measured in decades (log10), with at least half a decade. An outside
  value is drawn as an arrow at the axis edge with its value written beside it, whoever it
  belongs to (solver or oracle).
* **Log axis.** A non-negative metric whose remaining values span more than two decades
  (max / min > 100) is drawn on a log axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .stats import NONNEGATIVE

Z_FAR = 5.0
MIN_VALUES = 5            # with fewer values none is called far (the median and MAD say too little)
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


def outside(values: np.ndarray, log: bool) -> list[int]:
    """Indices of the values far outside the others (see the module docstring)."""
    values = np.asarray(values, dtype=float)
    idx = [i for i in range(len(values)) if np.isfinite(values[i]) and (not log or values[i] > 0)]
    out = [i for i in range(len(values)) if log and np.isfinite(values[i]) and values[i] <= 0]
    if len(idx) < MIN_VALUES:
        return out
    v = np.array([math.log10(values[i]) if log else float(values[i]) for i in idx])
    med = float(np.median(v))
    dev = np.abs(v - med)
    sigma = 1.4826 * float(np.median(dev)) or 1.25 * float(dev.mean())
    # never "far": less than half a decade (log), or a tenth of the largest magnitude (linear)
    floor = 0.5 if log else 0.1 * float(np.abs(v).max())
    far = [(dev[k], idx[k]) for k in range(len(idx)) if dev[k] > max(Z_FAR * sigma, floor)]
    far.sort(reverse=True)
    return sorted(out + [i for _, i in far[: len(idx) // 3]])


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
    out = outside(v, log=log_candidate)
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
    span_r = float(r.max() - r.min())
    if span_r > 0:   # an interval far wider than the values is cut (its end leaves the axis)
        a, b = max(a, float(r.min()) - 2 * span_r), min(b, float(r.max()) + 2 * span_r)
        for x in include:
            a, b = min(a, x), max(b, x)
    if b <= a:
        w = abs(a) * 0.1 or 1.0
        a, b = a - w, b + w
    m = pad * (b - a)
    lo = a - m
    if nonneg and a >= 0 and lo < 0:
        lo = 0.0 if a > 0.15 * (b - a) else lo
    return AxisFit(lo, b + m, False, out)


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


def plain_log_ticks(axis, numticks: int = 4) -> None:
    """Log axis with plain-number labels (``0.2``, ``1``, ``20``, ``1e-08``), at most about
    ``numticks`` labelled ticks, and unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    wide = lo > 0 and hi / lo > 30            # over more than 1.5 decades: powers of ten only
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0), numticks=numticks + 1))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def apply(ax, fit_: AxisFit, axis: str = "x", numticks: int = 4) -> None:
    """Set the scale and limits of ``ax``'s ``axis`` from ``fit_`` (at most about ``numticks``
    labelled ticks on a log axis)."""
    if fit_.log:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(fit_.lo, fit_.hi)
    if fit_.log:
        plain_log_ticks(ax.xaxis if axis == "x" else ax.yaxis, numticks)
