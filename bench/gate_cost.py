"""Cost samples of one cell of a run, as ``invbench compare`` judges them.

A run records per row ``seconds`` (wall time of the solve / batch size), ``net_seconds`` (the
network's share of it, :mod:`invbench.bench.netclock`), ``nfe``/``vjp`` and ``timings`` (JSON of every
timed solve of the row's batch: the stored one and the ``timing_repeats - 1`` repeats, see
:mod:`invbench.bench.runner`). Rows of one batch share one timed call, so a sample is one timed *call*
(deduplicated by its ``call`` id), not one row:

* ``wall`` samples — seconds per image of each timed call;
* ``normalised`` samples — seconds ÷ network seconds of each timed call (dimensionless: the
  in-run floor ratio; 1.0 = all time inside the network). Calls with no network time (oracle
  solvers: NFE = 0) have no normalised sample.

Rows of runs made before ``timings`` existed give one sample per row from ``seconds`` /
``net_seconds``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BASES", "has_calibration", "network_work", "timing_samples"]

BASES = ("normalised", "wall")


def has_calibration(meta: dict[str, str]) -> bool:
    """True when the run's meta holds a device calibration with at least one timed prior."""
    try:
        cal = json.loads(meta.get("calibration", ""))
    except (TypeError, ValueError):
        return False
    return isinstance(cal, dict) and any(isinstance(v, dict) and "t_forward_s" in v for v in cal.values())


def _calls(rows: pd.DataFrame) -> list[tuple[list[float], list[float]]]:
    """One ``(seconds, net_seconds)`` pair of per-image lists per timed call of ``rows``."""
    out: list[tuple[list[float], list[float]]] = []
    seen: set[str] = set()
    has_t = "timings" in rows.columns
    for _, r in rows.iterrows():
        t: Any = r["timings"] if has_t else None
        if isinstance(t, str) and t:
            try:
                d = json.loads(t)
                call = str(d["call"])
                s = [float(x) for x in d["seconds"]]
                nt = [float(x) for x in d.get("net_seconds", [math.nan] * len(s))]
            except (ValueError, KeyError, TypeError):
                d = None
            if d is not None:
                if call not in seen:
                    seen.add(call)
                    out.append((s, nt))
                continue
        s0 = float(r["seconds"]) if pd.notna(r.get("seconds")) else math.nan
        n0 = float(r["net_seconds"]) if "net_seconds" in rows.columns and pd.notna(r.get("net_seconds")) else math.nan
        out.append(([s0], [n0]))
    return out


def timing_samples(rows: pd.DataFrame, basis: str) -> np.ndarray:
    """Finite positive samples of ``basis`` (``"wall"`` or ``"normalised"``) from the ok rows
    ``rows`` of one cell (see the module docstring); units: seconds per image, or a ratio."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
    vals: list[float] = []
    for secs, nets in _calls(rows):
        for s, nt in zip(secs, nets, strict=False):
            v = s if basis == "wall" else (s / nt if nt > 0 else math.nan)
            vals.append(v)
    a = np.asarray(vals, dtype=np.float64)
    return a[np.isfinite(a) & (a > 0)]


def network_work(rows: pd.DataFrame) -> tuple[float, float]:
    """Mean NFE and mean VJP per image over ``rows`` (NaN when not recorded)."""
    def mean(col: str) -> float:
        if col not in rows.columns:
            return math.nan
        v = pd.to_numeric(rows[col], errors="coerce").to_numpy(np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan
    return mean("nfe"), mean("vjp")
