"""What the submitting process knows of each shard, and the loop that waits for them."""


from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .causes import _no_result_cause, _result
from .common import ExecutorError, _notice, _ShardResult
from .signals import _Interrupts
from .slurm import _GONE, _RESOURCE_NAMES, _SLURM_ENDED, _SLURM_RUNNING, _SlurmQueue


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
