"""Is the run complete? Rows present against the rows its grid expects, rows still in shard stores,
and whether a run is writing the folder right now.

* **Expected rows** come from the run's own record: the resolved configuration (meta ``config``)
  gives the cells (solver entries × tasks × priors × the datasets each prior pairs with, presets
  resolved as the runner does, :func:`invbench.bench.grid.resolve_preset`) and the seeds; meta
  ``datasets`` gives each dataset's image count and shape. A prior that pairs with datasets by
  image shape (no ``priors[].datasets``) takes the shapes of the datasets it has rows on; one
  with no row at all cannot be placed and is named in a note. When the record is missing or
  does not match the rows (a cell with rows that the grid does not have), nothing is claimed.
* **Shard stores** (``shards/<k>/results.sqlite`` of a submitit run) hold rows their shard
  committed that the parent has not merged yet. The report reads them as the next merge would,
  except that a finished (``ok``/``skipped``) row of the run store is never replaced.
* **Running**: a process holds the flock of ``RUN_DIR/.lock`` or of a shard folder's ``.lock``.
  The report is then made from what is committed so far, and says so.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .data import CELL_KEYS

__all__ = ["Completeness", "expected_cells", "merge_shard_rows", "run_is_live"]

DATASETS_META_MAX = 1 << 20   # characters of meta ``datasets`` parsed (a record, not a payload)
FINISHED = ("ok", "skipped")


@dataclass
class Completeness:
    """What the report knows about the run's progress (see the module docstring)."""

    expected: dict[tuple[str, ...], int] | None = None   # cell key -> rows the grid expects
    present: int = 0                                     # rows present in those cells (≤ expected each)
    total: int = 0                                       # rows the grid expects in all
    running: bool = False                                # a run or shard holds its lock now
    shard_rows: int = 0                                  # rows read from shard stores, not merged yet
    not_run: list[str] = field(default_factory=list)     # solver labels with no row in any expected cell
    notes: list[str] = field(default_factory=list)
    at_least: bool = False                               # some expected cells could not be counted

    @property
    def incomplete(self) -> bool:
        return self.expected is not None and (self.present < self.total or self.at_least)

    def banner(self) -> str | None:
        """One line for the top of the report, or None for a complete run nobody is writing."""
        parts: list[str] = []
        if self.incomplete:
            parts.append(f"incomplete run: {self.present} of {'at least ' if self.at_least else ''}{self.total} rows")
        elif self.running and self.expected is not None:
            parts.append(f"run in progress: all {self.total} rows committed, set metrics may still follow")
        elif self.running:
            parts.append("run in progress: rows expected unknown (no grid record in the run)")
        if self.running:
            parts.append("still running: this report shows the rows committed so far"
                         + (f", {self.shard_rows} of them from shard stores not merged yet" if self.shard_rows else ""))
        elif self.shard_rows:
            parts.append(f"{self.shard_rows} rows read from shard stores not merged yet (an interrupted sharded run; "
                         "--resume merges them)")
        if self.not_run and self.incomplete:
            parts.append("not run: " + ", ".join(self.not_run))
        parts += self.notes if parts else []
        return "; ".join(parts) if parts else None


def run_is_live(run_dir: Path) -> bool:
    """True when a run holds the lock of ``run_dir`` or of one of its shard folders."""
    from invbench.bench import store

    folders = [run_dir] + sorted(p.parent for p in (run_dir / "shards").glob(f"*/{store.STORE_NAME}"))
    return any(store.lock_held(f) for f in folders)


def merge_shard_rows(run_dir: Path, results: pd.DataFrame) -> tuple[pd.DataFrame, int, list[str]]:
    """``results`` with the rows of every ``shards/*/results.sqlite`` added (a shard row replaces
    a run-store row of the same ``row_id`` unless that one is finished); returns the rows, how
    many came from shard stores, and a note per shard store that could not be read."""
    from invbench.bench import store

    notes: list[str] = []
    added = 0
    changed = False
    for sp in sorted((run_dir / "shards").glob(f"*/{store.STORE_NAME}"), key=lambda p: p.parent.name):
        try:
            shard = store.load_results(sp)
        except Exception as e:  # noqa: BLE001 - a shard store being created or damaged: noted, not fatal
            notes.append(f"shard store {sp.relative_to(run_dir)} not read "
                         f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})")
            continue
        if not len(shard) or "row_id" not in shard or "row_id" not in results:
            continue
        done = set(results.loc[results["status"].astype(str).isin(FINISHED), "row_id"].astype(str))
        shard = shard[~shard["row_id"].astype(str).isin(done)]
        if not len(shard):
            continue
        new_ids = set(shard["row_id"].astype(str))
        added += len(new_ids - set(results["row_id"].astype(str)))
        kept = results[~results["row_id"].astype(str).isin(new_ids)]
        results = pd.concat([kept, shard], ignore_index=True) if len(kept) else shard.reset_index(drop=True)
        changed = True
    if changed:   # the run store's order (store.load_results)
        results = results.sort_values(list(CELL_KEYS) + ["image_id", "seed"], kind="stable").reset_index(drop=True)
    return results, added, notes


def _dataset_record(text: str | None) -> dict[str, tuple[int, tuple[int, ...]]] | None:
    """meta ``datasets`` (``repr`` of ``{name: source}``) as ``{name: (count, image_shape)}``."""
    if not text or len(text) > DATASETS_META_MAX:
        return None
    try:
        rec = ast.literal_eval(text)
        return {str(k): (int(v["count"]), tuple(int(s) for s in v["image_shape"])) for k, v in rec.items()}
    except (ValueError, TypeError, SyntaxError, KeyError, AttributeError, MemoryError, RecursionError):
        return None


def expected_cells(meta: dict[str, str], results: pd.DataFrame) -> tuple[dict[tuple[str, ...], int] | None, list[str]]:
    """``{cell key: rows expected}`` of the run's grid, and notes; ``(None, [])`` when the run
    holds no usable record of its grid (see the module docstring)."""
    from invbench.bench.config import ConfigError, loads
    from invbench.bench.grid import resolve_preset

    record = _dataset_record(meta.get("datasets"))
    if not meta.get("config") or record is None:
        return None, []
    try:
        exp = loads(meta["config"], source="the run's config")
        if any(d.name not in record for d in exp.datasets):
            return None, []
        presets = {(i, t.name): resolve_preset(s, t, i) for i, s in enumerate(exp.solvers) for t in exp.tasks
                   if s.tasks is None or t.name in s.tasks}
    except (ConfigError, ImportError):   # a record this version cannot read: claim nothing
        return None, []
    shapes_of_prior: dict[str, set] = {}
    for p, d in {(str(p), str(d)) for p, d in zip(results.get("prior", []), results.get("dataset", []))}:
        if d in record:
            shapes_of_prior.setdefault(p, set()).add(record[d][1])
    cells: dict[tuple[str, ...], int] = {}
    unplaced: list[str] = []
    for (i, task), preset in presets.items():
        s = exp.solvers[i]
        for p in exp.priors:
            if s.priors is not None and p.label not in s.priors:
                continue
            if p.datasets is not None:
                dsets = list(p.datasets)
            elif p.label in shapes_of_prior:
                dsets = [d.name for d in exp.datasets if record[d.name][1] in shapes_of_prior[p.label]]
            else:
                if p.label not in unplaced:
                    unplaced.append(p.label)
                continue
            for dn in dsets:
                cells[(s.label, preset, task, dn, p.label)] = record[dn][0] * len(exp.seeds)
    seen = {tuple(str(v) for v in k) for k in results[list(CELL_KEYS)].drop_duplicates().itertuples(index=False)} \
        if len(results) else set()
    if seen - set(cells):   # rows the grid does not explain: the record does not describe these rows
        return None, []
    notes = [f"rows expected of prior {p!r} unknown (no row yet; it pairs with datasets by image shape)"
             for p in unplaced]
    return cells, notes


def assess(run_dir: Path, meta: dict[str, str], results: pd.DataFrame, shard_rows: int,
           notes: list[str]) -> Completeness:
    """The :class:`Completeness` of a run whose rows (shard stores merged) are ``results``."""
    expected, more = expected_cells(meta, results)
    c = Completeness(expected=expected, running=run_is_live(run_dir), shard_rows=shard_rows, notes=notes + more)
    if expected is None:
        return c
    counts = results.groupby(list(CELL_KEYS), sort=False).size() if len(results) else pd.Series(dtype=int)
    have = {tuple(str(v) for v in k): int(n) for k, n in counts.items()}
    c.total = sum(expected.values())
    c.present = sum(min(have.get(k, 0), n) for k, n in expected.items())
    with_rows = {k[0] for k in expected if have.get(k)}
    c.not_run = sorted({k[0] for k in expected} - with_rows)
    c.at_least = bool(more)   # a prior that could not be placed has no row: the run is not complete
    return c
