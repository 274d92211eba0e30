"""Slurm's client commands (squeue, sacct, scancel, scontrol): states, resources, limits, worker signals."""


from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

from ..config import ConfigError
from .common import ExecutorError, _notice

_SLURM_ONLY = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
               "constraint": "slurm_constraint", "gres": "slurm_gres", "array_parallelism": "slurm_array_parallelism"}
"""Resource keys that only Slurm knows, as submitit's ``AutoExecutor`` parameters (other executors ignore them)."""
_RESOURCE_NAMES = {v: k for k, v in _SLURM_ONLY.items()}


def _resource_params(res: dict) -> dict:
    """submitit ``AutoExecutor`` parameters of a ``resources`` table."""
    return {_SLURM_ONLY.get(k, k): v for k, v in res.items()}


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
    from ..store import load_meta

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
        raise ExecutorError(f"{run_dir}: Slurm job(s) {' '.join(ids)} of an earlier submission of this run are "
                            f"still in the queue ({states}) and write into its shards; wait for them to end, or "
                            f"cancel them (scancel {' '.join(ids)}), then rerun with --resume")
