"""Cost samples of one cell of a run, as ``invbench compare`` judges them.

A run records per row ``seconds`` (wall time of the solve / batch size), ``net_seconds`` (the
network's share of it, :mod:`invbench.bench.cost.netclock`), ``nfe``/``vjp`` and ``timings`` (JSON of every
timed solve of the row's batch: the stored one and the ``timing_repeats - 1`` repeats, see
:mod:`invbench.bench.run.execute`). Rows of one batch share one timed call, so a sample is one timed *call*
(deduplicated by its ``call`` id), not one row:

* ``wall`` samples — seconds per image of each timed call;
* ``normalised`` samples — seconds ÷ network seconds of each timed call (dimensionless: the
  in-run floor ratio; 1.0 = all time inside the network). Calls with no network time (oracle
  solvers: NFE = 0) have no normalised sample.

Rows of runs made before ``timings`` existed give one sample per row from ``seconds`` /
``net_seconds``.

For the paired test of ``invbench compare`` (:func:`paired_units`) a call's repeats are one
unit — back-to-back repeats of one solve are not independent samples — valued at the geometric
mean of their per-image costs; the units of the two runs are paired by the rows they solved.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BASES", "has_calibration", "network_share", "network_work", "paired_units", "row_units",
           "timing_samples"]

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


def _row_call(r: pd.Series, i: int) -> tuple[str, list[float], list[float]]:
    """``(call id, seconds, net_seconds)`` of the timed call of row ``r`` (position ``i``)."""
    t: Any = r["timings"] if "timings" in r.index else None
    if isinstance(t, str) and t:
        try:
            d = json.loads(t)
            s = [float(x) for x in d["seconds"]]
            nt = [float(x) for x in d.get("net_seconds", [math.nan] * len(s))]
            return "call:" + str(d["call"]), s, nt
        except (ValueError, KeyError, TypeError):
            pass
    s0 = float(r["seconds"]) if pd.notna(r.get("seconds")) else math.nan
    n0 = float(r["net_seconds"]) if "net_seconds" in r.index and pd.notna(r.get("net_seconds")) else math.nan
    return f"row:{i}", [s0], [n0]


def _geo_mean(vals: list[float]) -> float:
    a = np.asarray(vals, dtype=np.float64)
    a = a[np.isfinite(a) & (a > 0)]
    return float(np.exp(np.log(a).mean())) if a.size else math.nan


def row_units(rows: pd.DataFrame, basis: str) -> tuple[list[str], np.ndarray]:
    """Per row of ``rows`` (in order): the id of its timed call and that call's per-image cost in
    ``basis`` — the geometric mean over the call's repeats (NaN when none is finite and
    positive; ``normalised`` needs network time)."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
    ids, vals = [], []
    for i, (_, r) in enumerate(rows.iterrows()):
        call, secs, nets = _row_call(r, i)
        per = secs if basis == "wall" else [s / n if n > 0 else math.nan for s, n in zip(secs, nets, strict=False)]
        ids.append(call)
        vals.append(_geo_mean(per))
    return ids, np.asarray(vals, dtype=np.float64)


def paired_units(base: pd.DataFrame, new: pd.DataFrame, basis: str) -> tuple[np.ndarray, np.ndarray]:
    """Paired per-unit costs of one cell: ``base`` and ``new`` hold the same rows in the same
    order (the pairs where both are ok). A unit is a set of rows solved by one call in each run
    — a call when both runs batched alike; rows linked through a call of either run are merged
    otherwise — valued at the geometric mean of its rows' per-image costs. Units with a missing
    cost on either side are dropped."""
    ib, vb = row_units(base, basis)
    inn, vn = row_units(new, basis)
    parent = list(range(len(ib)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in (ib, inn):
        first: dict[str, int] = {}
        for i, c in enumerate(ids):
            j = first.setdefault(c, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(ib)):
        groups.setdefault(find(i), []).append(i)
    b, n = [], []
    for members in groups.values():
        gb, gn = vb[members], vn[members]
        if np.all(np.isfinite(gb) & (gb > 0)) and np.all(np.isfinite(gn) & (gn > 0)):
            b.append(float(np.exp(np.log(gb).mean())))
            n.append(float(np.exp(np.log(gn).mean())))
    return np.asarray(b, dtype=np.float64), np.asarray(n, dtype=np.float64)


def network_share(rows: pd.DataFrame) -> float:
    """Median over the timed calls of ``rows`` of network seconds ÷ solve seconds (all repeats of
    a call together); NaN without network time."""
    shares = []
    for secs, nets in _calls(rows):
        s, nt = float(np.nansum(secs)), float(np.nansum(nets))
        if s > 0 and nt > 0:
            shares.append(nt / s)
    return float(np.median(shares)) if shares else math.nan


def network_work(rows: pd.DataFrame) -> tuple[float, float]:
    """Mean NFE and mean VJP per image over ``rows`` (NaN when not recorded)."""
    def mean(col: str) -> float:
        if col not in rows.columns:
            return math.nan
        v = pd.to_numeric(rows[col], errors="coerce").to_numpy(np.float64)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan
    return mean("nfe"), mean("vjp")
