"""The Slurm executor's pieces that need no cluster (default suite): ``--executor slurm`` where
Slurm is absent, the string resource keys, job states from stand-in ``squeue``/``sacct``
commands (one notice when accounting is off, however many polls), Slurm durations, and what the
failure line says of Slurm's states.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from invbench.bench import executors

from tests.helpers import parts
from tests.helpers.reliability import cli, tree_digest
from tests.reliability.test_bad_inputs import check_error_line


def _cfg(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(parts.toml_config(limit=1) + extra)
    return cfg


def _commands(folder: Path, **scripts: str) -> Path:
    """Executable shell scripts named after the keys (stand-ins for Slurm's commands)."""
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        f = folder / name
        f.write_text("#!/bin/sh\n" + body + "\n")
        f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def test_executor_slurm_without_slurm_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """submitit's AutoExecutor would quietly run the shards as local processes instead."""
    monkeypatch.setenv("PATH", str(_commands(tmp_path / "bin")))   # no sbatch, squeue, scancel
    cfg = _cfg(tmp_path)
    out = tmp_path / "run"
    before = tree_digest(tmp_path)
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--executor", "slurm", "--no-progress"])
    assert rc == 2
    check_error_line(err, ["--executor slurm", "sbatch", "not found on PATH", "submitit-local"])
    assert not out.exists() and tree_digest(tmp_path) == before


@pytest.mark.parametrize("key, value, says", [
    ("account", "3", "expected a non-empty string without spaces"),
    ("gres", '"gpu a100:1"', "expected a non-empty string without spaces"),
    ("qos", '""', "expected a non-empty string without spaces"),
    ("array_parallelism", '"4"', "expected an integer >= 1"),
    ("array_parallelism", "0", "expected an integer >= 1"),
    ("mem_gb", "-1", "expected an integer >= 0"),
])
def test_slurm_resource_keys_are_checked(tmp_path, capsys, key, value, says):
    cfg = _cfg(tmp_path, f"\n[execution.resources]\n{key} = {value}\n")
    rc, _, err = cli(capsys, ["run", cfg, "--out", tmp_path / "run", "--executor", "submitit-debug"])
    assert rc == 2
    check_error_line(err, [f"execution.resources.{key}", says])
    assert not (tmp_path / "run").exists()


def test_slurm_resource_keys_reach_submitit():
    params = executors.slurm._resource_params({"partition": "gpu", "account": "lab", "qos": "high",
                                               "constraint": "a100",
                                         "gres": "gpu:a100:1", "array_parallelism": 8, "mem_gb": 4})
    assert params == {"slurm_partition": "gpu", "slurm_account": "lab", "slurm_qos": "high",
                      "slurm_constraint": "a100", "slurm_gres": "gpu:a100:1", "slurm_array_parallelism": 8,
                      "mem_gb": 4}


def test_job_states_without_accounting_give_one_notice(tmp_path, monkeypatch, capsys):
    """Task 0 runs, task 1 left squeue; sacct fails as on a cluster without accounting: one
    notice over ten polls, and task 1 is reported gone after two polls without it."""
    monkeypatch.setenv("PATH", str(_commands(
        tmp_path / "bin",
        squeue='echo "12_0|RUNNING|None"',
        sacct='echo "Slurm accounting storage is disabled" >&2; exit 1')))
    q = executors.slurm._SlurmQueue()
    for _ in range(10):
        q.poll(["12_0", "12_1"])
    err = capsys.readouterr().err
    assert err.count("invbench: ") == 1 and "accounting is not available" in err and "disabled" in err, err
    assert q.states == {"12_0": ("RUNNING", "None"), "12_1": (executors.slurm._GONE, "")}


def test_job_states_from_sacct_for_jobs_that_left_the_queue(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(_commands(
        tmp_path / "bin",
        squeue='echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1',
        sacct='printf "12_0|COMPLETED\\n12_1|CANCELLED by 1000\\n"')))
    q = executors.slurm._SlurmQueue()
    q.poll(["12_0", "12_1"])
    assert q.states == {"12_0": ("COMPLETED", ""), "12_1": ("CANCELLED", "")}
    assert capsys.readouterr().err == ""


def test_a_failing_squeue_keeps_the_last_states(tmp_path, monkeypatch):
    """slurmctld busy or restarting: no state changes, nothing is concluded."""
    monkeypatch.setenv("PATH", str(_commands(tmp_path / "bin", squeue='echo "12_0|RUNNING|None"')))
    q = executors.slurm._SlurmQueue()
    q.poll(["12_0"])
    _commands(tmp_path / "bin", squeue='echo "slurm_load_jobs error: Socket timed out" >&2; exit 1')
    for _ in range(3):
        q.poll(["12_0"])
    assert q.states == {"12_0": ("RUNNING", "None")}


@pytest.mark.parametrize("text, minutes", [("01:00:00", 60), ("2-00:00:00", 2880), ("00:00:30", 1),
                                           ("UNLIMITED", None), ("NONE", None)])
def test_slurm_durations(text, minutes):
    assert executors.slurm._slurm_minutes(text) == minutes


class _Job:
    state = "TIMEOUT"
    paths = type("P", (), {"stderr": "/runs/x/submitit/7_1_0_log.err"})()


@pytest.mark.parametrize("state, params, says", [
    ("TIMEOUT", {"timeout_min": 30}, "state TIMEOUT: it ran past its time limit of 30 min (timeout_min)"),
    ("CANCELLED", {}, "state CANCELLED: it was cancelled (scancel, or an administrator)"),
    ("OUT_OF_MEMORY", {"mem_gb": 4}, "state OUT_OF_MEMORY: it ran out of memory (mem_gb = 4)"),
    ("NODE_FAIL", {}, "state NODE_FAIL: its node failed"),
])
def test_failure_line_says_what_a_slurm_state_means(state, params, says):
    log = ("-" * 40 + "\nslurmstepd: error: *** JOB 8 ON n1 CANCELLED AT 2026-12-07T10:00:00 ***\n"
           "srun: error: n1: task 0: Killed\n")
    why = executors.causes._no_result_cause(f"has not produced any output (state: {state})\n{log}", _Job(), params)
    assert says in why and "last error in its log: slurmstepd: error: *** JOB 8" in why, why


class _NeverDone:
    """A shard's job that never ends; asked too often, it fails the test (the wait went on)."""

    calls = 0

    def done(self) -> bool:
        self.calls += 1
        assert self.calls < 3, "the wait went on after the signal"
        return False


class _Bar:
    n = 0

    def set_postfix_str(self, s: str, refresh: bool = False) -> None:
        pass

    def refresh(self) -> None:
        pass


def test_a_signal_whose_exception_was_swallowed_still_stops_the_wait(tmp_path, monkeypatch):
    """A library call that catches KeyboardInterrupt (a bare ``except``) must not lose the
    submitting process's SIGINT/SIGTERM: the waiting loop looks at the received signal itself,
    between polls and between the slices of its sleep."""
    import signal

    intr = executors.signals._Interrupts()
    try:
        intr.handler(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass   # swallowed, as a library might
    job = _NeverDone()
    shard = executors.shards._Shard(sid=0, job=job, params={}, rows=1, store=tmp_path / "none.sqlite")
    with pytest.raises(KeyboardInterrupt):
        executors.shards._wait([shard], "local", None, _Bar(), 0, 1, intr)
    assert job.calls == 0

    slept: list[float] = []
    clock = [0.0]

    def fake_sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    monkeypatch.setattr(executors.signals.time, "sleep", fake_sleep)
    monkeypatch.setattr(executors.signals.time, "monotonic", lambda: clock[0])
    late = executors.signals._Interrupts()
    late.sleep(1.2)                       # no signal: the whole interval, in slices of <= 0.5 s
    assert slept == [0.5, 0.5, pytest.approx(0.2)]
    late.received = signal.SIGTERM        # arrives while the loop sleeps its poll interval
    slept.clear()
    with pytest.raises(KeyboardInterrupt):
        late.sleep(30)
    assert slept == []


def test_an_ignored_sigint_stays_ignored_and_a_handled_one_cancels():
    """A submitter started in the background by a non-interactive shell inherits SIGINT ignored:
    it leaves it so (as Python does), and handles it otherwise; SIGTERM is always handled."""
    import signal

    old = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with executors.signals._cancel_on_signal("local") as (_, intr):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == intr.handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with executors.signals._cancel_on_signal("local") as (_, intr):
            assert signal.getsignal(signal.SIGINT) == intr.handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored
    finally:
        signal.signal(signal.SIGINT, old)
