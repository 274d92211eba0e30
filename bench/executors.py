"""Execution backends: local (one device, in this process) and submitit (job arrays of grid shards).

submitit backend
  The cheapest-first cell list is split round-robin into ``n`` shards (shard ``k`` runs cells
  ``k, k+n, ...``), grouped by the solver's ``resources`` table (a job array per distinct
  resource set). Each array task re-loads the experiment from its TOML text, validates it, and
  runs its shard into ``RUN_DIR/shards/<k>/results.sqlite`` (images go to RUN_DIR directly; their
  paths are unique per row). When every task has finished, the shard stores are merged into
  ``RUN_DIR/results.sqlite`` and the set metrics are computed. Rows already finished in the run
  store are skipped by the shards, so ``--resume`` works the same way as locally.

  ``cluster`` is passed to ``submitit.AutoExecutor``: ``None`` lets submitit pick Slurm when
  available, ``"local"`` runs the tasks as local subprocesses (submitit's LocalExecutor),
  ``"debug"`` runs them in this process (DebugExecutor) — both are used by the tests.

Signals and limits
  Local shard workers watch the process that submitted them (pid and start time) twice a second
  and exit when it is gone, however it ended (SIGTERM, SIGINT, SIGKILL); SIGTERM/SIGINT of the
  parent also cancel the jobs. Rows a shard committed stay in its store and are merged by the next
  ``--resume`` (every existing ``shards/*/results.sqlite`` is merged before new jobs start).
  Local jobs have no time limit (submitit's default of a few minutes would kill long shards);
  Slurm jobs use ``execution.resources.timeout_min`` (or the solver's ``resources``) — set it to
  fit the work, a line says so when it is missing. A failed shard is reported as one line
  (:class:`ExecutorError`) naming the shard, its error and its log file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Experiment
from .store import STORE_NAME, Store

__all__ = ["ExecutorError", "run_local", "run_submitit", "shard_job"]

LOCAL_TIMEOUT_MIN = 60 * 24 * 365
"""Time limit (minutes) given to local submitit jobs: in effect none."""


class ExecutorError(RuntimeError):
    """A shard job failed or could not start; ``str(e)`` is one line naming the shard and its log."""


def _start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    if start is not None:
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(pid: int, start: str | None, period_s: float = 0.5) -> None:
    """Exit this process (status 143) as soon as process ``pid`` (started at ``start``) is gone."""
    def loop() -> None:
        while _alive(pid, start):
            time.sleep(period_s)
        os._exit(143)   # like a kill: committed rows are whole, the next --resume finishes the rest

    threading.Thread(target=loop, name="invbench-parent-watch", daemon=True).start()


def run_local(exp: Experiment, run_dir: str | Path, *, resume: bool = False, progress: bool = True, prepared=None,
              allow_nonempty: bool = False):
    """Validate (unless ``prepared`` is given) and run ``exp`` in this process."""
    from . import runner

    p = prepared if prepared is not None else runner.prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
    return runner.run(p, run_dir, resume=resume, progress=progress, allow_nonempty=allow_nonempty)


@dataclass
class _ShardResult:
    shard: int
    rows: int
    counts: dict


def shard_job(config_text: str, base_dir: str, run_dir: str, shard: int, n_shards: int, cells: list[int] | None = None,
              setup: Callable[[], Any] | None = None, parent: tuple[int, str | None] | None = None) -> _ShardResult:
    """Body of one array task: rebuild the experiment and run shard ``shard`` of ``n_shards``.

    ``cells`` (indices into the cheapest-first cell list) overrides the round-robin split.
    ``setup`` is called first (tests use it to register test-only parts in the worker process).
    ``parent`` (pid, start time) makes the worker exit when that process is gone (local jobs).
    """
    from . import config, runner

    if parent is not None and parent[0] != os.getpid():
        _watch_parent(*parent)
    if setup is not None:
        setup()
    exp = config.loads(config_text, base_dir=base_dir, source="shard config")
    p = runner.prepare(exp)
    s = runner.run(p, run_dir, resume=True, shard=(shard, n_shards), cell_indices=cells, progress=False)
    return _ShardResult(shard, s.rows, s.counts)


def _result(job, sid: int):
    """The job's result, or :class:`ExecutorError` with the last line of its error."""
    import submitit

    try:
        return job.result()
    except submitit.core.utils.UncompletedJobError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        errs = [ln for ln in lines if (ln.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt"))
                                       and not ln.startswith(("submitit.", "raise ")))]
        why = errs[-1] if errs else (lines[0] if lines else type(e).__name__)
        log = getattr(getattr(job, "paths", None), "stderr", "")
        raise ExecutorError(f"shard {sid} failed: {why[:300]} (log: {log}); finished rows are kept, rerun with "
                            "--resume") from None


def _wait_shard_locks(run_dir: Path, wait_s: float = 30.0) -> None:
    """Wait until no process holds a shard folder's lock (workers of an interrupted run exit
    within a second of their parent); ExecutorError after ``wait_s``."""
    for lock in sorted((run_dir / "shards").glob("*/.lock")):
        t0 = time.time()
        fd = os.open(lock, os.O_RDONLY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.time() - t0 > wait_s:
                        raise ExecutorError(f"{lock.parent}: a shard of an earlier run still holds this folder after "
                                            f"{wait_s:.0f} s; stop that process, then rerun with --resume") from None
                    time.sleep(0.2)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _cancel_on_signal():
    """Yield a job list; on SIGTERM (turned into KeyboardInterrupt) or any error, cancel the
    jobs still running. The previous SIGTERM handler is restored on exit."""
    jobs: list = []

    def term(signum, frame):
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, term) if main else None
    try:
        yield jobs
    except BaseException:
        for j in jobs:
            with contextlib.suppress(Exception):
                if not j.done():
                    j.cancel(check=False)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, old)


def _resource_params(res: dict) -> dict:
    out = {}
    for k, v in res.items():
        if k == "partition":
            out["slurm_partition"] = v
        else:
            out[k] = v
    return out


def run_submitit(
    exp: Experiment,
    run_dir: str | Path,
    *,
    resume: bool = False,
    shards: int | None = None,
    cluster: str | None = None,
    folder: str | Path | None = None,
    setup: Callable[[], Any] | None = None,
    prepared=None,
    allow_nonempty: bool = False,
):
    """Run ``exp`` as submitit job arrays of grid shards, wait, and merge the shard stores."""
    import submitit

    from . import runner

    run_dir = Path(run_dir)
    p = prepared if prepared is not None else runner.prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
    n = int(shards or exp.execution.shards)
    # refused read-only before anything is created, and checked again under the lock (another
    # run may have created the store between the two checks), as in runner.run
    runner._refuse_existing(run_dir, exp, resume, p.input_hashes)
    runner._refuse_foreign(run_dir, allow_nonempty, runner.RunError)
    had_store = (run_dir / STORE_NAME).exists()   # else nothing in the folder is this run's
    run_dir.mkdir(parents=True, exist_ok=True)
    store_path = run_dir / STORE_NAME
    env = runner.env_info(p.device)
    with runner._lock(run_dir), _cancel_on_signal() as jobs:
        runner._refuse_existing(run_dir, exp, resume, p.input_hashes)
        _wait_shard_locks(run_dir)
        from . import fsafety

        if had_store:
            fsafety.clean_own_temp_files(run_dir)
        with Store(store_path) as st:
            runner._write_start(p, st, run_dir, env, False, keep_truth=had_store)
            for sp in sorted((run_dir / "shards").glob(f"*/{STORE_NAME}")):   # rows of an interrupted run
                st.merge_from(sp)
        # group cells by solver resources, split each group round-robin into n shards
        res_of = {s.label: dict(s.resources) for s in exp.solvers}
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(p.cells):
            key = tuple(sorted({**exp.execution.resources, **res_of.get(c.solver, {})}.items()))
            groups.setdefault(key, []).append(i)
        text = exp.toml_text()
        shard_id = 0
        local = cluster in ("local", "debug")
        parent = (os.getpid(), _start_time(os.getpid())) if cluster == "local" else None
        log_folder = Path(folder or exp.execution.folder or run_dir / "submitit")
        for key, idxs in groups.items():
            ex = submitit.AutoExecutor(folder=str(log_folder), cluster=cluster)
            params = _resource_params(dict(key))
            if local and "timeout_min" not in params:
                params["timeout_min"] = LOCAL_TIMEOUT_MIN
            elif "timeout_min" not in params:
                sys.stderr.write("invbench: execution.resources.timeout_min is not set: Slurm jobs get the cluster's "
                                 "default time limit; set it to fit the work\n")
            if params:
                ex.update_parameters(**params)
            ex.update_parameters(name=f"invbench-{exp.name}")
            parts = [idxs[k::n] for k in range(n) if idxs[k::n]]
            ids = list(range(shard_id, shard_id + len(parts)))
            shard_id += len(parts)
            with ex.batch():
                for sid, part in zip(ids, parts):
                    jobs.append(ex.submit(shard_job, text, exp.base_dir, str(run_dir), sid, 1, part, setup, parent))
        results = [_result(j, sid) for sid, j in enumerate(jobs)]
        with Store(store_path) as st:
            for sid in range(shard_id):
                sp = run_dir / "shards" / str(sid) / STORE_NAME
                if sp.exists():
                    st.merge_from(sp)
            runner.compute_set_metrics(p, st, run_dir)
            counts: dict[str, int] = {}
            for r in st.rows("WHERE config_hash=?", (exp.config_hash,)):
                counts[r["status"]] = counts.get(r["status"], 0) + 1
    return runner.RunSummary(run_dir, sum(r.rows for r in results), counts, 0, 0.0)
