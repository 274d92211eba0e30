"""Local runs, and the body of one shard job (the worker side of every executor)."""


from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Experiment
from .common import ExecutorError, _ShardResult
from .slurm import _slurm_worker_signals


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
    from ..run import prepare, run

    p = prepared if prepared is not None else prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
    return run(p, run_dir, resume=resume, progress=progress, allow_nonempty=allow_nonempty)


def shard_job(config_text: str, base_dir: str, run_dir: str, shard: int, n_shards: int, cells: list[int] | None = None,
              setup: Callable[[], Any] | None = None, parent: tuple[int, str | None] | None = None) -> _ShardResult:
    """Body of one array task: rebuild the experiment and run shard ``shard`` of ``n_shards``.

    ``cells`` (indices into the cheapest-first cell list) overrides the round-robin split.
    ``setup`` is called first (tests use it to register test-only parts in the worker process).
    ``parent`` (pid, start time) makes the worker exit when that process is gone (local jobs).
    """
    from .. import config
    from ..run import prepare, run

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
