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
  (:class:`ExecutorError`) naming the shard, its cause and its log file: the last exception of
  the worker's traceback (e.g. ``StorageFault: ...: No space left on device``), or, for a worker
  that ended without a result (killed, out of memory, cancelled), "worker exited without a
  result" with the signal when submitit knows it, submitit's job state (Slurm: ``TIMEOUT``,
  ``OUT_OF_MEMORY``, ...) and the last error line of its log.

Shard count
  At most :data:`MAX_SHARDS` shards (``--shards`` / ``execution.shards``; more is refused with a
  ConfigError). Shards beyond the number of cells would be empty and are not submitted.

Calibration
  The submitting process calibrates the device at the start (meta ``calibration``, as a local
  run does: :mod:`invbench.bench.calibration`); each worker calibrates its own device too, and
  after the merge the run's meta ``calibration_shards`` holds them as ``{shard: calibration}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, Experiment
from .store import STORE_NAME, Store

__all__ = ["MAX_SHARDS", "ExecutorError", "check_shards", "run_local", "run_submitit", "shard_job"]

MAX_SHARDS = 10_000
"""Most shards a run is split into (``--shards``, ``execution.shards``): Slurm's default
``MaxArraySize`` is 1001, and each shard is a process with its own store."""

LOCAL_TIMEOUT_MIN = 60 * 24 * 365
"""Time limit (minutes) given to local submitit jobs: in effect none."""


class ExecutorError(RuntimeError):
    """A shard job failed or could not start; ``str(e)`` is one line naming the shard and its log."""


def check_shards(n: int, option: str = "--shards") -> int:
    """``n`` when ``1 <= n <= MAX_SHARDS``, else :class:`ConfigError` naming ``option``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SHARDS:
        raise ConfigError(f"{option}: must be between 1 and {MAX_SHARDS} (the most shards a run is split into), "
                          f"got {n}")
    return n


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


_NO_OUTPUT = re.compile(r"has not produced any output \(state: ([^)\n]*)\)")
_LOG_ERROR = re.compile(r"error|killed|oom|out of memory|cancel|signal|fatal|terminated|segmentation|abort",
                        re.IGNORECASE)


def _last_exception(text: str) -> str | None:
    """The exception line of the last Python traceback in ``text`` (the first line after its
    frames that is not indented), or None when ``text`` holds no traceback."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    for ln in lines[starts[-1] + 1:]:
        if ln.strip() and not ln[0].isspace():
            return ln.strip()
    return None


def _signal_of(job) -> str:
    """"killed by signal N (NAME)" when the job's process (submitit-local) died of a signal, else ""."""
    proc = getattr(job, "_process", None)
    rc = getattr(proc, "returncode", None)
    if not isinstance(rc, int) or rc >= 0:
        return ""
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {-rc} ({name})"


def _no_result_cause(text: str, job) -> str:
    """Why a worker that produced no result ended: the signal (when submitit knows it), the job
    state, and the last error line of its log."""
    m = _NO_OUTPUT.search(text)
    state = m.group(1).strip() if m else str(getattr(job, "state", "") or "unknown")
    log = text.split("-" * 40, 1)[1] if "-" * 40 in text else ""
    errs = [ln.strip() for ln in log.splitlines()
            if ln.strip() and not ln.startswith("submitit ") and _LOG_ERROR.search(ln)]
    parts = [p for p in (_signal_of(job), f"state {state}") if p]
    if errs:
        parts.append(f"last error in its log: {errs[-1]}")
    elif not parts[0].startswith("killed"):
        parts.append("no error in its log: killed from outside, e.g. SIGKILL or the out-of-memory killer")
    return "worker exited without a result (" + "; ".join(parts) + ")"


def _cause(e: BaseException, job) -> str:
    """One line: why a shard job failed (see the module docstring, "Signals and limits")."""
    text = str(e)
    exc = _last_exception(text)
    if exc is not None:
        return exc
    if _NO_OUTPUT.search(text):
        return _no_result_cause(text, job)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _result(job, sid: int):
    """The job's result, or :class:`ExecutorError`: one line naming the shard, its cause
    (:func:`_cause`) and its log."""
    import submitit

    try:
        return job.result()
    except submitit.core.utils.UncompletedJobError as e:
        why = " ".join(_cause(e, job).split())
        log = getattr(getattr(job, "paths", None), "stderr", "")
        hint = "" if "--resume" in why[:500] else "; finished rows are kept, rerun with --resume"
        raise ExecutorError(f"shard {sid} failed: {why[:500]} (log: {log}){hint}") from None


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


def _calibrate(p, st: Store) -> None:
    """Meta ``calibration`` of the run, measured in this (the submitting) process exactly as
    :func:`invbench.bench.runner.run` measures it for a local run."""
    from . import calibration

    cal = calibration.calibrate(p.priors, p.exp.batch_size, p.device, p.dtype)
    st.set_meta({"calibration": json.dumps(cal)})


def _record_shard_calibrations(st: Store, run_dir: Path, n_shards: int) -> None:
    """Meta ``calibration_shards``: ``{shard id: calibration}`` of each shard store of this run
    (each worker calibrates its own device at its start)."""
    from .store import load_meta

    out: dict[str, Any] = {}
    for sid in range(n_shards):
        sp = run_dir / "shards" / str(sid) / STORE_NAME
        if not sp.exists():
            continue
        try:
            out[str(sid)] = json.loads(load_meta(sp).get("calibration", ""))
        except ValueError:   # a worker that ended before calibrating
            continue
    if out:
        st.set_meta({"calibration_shards": json.dumps(out, sort_keys=True)})


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
    n = check_shards(shards, "--shards") if shards else check_shards(exp.execution.shards, "execution.shards")
    p = prepared if prepared is not None else runner.prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
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
            _calibrate(p, st)
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
            parts = [idxs[k::n] for k in range(min(n, len(idxs)))]   # shards beyond the cells would be empty
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
            _record_shard_calibrations(st, run_dir, shard_id)
            runner.compute_set_metrics(p, st, run_dir)
            counts: dict[str, int] = {}
            for r in st.rows("WHERE config_hash=?", (exp.config_hash,)):
                counts[r["status"]] = counts.get(r["status"], 0) + 1
    return runner.RunSummary(run_dir, sum(r.rows for r in results), counts, 0, 0.0)
