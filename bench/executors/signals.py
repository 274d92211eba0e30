"""SIGTERM, SIGINT and SIGHUP of the submitting process: its jobs are cancelled, Slurm arrays with one scancel."""


from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

from .common import _notice
from .slurm import _slurm


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
