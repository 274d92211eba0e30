"""The run loop: create RUN_DIR, take its lock, record the start, run the cells cheapest first
(each batch through :mod:`.execute`, each row committed after its files), then the set metrics."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import cost, fsafety
from ..cost import calibration
from ..grid import Cell
from ..store import STORE_NAME, Store, StoreError, load_meta, row_id
from . import execute
from . import resume as resume_module
from .checks import refuse_not_a_run
from .prepare import Prepared
from .record import env_info, loadavg, write_start
from .set_metrics import compute_set_metrics

__all__ = ["RunSummary", "progress_bar", "run"]


@dataclass
class RunSummary:
    """What a run did: rows of its grid (or shard), rows per status, rows it found done, seconds."""

    run_dir: Path
    rows: int
    counts: dict[str, int]
    skipped_done: int
    seconds: float


def run(
    p: Prepared,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    cell_indices: list[int] | None = None,
    set_metrics: bool = True,
    allow_nonempty: bool = False,
) -> RunSummary:
    """Run the grid of a prepared experiment into ``run_dir`` (see :mod:`invbench.bench.run`).

    ``shard=(k, n)`` runs only cells ``k, k+n, k+2n, ...`` (cheapest-first order), writing rows to
    ``RUN_DIR/shards/<k>/results.sqlite`` (files go to RUN_DIR as usual) and skipping rows that
    the run store already holds as finished. ``cell_indices`` (indices into ``p.cells``) replaces
    the round-robin split of a shard.
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    main_store = run_dir / STORE_NAME
    # without a store nothing in the folder is this run's: no cleanup, truth rewritten
    had_store = main_store.exists()
    if shard is None:
        resume_module.refuse_existing(run_dir, p.exp, resume, p.input_hashes)
        refuse_not_a_run(run_dir, allow_nonempty, resume_module.RunError)
    shard_dir = run_dir / "shards" / str(shard[0] if shard else 0)
    new_dirs = [d for d in (run_dir, run_dir / "shards", shard_dir) if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    store_dir = run_dir if shard is None else run_dir / "shards" / str(shard[0])
    store_dir.mkdir(parents=True, exist_ok=True)
    env = env_info(p.device)
    with resume_module.lock(store_dir):
        store = _open_store(p, run_dir, store_dir, shard, resume, had_store, new_dirs)
        try:
            cells = _cells(p, shard, cell_indices)
            total, already, todo_by_cell = _todo(p, cells, _done(p, store, run_dir, shard))
            write_start(p, store, run_dir, env, cost.reset_rss_peak(), keep_truth=had_store)
            cal = calibration.calibrate(p.priors, p.exp.batch_size, p.device, p.dtype)
            store.set_meta({"calibration": json.dumps(cal)})
            counts = _run_cells(
                p, store, run_dir, env, todo_by_cell, progress_bar(total, already, progress)
            )
            if set_metrics and shard is None:
                compute_set_metrics(p, store, run_dir)
            store.set_meta({"load_avg_end": loadavg()})
        except (OSError, sqlite3.OperationalError) as e:
            # a write failed: name the file, say how to continue
            where = run_dir if isinstance(e, OSError) else store_dir / STORE_NAME
            fault = fsafety.storage_fault(e, where)
            if fault is not None:
                raise fault from None
            raise
        finally:
            store.close()
    return RunSummary(run_dir, total, counts, already, time.time() - t0)


def _open_store(
    p: Prepared,
    run_dir: Path,
    store_dir: Path,
    shard,
    resume: bool,
    had_store: bool,
    new_dirs: list[Path],
) -> Store:
    """Under the lock: check again, clean this run's own temp files, open (create) the store."""
    if shard is None:  # again under the lock: another run may have created the store meanwhile
        resume_module.refuse_existing(run_dir, p.exp, resume, p.input_hashes)
    elif (run_dir / STORE_NAME).exists():  # a shard checks its inputs against what the run recorded
        resume_module.refuse_changed_inputs(run_dir, load_meta(run_dir), p.input_hashes)
    # shards leave cleanup to their parent (other shards write into RUN_DIR)
    if shard is None and had_store:
        fsafety.clean_own_temp_files(run_dir)
    try:
        return Store(store_dir / STORE_NAME)
    except (StoreError, fsafety.StorageFault):
        # a failed creation leaves nothing behind
        resume_module.remove_new_dirs(store_dir, new_dirs)
        raise


def _done(p: Prepared, store: Store, run_dir: Path, shard) -> set[str]:
    """Finished rows with their files (a shard also counts the run store's); reports lost files."""
    need_npy = p.exp.save_npy or bool(p.set_metrics)
    done, missing = resume_module.done_with_files(store, run_dir, need_npy)
    main_store = run_dir / STORE_NAME
    if shard is not None and main_store.exists():
        with Store(main_store) as ms:
            d2, m2 = resume_module.done_with_files(ms, run_dir, need_npy)
        done |= d2
        missing += [m for m in m2 if m not in missing]
    if missing:
        sys.stderr.write(
            f"invbench: {run_dir}: {len(missing)} finished row(s) lost their files (e.g. "
            f"{missing[0]}); "
            "recomputing them\n"
        )
    return done


def _cells(p: Prepared, shard, cell_indices: list[int] | None) -> list[Cell]:
    if cell_indices is not None:
        return [p.cells[i] for i in cell_indices]
    return p.cells if shard is None else p.cells[shard[0] :: shard[1]]


def _todo(
    p: Prepared, cells: list[Cell], done: set[str]
) -> tuple[int, int, list[tuple[Cell, list]]]:
    """Rows of ``cells`` (total), how many are done, and per cell the (image index, seed) to do."""
    exp = p.exp
    todo_by_cell = []
    total = already = 0
    for cell in cells:
        todo = []
        for idx, iid in enumerate(p.datasets[cell.dataset].ids):
            for seed in exp.seeds:
                total += 1
                rid = row_id(
                    exp.config_hash,
                    cell.solver,
                    cell.preset,
                    cell.task.name,
                    cell.dataset,
                    cell.prior,
                    iid,
                    seed,
                )
                if rid in done:
                    already += 1
                else:
                    todo.append((idx, seed))
        todo_by_cell.append((cell, todo))
    return total, already, todo_by_cell


def _run_cells(
    p: Prepared, store: Store, run_dir: Path, env: dict, todo_by_cell: list, bar
) -> dict[str, int]:
    """Run every cell's rows, writing each batch's rows; returns rows per status."""
    counts: dict[str, int] = {}
    try:
        for k, (cell, todo) in enumerate(todo_by_cell):
            if not todo:
                continue
            bar.set_postfix_str(f"cell {k + 1}/{len(todo_by_cell)} {cell.label()}", refresh=False)
            for rows in _cell_rows(p, cell, todo, run_dir, env):
                store.write_rows(rows)
                for r in rows:
                    counts[r["status"]] = counts.get(r["status"], 0) + 1
                bar.update(len(rows))
    finally:
        bar.close()
    return counts


def _cell_rows(p: Prepared, cell: Cell, todo: list, run_dir: Path, env: dict):
    """The rows of one cell, batch by batch (after a skip, the rest is skipped without running)."""
    solver = p.solvers[(cell.entry, cell.preset)]
    cost.reset_gpu_peak(p.device)
    cost.reset_rss_peak()
    skip_reason = None
    warmed = False
    for batch in execute.batches(execute.items_for(p, cell, todo), p.exp.batch_size):
        if skip_reason is not None:
            yield execute.status_rows(p, cell, batch, env, "skipped", skip_reason)
            continue
        if p.exp.warmup and not warmed:
            execute.warmup(p, cell, solver, batch[0])
            warmed = True
        rows, skip_reason = execute.run_batch(p, cell, solver, batch, run_dir, env)
        yield rows


def progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar over the grid's images on stderr (disabled unless ``enabled``)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc="invbench",
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
    )
