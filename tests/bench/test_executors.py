"""Execution backends: submitit (local executor, two shards) merges to the same rows as a local run."""

from __future__ import annotations

import contextlib

import pytest
from invbench.bench import config, executors, store
from invbench.bench.run import resume

from tests.helpers import parts

parts.register()

SOLVERS = '[[solvers]]\nname = "_test_noisy"\n[[solvers]]\nname = "_test_oom"\ntasks = ["sr"]\n'


def _compare(a_dir, b_dir):
    a = store.load_results(a_dir).sort_values("row_id").reset_index(drop=True)
    b = store.load_results(b_dir).sort_values("row_id").reset_index(drop=True)
    cols = ["row_id", "solver", "preset", "task", "dataset", "prior", "image_id", "seed", "status", "message",
            "psnr", "mse", "consistency", "nfe", "vjp", "recon_path"]
    assert a[cols].equals(b[cols])
    for rel in a.recon_path.dropna():
        assert (a_dir / rel).read_bytes() == (b_dir / rel).read_bytes()
    return a


@pytest.mark.parametrize("cluster", ["debug", pytest.param("local", marks=pytest.mark.slow)])
def test_submitit_two_shards_merge_to_local_rows(tmp_path, monkeypatch, cluster):
    # the local executor's workers import tests.helpers.parts
    monkeypatch.setenv("PYTHONPATH", parts.subprocess_env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp = config.loads(parts.toml_config(solvers_=SOLVERS, limit=3), base_dir=tmp_path)
    local = tmp_path / "local"
    executors.run_local(exp, local, progress=False)
    sub = tmp_path / "sub"
    s = executors.run_submitit(exp, sub, shards=2, cluster=cluster, setup=parts.register)
    df = _compare(local, sub)
    assert set(df.status) == {"ok", "oom"} and len(df) == 9
    shard_dbs = sorted((sub / "shards").glob("*/results.sqlite"))
    assert len(shard_dbs) == 2
    per_shard = [len(store.load_results(p)) for p in shard_dbs]
    assert sum(per_shard) == len(df) and all(n > 0 for n in per_shard)
    assert store.load_meta(sub)["config_hash"] == exp.config_hash
    assert s.counts == {"ok": 6, "oom": 3}


def test_submitit_resume_skips_finished(tmp_path):
    exp = config.loads(parts.toml_config(limit=2), base_dir=tmp_path)
    sub = tmp_path / "sub"
    executors.run_submitit(exp, sub, shards=2, cluster="debug", setup=parts.register)
    created = dict(zip(*store.load_results(sub)[["row_id", "created"]].values.T))
    with pytest.raises((resume.RunError, config.ConfigError), match="--resume"):
        executors.run_submitit(exp, sub, shards=2, cluster="debug", setup=parts.register)
    executors.run_submitit(exp, sub, shards=2, cluster="debug", resume=True, setup=parts.register)
    df = store.load_results(sub)
    assert dict(zip(df.row_id, df.created)) == created



def test_submitit_rechecks_under_the_lock(tmp_path, monkeypatch):
    """A run that creates the store between run_submitit's first check and its lock (the race a
    check-before-lock leaves open) makes run_submitit refuse, leaving that run's store as it was."""
    exp = config.loads(parts.toml_config(limit=2), base_dir=tmp_path)
    sub = tmp_path / "sub"
    real_lock = resume.lock
    before = {}

    @contextlib.contextmanager
    def other_run_wins(run_dir):
        monkeypatch.setattr(resume, "lock", real_lock)
        executors.run_local(exp, sub, progress=False)   # the other process takes the lock first
        before["rows"] = store.load_results(sub).sort_values("row_id").reset_index(drop=True)
        with real_lock(run_dir):
            yield

    monkeypatch.setattr(resume, "lock", other_run_wins)
    with pytest.raises(resume.RunError, match="already holds a run"):
        executors.run_submitit(exp, sub, shards=2, cluster="debug", setup=parts.register)
    after = store.load_results(sub).sort_values("row_id").reset_index(drop=True)
    assert len(before["rows"]) > 0 and after.equals(before["rows"])
    assert not (sub / "shards").exists()


def test_submitit_refuses_while_another_run_holds_the_lock(tmp_path):
    exp = config.loads(parts.toml_config(limit=2), base_dir=tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    with resume.lock(sub), pytest.raises(resume.RunError, match="lock held"):
        executors.run_submitit(exp, sub, shards=2, cluster="debug", setup=parts.register)
    assert not (sub / "results.sqlite").exists()


def test_run_records_its_cpu_thread_count(tmp_path):
    """CPU rounding depends on the thread count (docs/reliability.md): the run says which it used."""
    import torch

    exp = config.loads(parts.toml_config(limit=1), base_dir=tmp_path)
    executors.run_local(exp, tmp_path / "run", progress=False)
    assert store.load_meta(tmp_path / "run")["torch_threads"] == str(torch.get_num_threads())
