"""Reading a run directory for reports and ``compare``.

Everything the reports need is loaded once into :class:`RunData`; the reading itself is done by
``invbench.bench.store`` (``load_results``, ``load_set_metrics``, ``load_meta``, ``load_metric_status``).
Rows that shards of a submitit run committed but the parent has not merged yet are read too, and
the run's progress (rows present against rows expected, still running) is assessed once
(:mod:`invbench.bench.report.completeness`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

CELL_KEYS: tuple[str, ...] = ("solver", "preset", "task", "dataset", "prior")
ROW_KEYS: tuple[str, ...] = CELL_KEYS + ("image_id", "seed")


class RunDirError(ValueError):
    """The run directory or its store is missing or unreadable (one readable line)."""


@dataclass
class RunData:
    run_dir: Path
    results: pd.DataFrame
    set_metrics: pd.DataFrame
    meta: dict[str, str]
    metric_status: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    completeness: Any = None   # invbench.bench.report.completeness.Completeness (None: not assessed)

    @property
    def experiment(self) -> str:
        e = self.meta.get("experiment")
        if e:
            return str(e)
        if len(self.results) and "experiment" in self.results:
            return str(self.results["experiment"].iloc[0])
        return self.run_dir.name

    def unavailable(self) -> dict[str, str]:
        """``{metric: "unavailable: <why>"}`` for metrics marked unavailable in metric_status."""
        out: dict[str, str] = {}
        ms = self.metric_status
        if ms is None or not len(ms):
            return out
        for _, r in ms.iterrows():
            avail = r.get("available")
            if avail is None or pd.isna(avail) or int(avail) == 0:
                note = str(r.get("note") or "").strip() or "no reason recorded"
                out[str(r["metric"])] = note if note.lower().startswith("unavailable") else f"unavailable: {note}"
        return out


def load_run(run_dir: Path | str, *, progress: bool = False) -> RunData:
    """Load results, set metrics, meta and metric status of ``run_dir``.

    With ``progress`` (the report), rows of shard stores not merged yet are added and the run's
    progress is assessed (:attr:`RunData.completeness`); ``compare`` reads the run store alone.
    Raises :class:`RunDirError` when the directory or ``results.sqlite`` is missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise RunDirError(f"no results store in run directory: {db} is missing")
    from invbench.bench import store

    try:
        results = store.load_results(run_dir)
        set_metrics = store.load_set_metrics(run_dir)
        meta = {str(k): str(v) for k, v in store.load_meta(run_dir).items()}
        metric_status = store.load_metric_status(run_dir)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError, store.StoreError, FileNotFoundError) as e:
        # pandas wraps sqlite errors (e.g. a missing table) in its own DatabaseError
        raise RunDirError(f"cannot read results store {db}: {e}") from None
    if results is None or not len(results.columns):
        raise RunDirError(f"results store {db} has no results table")
    run = RunData(run_dir, results, set_metrics if set_metrics is not None else pd.DataFrame(), meta,
                  metric_status if metric_status is not None else pd.DataFrame())
    if progress:
        from .completeness import assess, merge_shard_rows

        run.results, shard_rows, shard_notes = merge_shard_rows(run_dir, results)
        run.completeness = assess(run_dir, meta, run.results, shard_rows, shard_notes)
    return run
