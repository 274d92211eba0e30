"""``run_submitit``: group the cells by resources, submit the arrays, wait, merge the shard stores."""


from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ConfigError, Experiment
from ..store import STORE_NAME, Store
from .common import LOCAL_TIMEOUT_MIN, ExecutorError, _notice, check_shards
from .local import _start_time, _wait_shard_locks, shard_job
from .shards import _announce, _check_shard, _count_rows, _failure_line, _Shard, _wait
from .signals import _cancel_on_signal, _cancel_slurm, _Interrupts
from .slurm import (
    _RESOURCE_NAMES,
    _partition_time,
    _refuse_live_jobs,
    _require_slurm,
    _resource_params,
    _slurm_config,
    _SlurmQueue,
    _Watcher,
)


def _calibrate(p, st: Store) -> None:
    """Meta ``calibration`` of the run, measured in this (the submitting) process exactly as
    :func:`invbench.bench.run.run` measures it for a local run."""
    from ..cost import calibration

    cal = calibration.calibrate(p.priors, p.exp.batch_size, p.device, p.dtype)
    st.set_meta({"calibration": json.dumps(cal)})


def _record_shard_calibrations(st: Store, run_dir: Path, n_shards: int) -> None:
    """Meta ``calibration_shards``: ``{shard id: calibration}`` of each shard store of this run
    (each worker calibrates its own device at its start)."""
    from ..store import load_meta

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


WARNING_SIGNAL = {"signal": "URG@90"}
"""The signal Slurm sends a shard's task shortly before its time limit: SIGURG, which a process
ignores by default, instead of submitit's USR2, which kills one that has not yet installed a
handler. A shard is not checkpointable (Slurm's own limit ends it, state TIMEOUT), so the warning
has no use; and with a short limit Slurm sends it at once, while the worker is still starting
(importing torch), where USR2 would end it as "User defined signal 2"."""


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
        if cluster == "slurm":
            ex.update_parameters(slurm_additional_parameters=WARNING_SIGNAL)
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


def _resource_groups(exp, cells) -> tuple[dict[tuple, list[int]], dict[tuple, list[str]]]:
    """Cell indices grouped by their resource set (a job array each), and the solvers whose own
    ``resources`` made each group (named when Slurm refuses it)."""
    res_of = [dict(s.resources) for s in exp.solvers]
    groups: dict[tuple, list[int]] = {}
    solvers_of: dict[tuple, list[str]] = {}
    for i, c in enumerate(cells):
        own = res_of[c.entry] if 0 <= c.entry < len(res_of) else {}
        key = tuple(sorted({**exp.execution.resources, **own}.items()))
        groups.setdefault(key, []).append(i)
        if own and c.solver not in solvers_of.setdefault(key, []):
            solvers_of[key].append(c.solver)
    return groups, solvers_of


def _start_store(p, run_dir: Path, had_store: bool) -> int:
    """Write the run's start into its store (calibration included), merge the shard stores an
    interrupted run left; return the rows already done."""
    from .. import fsafety
    from ..run.record import env_info, write_start

    if had_store:
        fsafety.clean_own_temp_files(run_dir)
    with Store(run_dir / STORE_NAME) as st:
        write_start(p, st, run_dir, env_info(p.device), False, keep_truth=had_store)
        _calibrate(p, st)
        for sp in sorted((run_dir / "shards").glob(f"*/{STORE_NAME}")):   # rows of an interrupted run
            st.merge_from(sp)
        return st.count_done(p.exp.config_hash)


def _await(subs: list[_Shard], cluster: str, queue, intr: _Interrupts, initial: int, total: int,
           progress: bool) -> None:
    """Wait for every shard (the debug executor runs each here); one line for the failed ones."""
    from ..run.loop import progress_bar

    if cluster == "debug":   # runs each job in this process when its result is asked for
        for s in subs:
            _check_shard(s, cluster, None, time.time())
    else:
        bar = progress_bar(total, min(initial, total), progress)
        try:
            _wait(subs, cluster, queue, bar, initial, total, intr)
        finally:
            bar.close()
    failed = [s for s in subs if s.failure is not None]
    if failed:
        raise ExecutorError(_failure_line(failed))


def _merge(p, run_dir: Path, subs: list[_Shard]) -> dict[str, int]:
    """Merge the shard stores into the run store, compute the set metrics; rows per status."""
    from ..run import compute_set_metrics

    with Store(run_dir / STORE_NAME) as st:
        for s in subs:
            if s.store.exists():
                st.merge_from(s.store)
        _record_shard_calibrations(st, run_dir, len(subs))
        compute_set_metrics(p, st, run_dir)
        counts: dict[str, int] = {}
        for r in st.rows("WHERE config_hash=?", (p.exp.config_hash,)):
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _checked(exp, run_dir: Path, resume: bool, shards: int | None, cluster: str, prepared,
             allow_nonempty: bool):
    """The shard count and the prepared run, after every check that needs no lock: refused
    read-only before anything is created (and checked again under the lock, as in run.run)."""
    from ..run import prepare
    from ..run import resume as run_resume
    from ..run.checks import refuse_not_a_run

    if cluster == "slurm":
        _require_slurm()
    n = check_shards(shards, "--shards") if shards else check_shards(exp.execution.shards, "execution.shards")
    p = prepared if prepared is not None else prepare(exp, run_dir, resume, allow_nonempty=allow_nonempty)
    run_resume.refuse_existing(run_dir, exp, resume, p.input_hashes)
    refuse_not_a_run(run_dir, allow_nonempty, run_resume.RunError)
    return n, p


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
    from ..run import RunSummary
    from ..run import resume as run_resume

    run_dir = Path(run_dir)
    cluster = cluster or "slurm"
    n, p = _checked(exp, run_dir, resume, shards, cluster, prepared, allow_nonempty)
    groups, solvers_of = _resource_groups(exp, p.cells)
    had_store = (run_dir / STORE_NAME).exists()   # else nothing in the folder is this run's
    existed = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
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
        initial = _start_store(p, run_dir, had_store)
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
            with Store(run_dir / STORE_NAME) as st:
                st.set_meta({"slurm_jobs": json.dumps({"jobs": _array_ids(subs), "name": f"invbench-{exp.name}"})})
        _announce(subs, cluster, log_folder)
        _await(subs, cluster, queue, intr, initial, sum(per_cell), progress)
        counts = _merge(p, run_dir, subs)
    return RunSummary(run_dir, sum(s.result.rows for s in subs if s.result is not None), counts, 0, 0.0)
