"""Why a shard job ended without a result: its last exception, its signal, Slurm's state."""


from __future__ import annotations

import re
import signal

from .common import ExecutorError
from .slurm import _SLURM_WHY, _why

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
