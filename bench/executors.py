"""Execution backends: local (one device, in this process) and submitit (job arrays of grid shards).

submitit backend
  The cheapest-first cell list is split round-robin into ``n`` shards (shard ``k`` runs cells
  ``k, k+n, ...``), grouped by the solver's ``resources`` table (a job array per distinct
  resource set). Each array task re-loads the experiment from its TOML text, validates it, and
  runs its shard into ``RUN_DIR/shards/<k>/results.sqlite`` (images go to RUN_DIR directly; their
  paths are unique per row). When every task has finished, the shard stores are merged into
  ``RUN_DIR/results.sqlite`` and the set metrics are computed. Rows already finished in the run
  store are skipped by the shards, so ``--resume`` works the same way as locally.

  ``cluster``: ``"slurm"`` (or None; Slurm's client commands must be on PATH, else a
  ConfigError: submitit would quietly run the shards locally), ``"local"`` runs the tasks as
  local subprocesses (submitit's LocalExecutor), ``"debug"`` runs them in this process
  (DebugExecutor) — both are used by the tests. A progress bar of the local form shows rows done
  and ``shards D done, R running, P pending (reason)``; each array's log files are named once.

Slurm (docs/cluster.md)
  Job states come from one ``squeue`` call per poll (every 1 s at first, then a twentieth of the
  time waited, at most 30 s), ``sacct`` only for a job that left the queue: a cluster without
  accounting gets one notice, not submitit's warning per poll. A refused array (unknown
  partition, more memory than any node) is a ConfigError naming the resources, and a new run's
  folder is taken back. Arrays are split at ``MaxArraySize``; an unset ``timeout_min`` asks for
  the partition's default time limit (submitit's default would be 5 minutes). A shard that
  fails is announced at once and the others go on; then the run ends with one line for the
  failed shards (nothing is merged into the run store). The array ids are kept in meta
  ``slurm_jobs``: a ``--resume`` refuses while jobs of an earlier submission are still queued or
  running (a submitting process killed with SIGKILL, a rebooted login node).

Signals and limits
  SIGTERM, SIGINT and SIGHUP (unless ignored, as under nohup) of the submitting process cancel
  its jobs: Slurm arrays with one ``scancel``, then a wait (at most :data:`CANCEL_WAIT_S`) until
  the queue lists none of their tasks, so nothing writes into the run folder afterwards. In a
  Slurm task, SIGTERM (scancel, requeue, preemption, the time limit) ends the worker at once
  (submitit's handler would keep it running until SIGKILL) and submitit's USR2 before the time
  limit is ignored; a requeued task starts its shard again and skips the rows it committed.
  Local shard workers watch the process that submitted them (pid and start time) twice a second
  and exit when it is gone, however it ended (SIGTERM, SIGINT, SIGKILL). Rows a shard committed
  stay in its store and are merged by the next ``--resume`` (every existing
  ``shards/*/results.sqlite`` is merged before new jobs start).
  Local jobs have no time limit (submitit's default of a few minutes would kill long shards);
  Slurm jobs use ``execution.resources.timeout_min`` (or the solver's ``resources``) — set it to
  fit the work, a line says so when it is missing. A failed shard is reported as one line
  (:class:`ExecutorError`) naming the shard, its cause and its log file: the last exception of
  the worker's traceback (e.g. ``StorageFault: ...: No space left on device``), or, for a worker
  that ended without a result (killed, out of memory, cancelled), "worker exited without a
  result" with the signal when submitit knows it, the job state with what it means (Slurm:
  ``TIMEOUT``: the limit in minutes, ``OUT_OF_MEMORY``: ``mem_gb``, ``CANCELLED``, ...) and the
  last error line of its log.

Shard count
  At most :data:`MAX_SHARDS` shards (``--shards`` / ``execution.shards``; more is refused with a
  ConfigError). Shards beyond the number of cells would be empty and are not submitted.

Calibration
  The submitting process calibrates the device at the start (meta ``calibration``, as a local
  run does: :mod:`invbench.bench.cost.calibration`); each worker calibrates its own device
  too, and
  after the merge the run's meta ``calibration_shards`` holds them as ``{shard: calibration}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import signal
import subprocess
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
    from .run import prepare, run

    p = prepared if prepared is not None else prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
    return run(p, run_dir, resume=resume, progress=progress, allow_nonempty=allow_nonempty)


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
    from . import config
    from .run import prepare, run

    if parent is not None and parent[0] != os.getpid():
        _watch_parent(*parent)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and threading.current_thread() is threading.main_thread():
        _slurm_worker_signals()
    if setup is not None:
        setup()
    exp = config.loads(config_text, base_dir=base_dir, source="shard config")
    p = prepare(exp)
    s = run(p, run_dir, resume=True, shard=(shard, n_shards), cell_indices=cells, progress=False)
    return _ShardResult(shard, s.rows, s.counts)


_NO_OUTPUT = re.compile(r"has not produced any output \(state: ([^)\n]*)\)")
_SRUN_SUMMARY = re.compile(r"^srun: error: \S+: tasks? [\d,-]+: (Exited with exit code|Killed|Terminated)")
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


def _no_result_cause(text: str, job, params: dict | None = None) -> str:
    """Why a worker that produced no result ended: the signal (when submitit knows it), the job
    state (with what a Slurm state means, and the limit it ran into: ``params``), and the last
    error line of its log."""
    m = _NO_OUTPUT.search(text)
    state = m.group(1).strip() if m else str(getattr(job, "state", "") or "unknown")
    state = state.split()[0] if state.strip() else "unknown"   # sacct: "CANCELLED by 0"
    log = text.split("-" * 40, 1)[1] if "-" * 40 in text else ""
    errs = [ln.strip() for ln in log.splitlines()
            if ln.strip() and not ln.startswith("submitit ") and _LOG_ERROR.search(ln)]
    errs = [e for e in errs if not _SRUN_SUMMARY.search(e)] or errs   # the cause, not srun's "task 0: Exited"
    parts = [p for p in (_signal_of(job), f"state {state}{_why(state, params)}") if p]
    if errs:
        parts.append(f"last error in its log: {errs[-1]}")
    elif not parts[0].startswith("killed") and state not in _SLURM_WHY:
        parts.append("no error in its log: killed from outside, e.g. SIGKILL or the out-of-memory killer")
    return "worker exited without a result (" + "; ".join(parts) + ")"


def _cause(e: BaseException, job, params: dict | None = None) -> str:
    """One line: why a shard job failed (see the module docstring, "Signals and limits")."""
    text = str(e)
    exc = _last_exception(text)
    if exc is not None:
        return exc
    if _NO_OUTPUT.search(text):
        return _no_result_cause(text, job, params)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _result(job, sid: int, params: dict | None = None):
    """The job's result, or :class:`ExecutorError`: one line naming the shard, its cause
    (:func:`_cause`; ``params``: the resources it was submitted with) and its log."""
    import submitit

    try:
        return job.result()
    except submitit.core.utils.UncompletedJobError as e:
        why = " ".join(_cause(e, job, params).split())
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


class _Interrupts:
    """SIGTERM, SIGHUP and SIGINT as KeyboardInterrupt, deferred inside :meth:`deferred` (a job
    array being submitted is either in the job list or not submitted when the interrupt lands)."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.received: int | None = None   # the first signal, kept even where a library swallows the exception

    def handler(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
        if self.depth:
            self.pending = True
            return
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived (the waiting loop asks between polls)."""
        if self.received is not None and not self.depth:
            raise KeyboardInterrupt

    def sleep(self, seconds: float) -> None:
        """Sleep in slices of at most 0.5 s, checking for a signal between them (a signal the
        kernel delivers to another thread does not wake a sleeping main thread)."""
        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.5, left))

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


@contextlib.contextmanager
def _cancel_on_signal(cluster: str | None = "local"):
    """Yield ``(jobs, interrupts)``: a job list and an :class:`_Interrupts`. On SIGTERM, SIGINT,
    SIGHUP (unless ignored, e.g. under nohup) or any error, the jobs still running are cancelled
    (Slurm: one ``scancel`` of their arrays, then a wait until none is left in the queue). The
    previous handlers are restored on exit."""
    jobs: list = []
    intr = _Interrupts()
    main = threading.current_thread() is threading.main_thread()
    old: dict[int, Any] = {}
    if main:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, intr.handler)
    try:
        yield jobs, intr
    except BaseException:
        intr.depth += 1   # a second Ctrl-C does not stop the cancelling (it is bounded: CANCEL_WAIT_S)
        try:
            if cluster in ("local", "debug"):
                for j in jobs:
                    with contextlib.suppress(Exception):
                        if not j.done():
                            j.cancel(check=False)
            elif jobs:
                _cancel_slurm(jobs)
        finally:
            intr.depth -= 1
        raise
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


CANCEL_WAIT_S = 120.0
"""How long an interrupted submitting process waits for its cancelled Slurm jobs to leave the queue."""


def _cancel_slurm(jobs: list, wait_s: float = CANCEL_WAIT_S) -> None:
    """``scancel`` the arrays of ``jobs`` at once, then wait until ``squeue`` lists none of their
    tasks (their workers have stopped writing); one line on stderr says what is left, if anything.
    The whole of it takes at most ``wait_s`` plus one client call's 10 s: each Slurm command gets
    what is left of the wait (a busy slurmctld cannot hold the interrupted process longer)."""
    ids = sorted({str(j.job_id).split("_")[0] for j in jobs}, key=lambda i: (len(i), i))
    _notice(f"cancelling Slurm job(s) {' '.join(ids)} ({len(jobs)} shard(s)) ...")
    t0 = time.time()
    _slurm(["scancel", *ids], timeout=10)
    left: list[str] = []
    while time.time() - t0 < wait_s:   # a second Ctrl-C meanwhile is deferred (see _cancel_on_signal)
        r = _slurm(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"],
                   timeout=max(1.0, min(10.0, wait_s - (time.time() - t0))))
        if r is not None and (r.returncode == 0 or "invalid job id" in r.stderr.lower()):
            left = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
            if not left:
                break
        time.sleep(0.5)
    if left:
        _notice(f"cancelled Slurm job(s) {' '.join(ids)}, but after {time.time() - t0:.0f} s the queue still lists "
                f"{', '.join(left[:4])}{' ...' if len(left) > 4 else ''}: check squeue before --resume")
    else:
        _notice(f"cancelled Slurm job(s) {' '.join(ids)} ({len(jobs)} shard(s)); none is left in the queue")


def _calibrate(p, st: Store) -> None:
    """Meta ``calibration`` of the run, measured in this (the submitting) process exactly as
    :func:`invbench.bench.run.run` measures it for a local run."""
    from .cost import calibration

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


_SLURM_ONLY = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
               "constraint": "slurm_constraint", "gres": "slurm_gres", "array_parallelism": "slurm_array_parallelism"}
"""Resource keys that only Slurm knows, as submitit's ``AutoExecutor`` parameters (other executors ignore them)."""
_RESOURCE_NAMES = {v: k for k, v in _SLURM_ONLY.items()}


def _resource_params(res: dict) -> dict:
    """submitit ``AutoExecutor`` parameters of a ``resources`` table."""
    return {_SLURM_ONLY.get(k, k): v for k, v in res.items()}


def _notice(line: str) -> None:
    """One ``invbench: ...`` line on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"invbench: {line}", file=sys.stderr)


# --------------------------------------------------------------------------- Slurm


def _slurm(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
    """Run a Slurm client command (output captured, never printed); None when it could not run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _require_slurm() -> None:
    """ConfigError unless Slurm's client commands are here (submitit would silently run the
    shards as local processes instead)."""
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"--executor slurm: {', '.join(missing)} not found on PATH (no Slurm client here); run "
                          "from a login node of the cluster, or use --executor submitit-local on one machine")


def _slurm_config() -> dict[str, str]:
    """``scontrol show config`` as a dict ({} when it cannot be read)."""
    r = _slurm(["scontrol", "show", "config"])
    out: dict[str, str] = {}
    if r is not None and r.returncode == 0:
        for ln in r.stdout.splitlines():
            k, sep, v = ln.partition("=")
            if sep:
                out[k.strip()] = v.strip()
    return out


def _slurm_minutes(t: str) -> int | None:
    """Minutes of a Slurm duration as scontrol prints it (``[D-]HH:MM:SS``); None for
    ``UNLIMITED``, ``NONE`` or anything else."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", t.strip())
    if not m:
        return None
    d, h, mi, se = (int(x or 0) for x in m.groups())
    return d * 1440 + h * 60 + mi + (1 if se else 0)


def _partition_time(partition: str | None) -> tuple[str, int | None]:
    """``(partition, minutes)``: the partition's ``DefaultTime``, else its ``MaxTime`` (the
    default partition when ``partition`` is None); minutes None when unlimited or unknown."""
    r = _slurm(["scontrol", "show", "partition", "-o", *([partition] if partition else [])])
    if r is None or r.returncode != 0:
        return partition or "default", None
    for ln in r.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in ln.split() if "=" in kv)
        if partition or f.get("Default") == "YES":
            name = f.get("PartitionName", partition or "default")
            for key in ("DefaultTime", "MaxTime"):
                m = _slurm_minutes(f.get(key, ""))
                if m:
                    return name, m
            return name, None
    return partition or "default", None


_SLURM_ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                          "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"})
_SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"})
_GONE = "GONE"
"""State of a job that neither squeue nor sacct knows any more."""

_SLURM_WHY = {
    "TIMEOUT": "it ran past its time limit{limit}",
    "CANCELLED": "it was cancelled (scancel, or an administrator)",
    "OUT_OF_MEMORY": "it ran out of memory{mem}",
    "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to boot",
    "PREEMPTED": "it was preempted by a job of higher priority",
    "DEADLINE": "it reached its deadline",
    "FAILED": "its batch script or srun failed",
    _GONE: "the job left Slurm's queue without a result, and accounting (sacct) does not know it",
}


def _why(state: str, params: dict | None) -> str:
    """``": <what the state means>"`` for a Slurm state, with the limit it ran into; '' otherwise."""
    text = _SLURM_WHY.get(state)
    if text is None:
        return ""
    params = params or {}
    t = params.get("timeout_min")
    mem = params.get("mem_gb")
    return ": " + text.format(limit=f" of {t} min (timeout_min)" if t else "",
                              mem=f" (mem_gb = {mem})" if mem else "")


class _SlurmQueue:
    """States of this run's Slurm jobs from one ``squeue`` call per poll (every state slurmctld
    still holds, ``MinJobAge``); ``sacct`` only for jobs that left it. A cluster without
    accounting gets one notice, not a warning per poll (submitit's own watcher calls sacct on
    every poll and warns each time)."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[str, str]] = {}   # job id ("12_3") -> (state, pending reason)
        self._absent: dict[str, int] = {}
        self.sacct: bool | None = None   # None: not tried yet

    def poll(self, ids: list[str]) -> None:
        """Refresh the states of ``ids``; a failed ``squeue`` (slurmctld busy) keeps the last ones."""
        if not ids:
            return
        arrays = sorted({i.split("_")[0] for i in ids}, key=lambda i: (len(i), i))
        r = _slurm(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-o", "%i|%T|%r"])
        if r is None or (r.returncode != 0 and "invalid job id" not in r.stderr.lower()):
            return
        seen: dict[str, tuple[str, str]] = {}
        for ln in r.stdout.splitlines():
            f = ln.strip().split("|")
            if len(f) == 3:
                seen[f[0]] = (f[1], f[2])
        missing = [i for i in ids if i not in seen]
        if missing:
            seen.update(self._accounting(missing))
        for i in ids:
            if i in seen:
                self.states[i] = seen[i]
                self._absent.pop(i, None)
            else:   # twice in a row in neither: gone
                self._absent[i] = self._absent.get(i, 0) + 1
                if self._absent[i] >= 2:
                    self.states[i] = (_GONE, "")

    def _accounting(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        if self.sacct is False:
            return {}
        arrays = sorted({i.split("_")[0] for i in ids}, key=lambda i: (len(i), i))
        r = _slurm(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)])
        if r is None or r.returncode != 0:
            self.sacct = False
            why = " ".join((r.stderr if r is not None else "").split()) or "sacct did not answer"
            _notice(f"Slurm accounting is not available here ({why[:160]}); the states of this run's jobs come from "
                    "squeue, which keeps a finished job for MinJobAge")
            return {}
        self.sacct = True
        out = {}
        for ln in r.stdout.splitlines():
            f = ln.strip().split("|")
            if len(f) >= 2 and f[0] in ids and f[1]:
                out[f[0]] = (f[1].split()[0], "")
        return out


class _Watcher:
    """Stands in for submitit's sacct-based watcher on this run's Slurm jobs (``job.state``,
    ``job.done()``), reading :class:`_SlurmQueue`."""

    def __init__(self, queue: _SlurmQueue) -> None:
        self.queue = queue

    def register_job(self, job_id: str) -> None:
        pass

    def get_info(self, job_id: str, mode: str = "standard") -> dict[str, str]:
        if mode == "force":
            self.queue.poll([job_id])
        st = self.queue.states.get(job_id)
        return {"State": st[0]} if st else {}

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        return self.get_info(job_id, mode).get("State") or "UNKNOWN"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode) in _SLURM_ENDED | {_GONE}


def _slurm_worker_signals() -> None:
    """In a Slurm task: SIGTERM (scancel, requeue, preemption, the time limit) ends the worker at
    once, as SIGKILL would (committed rows are whole; the next --resume does the rest), instead
    of submitit's handler that logs it and runs on until Slurm's SIGKILL; submitit's USR2, sent
    shortly before the time limit, is ignored (a shard is not checkpointable: Slurm's own limit
    ends it, with state TIMEOUT)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        from submitit.slurm.slurm import SlurmJobEnvironment

        usr = getattr(signal, "SIG" + SlurmJobEnvironment.USR_SIG, signal.SIGUSR2)
    except (ImportError, AttributeError):
        usr = signal.SIGUSR2
    signal.signal(usr, signal.SIG_IGN)


def _refuse_live_jobs(run_dir: Path) -> None:
    """ExecutorError when Slurm jobs of an earlier submission of this run (meta ``slurm_jobs``)
    are still queued or running: they write into the shard stores (the submitting process was
    killed, or lost its login node). Nothing is refused when squeue cannot tell."""
    from .store import load_meta

    try:
        rec = json.loads(load_meta(run_dir).get("slurm_jobs", "") or "{}")
    except (ValueError, OSError):
        return
    ids, name = [str(i) for i in rec.get("jobs", [])], rec.get("name", "")
    if not ids:
        return
    r = _slurm(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%j"])
    if r is None or r.returncode != 0:
        return
    live = [ln.split("|") for ln in r.stdout.splitlines() if ln.count("|") == 2]
    live = [(i, st) for i, st, n in live if n == name]
    if live:
        counts: dict[str, int] = {}
        for _, st in live:
            counts[st.lower()] = counts.get(st.lower(), 0) + 1
        states = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        raise ExecutorError(f"{run_dir}: Slurm job(s) {' '.join(ids)} of an earlier submission of this run are still in "
                            f"the queue ({states}) and write into its shards; wait for them to end, or cancel them "
                            f"(scancel {' '.join(ids)}), then rerun with --resume")


@dataclass
class _Shard:
    """One submitted shard and what the submitting process knows of it."""

    sid: int
    job: Any
    params: dict
    rows: int
    store: Path
    start_rows: int = 0
    rows_now: int = 0
    result: _ShardResult | None = None
    failure: str | None = None
    ended_at: float | None = None

    @property
    def open(self) -> bool:
        return self.result is None and self.failure is None


def _count_rows(db: Path) -> int:
    """Rows of a results store, read-only; 0 while it does not exist or cannot be read."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _result_file_exists(job) -> bool:
    folder = job.paths.folder
    with contextlib.suppress(OSError):
        folder.chmod(folder.stat().st_mode)   # refresh a network file system's cached view of the folder
    return job.paths.result_pickle.exists()


RESULT_GRACE_S = {"COMPLETED": 15.0, _GONE: 15.0}
"""Seconds a job Slurm shows ended may take to show its result file (network file systems);
3 s for states that kill the worker."""


def _log_tail(job, lines: int = 40) -> str:
    out = []
    for p in (job.paths.stderr, job.paths.stdout):
        with contextlib.suppress(OSError):
            out += Path(p).read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(out)


def _ended_without_result(s: _Shard, state: str) -> str:
    """The one line of a Slurm task that ended without a result (see :func:`_result`)."""
    text = f"has not produced any output (state: {state})\n" + "-" * 40 + "\n" + _log_tail(s.job)
    why = " ".join(_no_result_cause(text, s.job, s.params).split())
    return f"shard {s.sid} failed: {why[:500]} (log: {s.job.paths.stderr})"


def _check_shard(s: _Shard, cluster: str, queue: _SlurmQueue | None, now: float) -> None:
    """Set ``s.result`` or ``s.failure`` when the shard has ended."""
    if cluster == "local":
        if not s.job.done():
            return
    elif queue is not None and not _result_file_exists(s.job):
        state = queue.states.get(s.job.job_id, ("UNKNOWN", ""))[0]
        if state not in _SLURM_ENDED and state != _GONE:
            s.ended_at = None
            return
        if s.ended_at is None:
            s.ended_at = now
        if now - s.ended_at >= RESULT_GRACE_S.get(state, 3.0):
            s.failure = _ended_without_result(s, state)
        return
    try:
        s.result = _result(s.job, s.sid, s.params)
    except ExecutorError as e:
        s.failure = str(e).split("; finished rows are kept")[0]


def _poll_interval(elapsed: float) -> float:
    """Seconds between two looks at the queue: 1 s at first, then a twentieth of the time
    waited so far, at most 30 s (a long run polls Slurm twice a minute)."""
    return min(30.0, max(1.0, elapsed / 20))


def _status(shards: list[_Shard], queue: _SlurmQueue | None) -> str:
    """``shards D done, R running, P pending (reason)[, F failed]``."""
    done = sum(s.result is not None for s in shards)
    failed = sum(s.failure is not None for s in shards)
    running = pending = 0
    reasons: set[str] = set()
    for s in shards:
        if not s.open:
            continue
        if queue is None:
            running += 1
            continue
        state, reason = queue.states.get(s.job.job_id, ("PENDING", ""))
        if state in _SLURM_RUNNING or state in _SLURM_ENDED:
            running += 1
        else:
            pending += 1
            if reason and reason != "None":
                reasons.add(reason)
    why = f" ({', '.join(sorted(reasons)[:2])})" if pending and reasons else ""
    return f"shards {done} done, {running} running, {pending} pending{why}" + (f", {failed} failed" if failed else "")


def _wait(shards: list[_Shard], cluster: str, queue: _SlurmQueue | None, bar, initial: int, total: int,
          intr: _Interrupts | None = None) -> None:
    """Poll until every shard has ended; the bar shows rows done and the shards' states. A
    shard that fails while others run is announced at once; the others go on. A signal stops
    the wait within half a second, also where a library call swallowed its KeyboardInterrupt."""
    t0 = time.time()
    intr = intr or _Interrupts()
    while True:
        intr.check()
        still = [s for s in shards if s.open]
        if not still:
            break
        if queue is not None:
            queue.poll([s.job.job_id for s in still])
        now = time.time()
        for s in still:
            _check_shard(s, cluster, queue, now)
            s.rows_now = _count_rows(s.store)
            if s.failure is not None and any(o.open for o in shards):
                _notice(f"{s.failure}; the other shards go on")
        bar.n = min(total, initial + sum(max(0, s.rows_now - s.start_rows) for s in shards))
        bar.set_postfix_str(_status(shards, queue), refresh=False)
        bar.refresh()
        if any(s.open for s in shards):
            intr.sleep(_poll_interval(time.time() - t0))


def _failure_line(failed: list[_Shard]) -> str:
    """One line for the failed shards: the first one's cause, the others named."""
    line = failed[0].failure or ""
    if len(failed) > 1:
        more = ", ".join(str(s.sid) for s in failed[1:6]) + (" ..." if len(failed) > 6 else "")
        line += f"; {len(failed) - 1} more shard(s) failed ({more}: see their logs)"
    return line + "; finished rows are kept, rerun with --resume"


def _announce(shards: list[_Shard], cluster: str, folder: Path) -> None:
    """Where each shard's log is, once: per Slurm array (or per local start)."""
    if cluster == "debug" or not shards:
        return
    if cluster == "local":
        _notice(f"{len(shards)} shard(s) started as local processes (submitit-local); logs: "
                f"{folder}/<job id>_0_log.err and .out")
        return
    by_array: dict[str, list[_Shard]] = {}
    for s in shards:
        by_array.setdefault(str(s.job.job_id).split("_")[0], []).append(s)
    for jid, group in by_array.items():
        res = ", ".join(f"{_RESOURCE_NAMES.get(k, k)}={v}" for k, v in sorted(group[0].params.items()))
        sids = f"{group[0].sid}-{group[-1].sid}" if len(group) > 1 else f"{group[0].sid}"
        task = "_<task>" if "_" in str(group[0].job.job_id) else ""
        _notice(f"shard(s) {sids}: Slurm job {jid} ({res}); logs: {folder}/{jid}{task}_0_log.err and .out")


def _group_params(key: tuple, cluster: str) -> dict:
    """submitit parameters of one resource group; a time limit is always set (submitit's
    default would be 5 minutes)."""
    params = _resource_params(dict(key))
    if cluster in ("local", "debug"):
        params.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
    elif "timeout_min" not in params:
        part, minutes = _partition_time(params.get("slurm_partition"))
        params["timeout_min"] = minutes or LOCAL_TIMEOUT_MIN
        limit = f"{minutes} min" if minutes else "no limit"
        _notice(f"execution.resources.timeout_min is not set: shards ask for partition {part}'s default time limit "
                f"({limit}); set it to fit the work")
    return params


def _refused(e: BaseException, ids: list[int], params: dict, solvers: list[str]) -> ConfigError:
    """The one line of a job array Slurm refused at submission (unknown partition or account,
    more memory, CPUs or time than any node or the partition allows, ...)."""
    err = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    shown = ", ".join(f"{_RESOURCE_NAMES.get(k, k)}={v}" for k, v in sorted(params.items())) or "no resources"
    where = f"resources of solver(s) {', '.join(solvers)}" if solvers else "execution.resources"
    return ConfigError(f"{where} ({shown}): Slurm refuses them for shards {ids[0]}-{ids[-1]}: "
                       f"{err[:300] or 'sbatch failed'}")


def _submit(groups: dict[tuple, list[int]], n: int, cluster: str, log_folder: Path, exp, run_dir: Path,
            setup, parent, jobs: list, intr: _Interrupts, queue: _SlurmQueue | None, rows_of: Callable[[int], int],
            solvers_of: dict[tuple, list[str]]) -> list[_Shard]:
    """Submit one job array per resource group (split at Slurm's MaxArraySize); an array Slurm
    refuses is a ConfigError naming the resources."""
    import submitit

    text = exp.toml_text()
    max_array = 0
    if queue is not None:
        with contextlib.suppress(ValueError):
            max_array = int(_slurm_config().get("MaxArraySize", "0").split()[0])
    shards: list[_Shard] = []
    sid = 0
    for key, idxs in groups.items():
        params = _group_params(key, cluster)
        ex = submitit.AutoExecutor(folder=str(log_folder), cluster=cluster)
        ex.update_parameters(**params)
        ex.update_parameters(name=f"invbench-{exp.name}")
        parts = [idxs[k::n] for k in range(min(n, len(idxs)))]   # shards beyond the cells would be empty
        chunk = max_array if max_array >= 1 else len(parts)
        for c0 in range(0, len(parts), chunk):
            batch = parts[c0:c0 + chunk]
            ids = list(range(sid, sid + len(batch)))
            sid += len(batch)
            with intr.deferred():
                try:
                    with contextlib.redirect_stderr(io.StringIO()), ex.batch():
                        new = [ex.submit(shard_job, text, exp.base_dir, str(run_dir), i, 1, part, setup, parent)
                               for i, part in zip(ids, batch)]
                except submitit.core.utils.FailedJobError as e:
                    raise _refused(e, ids, params, solvers_of.get(key, [])) from None
                jobs.extend(new)
            for i, part, job in zip(ids, batch, new):
                if queue is not None:
                    job.watcher = _Watcher(queue)
                store = run_dir / "shards" / str(i) / STORE_NAME
                n0 = _count_rows(store)
                shards.append(_Shard(i, job, params, sum(rows_of(c) for c in part), store, n0, n0))
    return shards


def _array_ids(shards: list[_Shard]) -> list[str]:
    """The Slurm job ids of the arrays of ``shards``, in submission order."""
    return sorted({str(s.job.job_id).split("_")[0] for s in shards}, key=lambda i: (len(i), i))


def _snapshot(*folders: Path) -> set[Path]:
    """Every path under ``folders`` (those that exist)."""
    return {f for d in folders if d.is_dir() for f in d.rglob("*")}


def _undo_new_files(before: set[Path], folders: list[Path], run_dir: Path, existed: bool) -> None:
    """Remove what appeared under ``folders`` since ``before`` (files, then emptied folders), and
    ``run_dir`` itself when it did not exist before (a refused submission leaves no run behind)."""
    new = _snapshot(*folders) - before
    for f in sorted(new, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            if f.is_dir() and not f.is_symlink():
                f.rmdir()
            else:
                f.unlink()
    if not existed:
        with contextlib.suppress(OSError):
            (run_dir / ".lock").unlink()
        with contextlib.suppress(OSError):
            run_dir.rmdir()


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
    progress: bool = False,
):
    """Run ``exp`` as submitit job arrays of grid shards, wait, and merge the shard stores.

    ``cluster``: None or ``"slurm"`` (Slurm; its client commands must be on PATH), ``"local"``
    (submitit-local) or ``"debug"`` (in this process).
    """
    from .run import RunSummary, compute_set_metrics, prepare
    from .run import resume as run_resume
    from .run.checks import refuse_not_a_run
    from .run.loop import progress_bar
    from .run.record import env_info, write_start

    run_dir = Path(run_dir)
    cluster = cluster or "slurm"
    if cluster == "slurm":
        _require_slurm()
    n = check_shards(shards, "--shards") if shards else check_shards(exp.execution.shards, "execution.shards")
    p = prepared if prepared is not None else prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
    # refused read-only before anything is created, and checked again under the lock (another
    # run may have created the store between the two checks), as in run.run
    run_resume.refuse_existing(run_dir, exp, resume, p.input_hashes)
    refuse_not_a_run(run_dir, allow_nonempty, run_resume.RunError)
    # group cells by solver resources, split each group round-robin into n shards
    res_of = {s.label: dict(s.resources) for s in exp.solvers}
    groups: dict[tuple, list[int]] = {}
    solvers_of: dict[tuple, list[str]] = {}
    for i, c in enumerate(p.cells):
        key = tuple(sorted({**exp.execution.resources, **res_of.get(c.solver, {})}.items()))
        groups.setdefault(key, []).append(i)
        if res_of.get(c.solver) and c.solver not in solvers_of.setdefault(key, []):
            solvers_of[key].append(c.solver)
    had_store = (run_dir / STORE_NAME).exists()   # else nothing in the folder is this run's
    existed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    store_path = run_dir / STORE_NAME
    env = env_info(p.device)
    queue = _SlurmQueue() if cluster == "slurm" else None
    with run_resume.lock(run_dir), _cancel_on_signal(cluster) as (jobs, intr):
        run_resume.refuse_existing(run_dir, exp, resume, p.input_hashes)
        if queue is not None and had_store:
            _refuse_live_jobs(run_dir)
        _wait_shard_locks(run_dir)
        per_cell = [len(p.datasets[c.dataset].ids) * len(exp.seeds) for c in p.cells]
        parent = (os.getpid(), _start_time(os.getpid())) if cluster == "local" else None
        log_folder = Path(folder or exp.execution.folder or run_dir / "submitit")
        undo = [log_folder] + ([] if had_store else [run_dir])   # what a refused submission takes back
        before = _snapshot(*undo)
        from . import fsafety

        if had_store:
            fsafety.clean_own_temp_files(run_dir)
        with Store(store_path) as st:
            write_start(p, st, run_dir, env, False, keep_truth=had_store)
            _calibrate(p, st)
            for sp in sorted((run_dir / "shards").glob(f"*/{STORE_NAME}")):   # rows of an interrupted run
                st.merge_from(sp)
            initial = st.count_done(exp.config_hash)
        try:
            subs = _submit(groups, n, cluster, log_folder, exp, run_dir, setup, parent, jobs, intr, queue,
                           per_cell.__getitem__, solvers_of)
        except ConfigError:   # arrays submitted before the refused one are cancelled first
            if jobs and queue is not None:
                _cancel_slurm(jobs)
            jobs.clear()
            _undo_new_files(before, undo, run_dir, existed)
            raise
        if queue is not None:   # a later --resume refuses while these are still in the queue
            with Store(store_path) as st:
                st.set_meta({"slurm_jobs": json.dumps({"jobs": _array_ids(subs), "name": f"invbench-{exp.name}"})})
        _announce(subs, cluster, log_folder)
        if cluster == "debug":   # runs each job in this process when its result is asked for
            for s in subs:
                _check_shard(s, cluster, None, time.time())
        else:
            bar = progress_bar(sum(per_cell), min(initial, sum(per_cell)), progress)
            try:
                _wait(subs, cluster, queue, bar, initial, sum(per_cell), intr)
            finally:
                bar.close()
        failed = [s for s in subs if s.failure is not None]
        if failed:
            raise ExecutorError(_failure_line(failed))
        with Store(store_path) as st:
            for s in subs:
                if s.store.exists():
                    st.merge_from(s.store)
            _record_shard_calibrations(st, run_dir, len(subs))
            compute_set_metrics(p, st, run_dir)
            counts: dict[str, int] = {}
            for r in st.rows("WHERE config_hash=?", (exp.config_hash,)):
                counts[r["status"]] = counts.get(r["status"], 0) + 1
    return RunSummary(run_dir, sum(s.result.rows for s in subs if s.result is not None), counts, 0, 0.0)
