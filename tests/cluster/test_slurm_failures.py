"""``--executor slurm`` on a real one-node Slurm when Slurm does what Slurm does: a task
cancelled, a task requeued while its node drains, a task past its time limit, the submitting
process interrupted (Ctrl-C, SIGTERM) or killed, and every time a ``--resume`` that ends with
the rows of an uninterrupted run (docs/cluster.md, "What happens when").

Each test runs the small GMM experiment of :func:`tests.cluster.runs.gmm_config` in two shards
and keeps one shard's worker stopped (SIGSTOP) once it has committed a row, so that the shard is
mid-run, without racing the clock, when the test acts (until Slurm kills it).
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.cluster.runs import (
    SHARDS,
    KeepFrozen,
    Run,
    assert_same_rows,
    error_line,
    gmm_config,
    run,
    tree_state,
    venv_alias,
    wait_rows,
)
from tests.helpers.parts import count_rows, reference_run

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted local run of the experiment (1 thread, like the CLI subprocesses)."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "run"
    reference_run(_config(tmp), out)
    return out


def _config(tmp):
    """The experiment of these tests: DPS at 300 steps keeps each shard busy for seconds after its
    first committed row, so the worker is stopped mid-run even on a fast idle machine (at 20 steps
    a shard could finish before the test had stopped it)."""
    return gmm_config(tmp, dps_steps=300)


def _array_id(r: Run, timeout: float = 120) -> str:
    """The Slurm job id of the run's array, from its "logs:" line."""
    t0 = time.time()
    while not (m := re.search(r"Slurm job (\d+) ", r.stderr())):
        assert r.proc.poll() is None and time.time() - t0 < timeout, r.stderr()
        time.sleep(0.2)
    return m.group(1)


def _start(tmp, *extra: str) -> tuple[Run, object, str]:
    cfg = _config(tmp)
    out = tmp / "run"
    r = Run(["run", cfg, "--out", out, "--executor", "slurm", *SHARDS, "--no-progress", *extra], tmp / "run.err")
    return r, out, _array_id(r)


def _resume(tmp, out, *extra: str) -> str:
    rc, err = run(["run", _config(tmp), "--out", out, "--executor", "slurm", *SHARDS, "--no-progress", "--resume",
                   *extra], tmp / "resume.err")
    assert rc == 0, err
    return err


def _mid_run(slurm, r: Run, out, array: str, task: int = 1) -> KeepFrozen:
    """Wait until shard ``task`` has committed a row; its worker, kept stopped (``with``) until
    Slurm kills it (Slurm's SIGCONT would otherwise let it finish before its SIGTERM)."""
    wait_rows(out / "shards" / str(task) / "results.sqlite", 1, r)
    return KeepFrozen(slurm.worker_pids(array, task))


def _queue_of(slurm, array: str) -> list[str]:
    return [ln for ln in slurm.jobs() if ln.split("_")[0].split()[0] == array]


def test_scancel_of_one_task_names_the_shard_then_resume_completes(fresh_node, tmp_path, reference):
    slurm = fresh_node
    r, out, array = _start(tmp_path)
    with _mid_run(slurm, r, out, array):
        slurm.run("scancel", f"{array}_1")
        rc, err = r.wait(180)
    assert rc == 1, err
    line = error_line(err)
    assert line.startswith("invbench: error: shard 1 failed: ") and "state CANCELLED" in line, line
    assert "cancelled (scancel" in line and f"{array}_1_0_log.err" in line and "--resume" in line, line
    assert count_rows(out / "results.sqlite") == 0   # nothing of a failed run is committed to the run
    assert _queue_of(slurm, array) == []
    _resume(tmp_path, out)
    assert_same_rows(out, reference)


def test_requeue_while_the_node_drains_loses_and_duplicates_no_row(fresh_node, tmp_path, reference):
    slurm = fresh_node
    r, out, array = _start(tmp_path)
    shard = out / "shards" / "1" / "results.sqlite"
    from invbench.bench import store

    with _mid_run(slurm, r, out, array):
        before = store.load_results(shard)[["row_id", "created"]]
        slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=drain", "reason=maintenance")
        slurm.run("scontrol", "requeue", f"{array}_1")
        t0 = time.time()
        while not any(ln.endswith("PENDING") for ln in _queue_of(slurm, array)):   # back in the queue, waiting
            assert time.time() - t0 < 60, slurm.jobs()
            time.sleep(0.5)
    time.sleep(3)
    assert r.proc.poll() is None, r.stderr()   # a requeued task is not a failure: the run waits for it
    slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=resume")
    rc, err = r.wait(240)
    assert rc == 0, err
    df = assert_same_rows(out, reference)
    assert df.row_id.is_unique
    after = store.load_results(shard).set_index("row_id").created
    assert all(after[rid] == c for rid, c in before.itertuples(index=False))   # rows done before: not redone


def test_shard_past_its_time_limit_names_shard_and_limit_then_resume_finishes(fresh_node, tmp_path, reference):
    slurm = fresh_node
    r, out, array = _start(tmp_path, "--set", "execution.resources.timeout_min=1")
    with _mid_run(slurm, r, out, array):
        rc, err = r.wait(240)
    assert rc == 1, err
    line = error_line(err)
    assert line.startswith("invbench: error: shard 1 failed: ") and "state TIMEOUT" in line, line
    assert "time limit of 1 min (timeout_min)" in line and "--resume" in line, line
    _resume(tmp_path, out, "--set", "execution.resources.timeout_min=10")
    assert_same_rows(out, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_submitter_cancels_its_jobs_then_resume_completes(fresh_node, tmp_path, reference, sig):
    slurm = fresh_node
    r, out, array = _start(tmp_path)
    # each shard's worker is stopped once it has committed a row, so the run is mid-way when the
    # signal lands (on a fast idle machine it could otherwise finish first and exit 0)
    with _mid_run(slurm, r, out, array, task=0), _mid_run(slurm, r, out, array, task=1):
        r.signal(sig)
        rc, err = r.wait(180)
    assert rc == 130, err
    assert f"cancelled Slurm job(s) {array} (2 shard(s)); none is left in the queue" in err, err
    assert "interrupted" in err.splitlines()[-1], err
    assert _queue_of(slurm, array) == [] and slurm.worker_pids(array, 0) == slurm.worker_pids(array, 1) == []
    state = tree_state(out)
    time.sleep(3)
    assert tree_state(out) == state   # nothing writes into the run folder any more
    _resume(tmp_path, out)
    assert_same_rows(out, reference)


def test_resume_refuses_while_jobs_of_a_killed_submitter_still_run(fresh_node, tmp_path, reference):
    """The submitting process dies without a word (SIGKILL, a rebooted login node): its jobs run
    on. A --resume then refuses, naming them, instead of racing them for the shard stores."""
    slurm = fresh_node
    r, out, array = _start(tmp_path)
    with _mid_run(slurm, r, out, array):   # shard 1 stays running
        r.signal(signal.SIGKILL)
        r.wait(30)
        rc, err = run(["run", _config(tmp_path), "--out", out, "--executor", "slurm", *SHARDS, "--no-progress",
                       "--resume"], tmp_path / "refused.err")
        assert rc == 1, err
        line = error_line(err)
        assert f"Slurm job(s) {array} of an earlier submission" in line and f"scancel {array}" in line, line
        assert _queue_of(slurm, array), "the refused resume cancelled nothing"
        slurm.run("scancel", array)
        slurm.cancel_all()
    _resume(tmp_path, out)
    assert_same_rows(out, reference)


def test_shards_that_cannot_start_are_named_with_their_cause(fresh_node, tmp_path, reference):
    """The node cannot start the workers (the Python they were submitted with is not there, as
    with an environment that is not on a shared file system). While the node is drained the
    progress shows the shards pending and why; then each shard ends without a result, and the
    one line names the first, its cause and its log, and the other one."""
    slurm = fresh_node
    python = venv_alias(tmp_path / "venv")
    slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=drain", "reason=maintenance")
    out = tmp_path / "run"
    r = Run(["run", _config(tmp_path), "--out", out, "--executor", "slurm", *SHARDS], tmp_path / "run.err",
            python=python)
    _array_id(r)
    t0 = time.time()
    while not re.search(r"shards 0 done, 0 running, 2 pending \(\w+", r.stderr()):
        assert r.proc.poll() is None and time.time() - t0 < 60, r.stderr()
        time.sleep(0.5)
    python.unlink()
    slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=resume")
    rc, err = r.wait(180)
    assert rc == 1, err
    line = error_line(err)
    assert line.startswith("invbench: error: shard 0 failed: worker exited without a result (state FAILED"), line
    assert str(python) in line and "_0_0_log.err" in line, line
    assert "1 more shard(s) failed (1: see their logs)" in line and line.endswith("rerun with --resume"), line
    assert count_rows(out / "results.sqlite") == 0
