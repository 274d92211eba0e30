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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Experiment
from .store import STORE_NAME, Store

__all__ = ["run_local", "run_submitit", "shard_job"]


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
              setup: Callable[[], Any] | None = None) -> _ShardResult:
    """Body of one array task: rebuild the experiment and run shard ``shard`` of ``n_shards``.

    ``cells`` (indices into the cheapest-first cell list) overrides the round-robin split.
    ``setup`` is called first (tests use it to register test-only parts in the worker process).
    """
    from . import config, runner

    if setup is not None:
        setup()
    exp = config.loads(config_text, base_dir=base_dir, source="shard config")
    p = runner.prepare(exp)
    s = runner.run(p, run_dir, resume=True, shard=(shard, n_shards), cell_indices=cells, progress=False)
    return _ShardResult(shard, s.rows, s.counts)


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
):
    """Run ``exp`` as submitit job arrays of grid shards, wait, and merge the shard stores."""
    import submitit

    from . import runner

    run_dir = Path(run_dir)
    p = prepared if prepared is not None else runner.prepare(exp, run_dir, resume)
    n = int(shards or exp.execution.shards)
    # refused read-only before anything is created, and checked again under the lock (another
    # run may have created the store between the two checks), as in runner.run
    runner._refuse_existing(run_dir, exp, resume, p.input_hashes)
    run_dir.mkdir(parents=True, exist_ok=True)
    store_path = run_dir / STORE_NAME
    env = runner.env_info(p.device)
    with runner._lock(run_dir):
        runner._refuse_existing(run_dir, exp, resume, p.input_hashes)
        with Store(store_path) as st:
            runner._write_start(p, st, run_dir, env, False)
        # group cells by solver resources, split each group round-robin into n shards
        res_of = {s.label: dict(s.resources) for s in exp.solvers}
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(p.cells):
            key = tuple(sorted({**exp.execution.resources, **res_of.get(c.solver, {})}.items()))
            groups.setdefault(key, []).append(i)
        text = exp.toml_text()
        jobs = []
        shard_id = 0
        log_folder = Path(folder or exp.execution.folder or run_dir / "submitit")
        for key, idxs in groups.items():
            ex = submitit.AutoExecutor(folder=str(log_folder), cluster=cluster)
            params = _resource_params(dict(key))
            if params:
                ex.update_parameters(**params)
            ex.update_parameters(name=f"invbench-{exp.name}")
            parts = [idxs[k::n] for k in range(n) if idxs[k::n]]
            ids = list(range(shard_id, shard_id + len(parts)))
            shard_id += len(parts)
            with ex.batch():
                for sid, part in zip(ids, parts):
                    jobs.append(ex.submit(shard_job, text, exp.base_dir, str(run_dir), sid, 1, part, setup))
        results = [j.result() for j in jobs]
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
