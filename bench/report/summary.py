"""Per-cell summaries and leaderboards (one per dataset × task) computed from a run.

A *cell* is solver × preset × task × dataset × prior; its rows are images × seeds. Metric
summaries use the ok rows only (mean ± 95% Student-t CI, see :mod:`invbench.bench.report.stats`); cells
whose rows are not all ok carry a status text with counts and messages. Metrics marked
unavailable in ``metric_status`` are carried as their note and never as numbers. When the run's
grid is known (:mod:`invbench.bench.report.completeness`), counts are out of the rows the grid
expects: a cell with 4 of its 12 rows reads ``ok 4/12; not run 8/12``, and a cell without any
row is listed with status ``not run``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data import CELL_KEYS, RunData
from .stats import DEFAULT_PRIMARY, PER_IMAGE_METRICS, MeanCI, ci_for, direction

MIB = float(1 << 20)


def cell_label(solver: str, preset: str) -> str:
    """Display label of a cell in figures: the solver, plus the preset when not ``default``."""
    return str(solver) if str(preset) == "default" else f"{solver} ({preset})"


def _provenance(v) -> str:
    """The stored ``preset_provenance`` as text ("" when absent)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


@dataclass
class CellSummary:
    solver: str
    preset: str
    task: str
    dataset: str
    prior: str
    n_rows: int
    n_ok: int
    status: str                      # "ok" or e.g. "skipped: <why>" / "diverged 2/6: <why>; ok 4/6"
    metrics: dict[str, MeanCI]       # per-image metrics with at least one value
    set_metrics: dict[str, tuple[float | None, int | None, str]]   # value, n, note
    seconds: MeanCI
    seconds_median: float
    nfe: float                       # mean over ok rows (NaN when none)
    vjp: float
    peak_mem_mib: float              # max over ok rows; NaN when not recorded (CPU)
    peak_rss_mib: float
    batch_sizes: str = "1"           # distinct batch sizes of the ok rows, e.g. "4,2"
    rank: int | None = None
    delta_best: MeanCI | None = None  # paired difference to the rank-1 cell (bench/report/paired.py)
    p_best: float = math.nan          # its Holm-adjusted p-value
    group: int | None = None          # significance rank: 1 + cells significantly better
    provenance: str = ""             # preset_provenance of the rows ("" for stores written before it existed)
    delta_ref: MeanCI | None = None   # paired difference to the reference solver's cell
    n_expected: int | None = None     # rows the run's grid expects (None: grid unknown)

    @property
    def label(self) -> str:
        return cell_label(self.solver, self.preset)

    @property
    def key(self) -> tuple[str, ...]:
        return (self.solver, self.preset, self.task, self.dataset, self.prior)


@dataclass
class Leaderboard:
    dataset: str
    task: str
    primary: str
    metrics: list[str]               # per-image metric columns shown (values or unavailable)
    set_metrics: list[str]           # set-metric columns shown
    unavailable: dict[str, str]      # metric -> "unavailable: <why>" (whole column)
    cells: list[CellSummary]
    notes: list[str] = field(default_factory=list)
    reference: str | None = None     # solver of the Δ ref column (None: no such column)


def _num(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def _status_text(rows: pd.DataFrame, expected: int | None = None) -> str:
    """``"ok"``, or each status with its count and messages; counts are out of ``expected`` rows
    when the grid is known and the cell has fewer (the missing ones read ``not run k/n``)."""
    n = max(len(rows), expected or 0)
    st = rows["status"].astype(str)
    missing = n - len(rows)
    if (st == "ok").all() and not missing:
        return "ok"
    parts = []
    for status, grp in rows[st != "ok"].groupby(st[st != "ok"], sort=True):
        msgs = sorted({str(m) for m in grp["message"].fillna("") if str(m)})
        why = "; ".join(msgs) if msgs else "no message"
        count = "" if len(grp) == n else f" {len(grp)}/{n}"
        parts.append(f"{status}{count}: {why}")
    n_ok = int((st == "ok").sum())
    if n_ok:
        parts.append(f"ok {n_ok}/{n}")
    if missing:
        parts.append(f"not run {missing}/{n}")
    return "; ".join(parts)


def _nanmax(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else math.nan


def _nanmean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def summarise_cell(rows: pd.DataFrame, set_rows: pd.DataFrame, unavailable: dict[str, str],
                   alpha: float = 0.05, expected: int | None = None) -> CellSummary:
    """Summary of one cell's rows (all statuses) and its set-metric rows; ``expected`` is the
    number of rows the run's grid expects of the cell (None: unknown)."""
    first = rows.iloc[0]
    ok = rows[rows["status"].astype(str) == "ok"]
    metrics: dict[str, MeanCI] = {}
    for m in PER_IMAGE_METRICS:
        if m in unavailable or m not in ok:
            continue
        ci = ci_for(m, _num(ok[m]), alpha)
        if ci.n:
            metrics[m] = ci
    sm: dict[str, tuple[float | None, int | None, str]] = {}
    for _, r in set_rows.iterrows():
        v = r.get("value")
        v = None if v is None or pd.isna(v) else float(v)
        n = r.get("n")
        n = None if n is None or pd.isna(n) else int(n)
        note = "" if r.get("note") is None or pd.isna(r.get("note")) else str(r.get("note"))
        if v is None and not note:
            note = "unavailable: no value recorded"
        sm[str(r["metric"])] = (v, n, note)
    secs = _num(ok["seconds"]) if "seconds" in ok else np.array([])
    fin = secs[np.isfinite(secs)]
    sizes = "1"
    if "batch_size" in ok and len(ok) and (pd.to_numeric(ok["batch_size"], errors="coerce") > 1).any():
        # a batch is timed once and its per-image time shared by its rows: one sample per batch
        # (rows of a batch are not independent timings), so n is the number of timed batches
        bs = pd.to_numeric(ok["batch_size"], errors="coerce").fillna(1).astype(int)
        sizes = ",".join(str(v) for v in sorted(set(bs), reverse=True))
        batches = pd.DataFrame({"s": secs, "b": bs.to_numpy(), "seed": ok["seed"].astype(str).to_numpy()})
        batches = batches[np.isfinite(batches["s"])].drop_duplicates()
        secs = batches["s"].to_numpy()
    return CellSummary(
        solver=str(first["solver"]), preset=str(first["preset"]), task=str(first["task"]),
        provenance=_provenance(first.get("preset_provenance")),
        dataset=str(first["dataset"]), prior=str(first["prior"]),
        n_rows=len(rows), n_ok=len(ok), status=_status_text(rows, expected), metrics=metrics, set_metrics=sm,
        seconds=ci_for("seconds", secs, alpha), seconds_median=float(np.median(fin)) if fin.size else math.nan,
        nfe=_nanmean(_num(ok["nfe"])) if "nfe" in ok else math.nan,
        vjp=_nanmean(_num(ok["vjp"])) if "vjp" in ok else math.nan,
        peak_mem_mib=_nanmax(_num(ok["peak_mem_bytes"])) / MIB if "peak_mem_bytes" in ok else math.nan,
        peak_rss_mib=_nanmax(_num(ok["peak_rss_bytes"])) / MIB if "peak_rss_bytes" in ok else math.nan,
        batch_sizes=sizes, n_expected=expected,
    )


def not_run_cell(key: tuple[str, ...], expected: int) -> CellSummary:
    """The summary of a cell of the run's grid that has no row yet (status ``not run``)."""
    solver, preset, task, dataset, prior = key
    return CellSummary(solver=solver, preset=preset, task=task, dataset=dataset, prior=prior, n_rows=0, n_ok=0,
                       status="not run", metrics={}, set_metrics={}, seconds=ci_for("seconds", []),
                       seconds_median=math.nan, nfe=math.nan, vjp=math.nan, peak_mem_mib=math.nan,
                       peak_rss_mib=math.nan, n_expected=expected)


def summarise_cells(run: RunData, alpha: float = 0.05) -> list[CellSummary]:
    """All cells of the run, in (dataset, task, solver, preset, prior) order; with the run's grid
    known, also the cells that have no row yet (:func:`not_run_cell`)."""
    df = run.results
    expected = getattr(run.completeness, "expected", None) or {}
    out: list[CellSummary] = []
    unavailable = run.unavailable() if len(df) else {}
    sm = run.set_metrics
    for key, rows in (df.groupby(list(CELL_KEYS), sort=True, dropna=False) if len(df) else ()):
        if len(sm) and set(CELL_KEYS) <= set(sm.columns):
            mask = np.ones(len(sm), dtype=bool)
            for k, v in zip(CELL_KEYS, key):
                mask &= (sm[k].astype(str) == str(v)).to_numpy()
            set_rows = sm[mask]
        else:
            set_rows = pd.DataFrame(columns=["metric", "value", "n", "note"])
        out.append(summarise_cell(rows, set_rows, unavailable, alpha, expected.get(tuple(str(v) for v in key))))
    present = {c.key for c in out}
    out += [not_run_cell(k, n) for k, n in expected.items() if k not in present]
    out.sort(key=lambda c: (c.dataset, c.task, c.solver, c.preset, c.prior))
    return out


def _rank(cells: list[CellSummary], primary: str) -> None:
    d = direction(primary) or 1
    scored = [(c.metrics[primary].mean, c) for c in cells
              if primary in c.metrics and math.isfinite(c.metrics[primary].mean)]
    scored.sort(key=lambda t: -d * t[0])
    prev, rank = None, 0
    for i, (v, c) in enumerate(scored, start=1):
        if v != prev:
            rank, prev = i, v
        c.rank = rank


def _pair(run: RunData, cells: list[CellSummary], primary: str, alpha: float,
          reference: str | None = None) -> None:
    """Fill ``delta_best``, ``p_best`` and ``group`` of the ranked cells (paired on image × seed)."""
    from .paired import paired_groups

    ranked = sorted((c for c in cells if c.rank is not None), key=lambda c: (c.rank, c.key))
    df = run.results
    rows = {}
    for c in ranked:
        mask = np.ones(len(df), dtype=bool)
        for k, v in zip(CELL_KEYS, c.key, strict=True):
            mask &= (df[k].astype(str) == str(v)).to_numpy()
        rows[c.key] = df[mask]
    res = paired_groups(rows, [c.key for c in ranked], primary, alpha)
    for c in ranked:
        r = res[c.key]
        c.delta_best, c.p_best, c.group = r.delta_best, r.p_best, r.group
    if reference is not None:
        from .paired import paired_delta

        ref = next((c for c in ranked if c.solver == reference), None)   # its best-ranked cell
        for c in ranked:
            if ref is not None and c is not ref:
                c.delta_ref = paired_delta(rows[c.key], rows[ref.key], primary)


def build_leaderboards(run: RunData, primary: dict[str, str] | None = None,
                       alpha: float = 0.05, reference: str | None = None) -> list[Leaderboard]:
    """One leaderboard per (dataset, task), cells sorted by rank (unranked last).

    ``reference`` names a solver: every ranked cell then also gets its paired difference to that
    solver's best-ranked cell of the leaderboard (``delta_ref``; none where the solver is absent).

    ``primary`` maps task -> ranking metric (default ``psnr`` for every task); its direction
    comes from :data:`invbench.bench.report.stats.DIRECTIONS`.
    """
    primary = primary or {}
    unavailable = run.unavailable()
    cells = summarise_cells(run, alpha)
    boards: dict[tuple[str, str], list[CellSummary]] = {}
    for c in cells:
        boards.setdefault((c.dataset, c.task), []).append(c)
    out = []
    for (ds, task), cs in sorted(boards.items()):
        prim = primary.get(task, DEFAULT_PRIMARY)
        notes: list[str] = []
        if prim in unavailable:
            notes.append(f"Primary metric {prim} is {unavailable[prim]}; cells are not ranked.")
        else:
            _rank(cs, prim)
            if all(c.rank is None for c in cs):
                notes.append(f"No cell has a value of the primary metric {prim}; cells are not ranked.")
            else:
                _pair(run, cs, prim, alpha, reference)
        metrics = [m for m in PER_IMAGE_METRICS if any(m in c.metrics for c in cs)]
        set_names = sorted({m for c in cs for m in c.set_metrics})
        for m in unavailable:  # kept in the lists so that tables state them (a line, never a number)
            if m not in metrics and m not in set_names:
                (set_names if m not in PER_IMAGE_METRICS else metrics).append(m)
        metrics = [m for m in PER_IMAGE_METRICS if m in metrics] + [m for m in metrics if m not in PER_IMAGE_METRICS]
        set_names = [m for m in set_names if m not in metrics]
        cs.sort(key=lambda c: (c.rank is None, c.rank or 0, c.solver, c.preset, c.prior))
        out.append(Leaderboard(ds, task, prim, metrics, set_names,
                               {m: unavailable[m] for m in unavailable if m in metrics or m in set_names},
                               cs, notes,
                               reference if any(c.solver == reference and c.rank is not None for c in cs) else None))
    return out
