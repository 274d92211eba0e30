"""Third reliability round: ``invbench compare`` refuses (exit 2, one line) what it cannot judge —
a metric a run did not compute, a run with no ok row, runs of different configs (unless
``--allow-config-change``, which then names the differing keys), an incomplete or still running
run — and sharded runs carry a device calibration like local ones. Also: ``--shards`` is bounded,
and a failed shard's one line names its cause (docs/reliability.md, "Third round")."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from invbench.bench import cli as bench_cli
from invbench.bench import executors, store
from invbench.bench.run import resume

from tests.helpers import parts
from tests.helpers.reliability import cli

BASE = parts.toml_config(limit=3, seeds="[0, 1]")   # _test-gauss on 3 digits, 2 tasks, 1 solver: 12 rows


def _run(cfg_text: str, out: Path, *extra: str) -> Path:
    cfg = out.parent / f"{out.name}.toml"
    cfg.write_text(cfg_text)
    rc = bench_cli.main(["run", str(cfg), "--out", str(out), "--no-progress", *extra])
    assert rc == 0, f"run {out} failed ({rc})"
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished local runs of BASE (read-only templates: tests copy them before changing)."""
    d = tmp_path_factory.mktemp("finished")
    return _run(BASE, d / "a"), _run(BASE, d / "b")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _sql(run_dir: Path, sql: str) -> None:
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        con.execute(sql)
    con.close()


def _refusal(err: str, *needles: str) -> str:
    """The single stderr line of a refused compare, holding every needle."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    line = lines[0]
    assert line.startswith("invbench compare: error: ") and line.isprintable(), line
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


# ----------------------------------------------------------------------------- calibration of sharded runs


def test_sharded_runs_record_calibration_and_compare_on_normalised_cost(tmp_path, capsys, finished):
    """A run made with a submitit executor records the device calibration a local run records
    (meta ``calibration``, the same priors and fields), so two sharded reruns are judged on the
    normalised cost, without the "no device calibration" fallback to wall time."""
    a = _run(BASE, tmp_path / "a", "--executor", "submitit-debug", "--shards", "2")
    b = _run(BASE, tmp_path / "b", "--executor", "submitit-debug", "--shards", "2")
    local = json.loads(store.load_meta(finished[0])["calibration"])
    for run_dir in (a, b):
        cal = json.loads(store.load_meta(run_dir)["calibration"])
        assert set(cal) == set(local) == {"_test-gauss"}
        assert set(cal["_test-gauss"]) == set(local["_test-gauss"]) and cal["_test-gauss"]["t_forward_s"] > 0
        shards = json.loads(store.load_meta(run_dir)["calibration_shards"])
        assert set(shards) == {"0", "1"} and all("t_forward_s" in s["_test-gauss"] for s in shards.values())
    rc, out, err = cli(capsys, ["compare", a, b, "--format", "json"])
    assert rc == 0, err
    d = json.loads(out)
    assert d["cost"] == "normalised" and not any("calibration" in w for w in d["warnings"])


# ----------------------------------------------------------------------------- metric nobody computed, no ok rows


def test_compare_refuses_a_metric_neither_run_computed(finished, capsys):
    """ssim is a column of every store but this config does not compute it: exit 2 naming it
    (it used to pass with exit 0, judging nothing)."""
    rc, _, err = cli(capsys, ["compare", *finished, "--metric", "ssim"])
    assert rc == 2
    _refusal(err, "'ssim'", "neither run", "--metric")


def test_compare_refuses_a_metric_one_run_did_not_compute(finished, tmp_path, capsys):
    new = _run(BASE.replace('image = ["psnr", "mse", "consistency"]', 'image = ["psnr", "mse", "consistency", "ssim"]'),
               tmp_path / "with-ssim")
    rc, _, err = cli(capsys, ["compare", finished[0], new, "--metric", "ssim", "--allow-config-change"])
    assert rc == 2
    _refusal(err, "'ssim'", "base run")


def test_compare_refuses_runs_without_ok_rows(tmp_path, capsys):
    """Two runs whose only solver fails on every row (out of memory): nothing to judge, exit 2
    naming the run and its statuses (it used to pass with exit 0)."""
    oom = parts.toml_config(solvers_='[[solvers]]\nname = "_test_oom"\n')
    a, b = _run(oom, tmp_path / "a"), _run(oom, tmp_path / "b")
    rc, _, err = cli(capsys, ["compare", a, b])
    assert rc == 2
    _refusal(err, "base run", "no ok rows", "oom 6")


def test_compare_refuses_a_new_run_without_ok_rows(finished, tmp_path, capsys):
    new = _copy(finished[1], tmp_path / "new")
    _sql(new, "UPDATE results SET status = 'error', message = 'boom', psnr = NULL")
    rc, _, err = cli(capsys, ["compare", finished[0], new])
    assert rc == 2
    _refusal(err, "new run", "no ok rows", "error 12", "boom")


# ----------------------------------------------------------------------------- different configs


def _other_config(tmp_path: Path) -> Path:
    out = tmp_path / "other"
    text = BASE.replace('name = "t"', 'name = "u"').replace("noise_sigma = 0.05", "noise_sigma = 0.2")
    return _run(text.replace('name = "_test_noisy"', 'name = "_test_noisy"\noverrides = { steps = 5 }'), out)


def test_compare_refuses_runs_of_different_configs(finished, tmp_path, capsys):
    """Other name, noise_sigma 0.05 -> 0.2, steps 3 -> 5: the rows pair on their keys, but the
    comparison is meaningless; refused naming the keys (it used to judge them silently)."""
    other = _other_config(tmp_path)
    rc, _, err = cli(capsys, ["compare", finished[0], other])
    assert rc == 2
    _refusal(err, "different configs", "name", "tasks[0].noise_sigma (0.05 -> 0.2)", "solvers[0].overrides.steps",
             "--allow-config-change")


def test_allow_config_change_compares_and_names_the_keys(finished, tmp_path, capsys):
    other = _other_config(tmp_path)
    rc, out, err = cli(capsys, ["compare", finished[0], other, "--allow-config-change"])
    assert rc in (0, 1), err
    lines = [ln for ln in err.splitlines() if "config" in ln]
    assert len(lines) == 1 and lines[0].startswith("invbench compare: warning: "), err
    for key in ("name ('t' -> 'u')", "tasks[0].noise_sigma (0.05 -> 0.2)", "solvers[0].overrides.steps"):
        assert key in lines[0]
    assert "cell(s) regressed" in out


def test_same_config_other_execution_settings_is_not_a_config_change(finished, tmp_path, capsys):
    """Keys outside the config hash (batch size, execution, description) do not change results:
    such runs compare without a refusal."""
    text = BASE.replace("batch_size = 1", 'batch_size = 2\ndescription = "other words"')
    new = _run(text, tmp_path / "b2")
    rc, _, err = cli(capsys, ["compare", finished[0], new])
    assert rc == 0, err


# ----------------------------------------------------------------------------- incomplete and running runs


@pytest.mark.parametrize("side", ["base", "new"])
def test_compare_refuses_an_incomplete_run(finished, tmp_path, capsys, side):
    """A killed run keeps its committed rows and nothing else: its store has fewer rows than its
    grid. compare names the run and how many rows of how many (a killed base used to pass with
    exit 0, a killed new run to fail with exit 1 as 'missing rows')."""
    runs = {"base": _copy(finished[0], tmp_path / "base"), "new": _copy(finished[1], tmp_path / "new")}
    _sql(runs[side], "DELETE FROM results WHERE task = 'sr' AND seed = 1")
    rc, _, err = cli(capsys, ["compare", runs["base"], runs["new"]])
    assert rc == 2
    _refusal(err, f"{side} run", "incomplete", "9 of 12 rows", "--resume")


def test_compare_refuses_a_run_still_being_written(finished, tmp_path, capsys):
    """A run whose .lock is held by a live process (here: this one) is still running: refused
    naming it, with its rows so far (it used to fail with exit 1 without saying why)."""
    new = _copy(finished[1], tmp_path / "new")
    _sql(new, "DELETE FROM results WHERE task = 'sr'")
    with resume.lock(new):
        rc, _, err = cli(capsys, ["compare", finished[0], new])
    assert rc == 2
    _refusal(err, "new run", "still being written", "6 of 12 rows")
    rc, _, err = cli(capsys, ["compare", finished[0], finished[1]])   # lock released, run complete: judged
    assert rc == 0, err


# ----------------------------------------------------------------------------- --shards bound


@pytest.mark.parametrize("argv", [["--shards", "1000000000000"], ["--set", "execution.shards=1000000000000"]])
def test_huge_shard_count_is_refused(tmp_path, capsys, argv):
    """--shards 10**12 used to loop over 10**12 shard slots and never end: refused with exit 2
    naming the option and its maximum, before the run folder exists."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    out = tmp_path / "run"
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--executor", "submitit-debug", *argv])
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("invbench: error: ") and "shards" in line and str(executors.MAX_SHARDS) in line, err
    assert not out.exists()


def test_more_shards_than_cells_runs_the_cells(tmp_path):
    """Shards beyond the number of cells would be empty: they are not submitted."""
    from invbench.bench import config

    exp = config.loads(BASE, base_dir=tmp_path)
    s = executors.run_submitit(exp, tmp_path / "run", shards=executors.MAX_SHARDS, cluster="debug",
                               setup=parts.register)
    assert s.counts == {"ok": 12}
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == ["0", "1"]


# ----------------------------------------------------------------------------- a failed shard names its cause


class _Job:
    """A submitit job whose result raises ``exc`` (the messages below are submitit 1.5's)."""

    def __init__(self, exc: Exception, state: str = "FINISHED", returncode: int | None = None):
        self._exc, self.state = exc, state
        self.paths = type("P", (), {"stderr": "/runs/x/submitit/7_0_log.err"})()
        if returncode is not None:
            self._process = type("Proc", (), {"returncode": returncode, "poll": lambda s: returncode})()

    def result(self):
        raise self._exc


def _shard_line(job) -> str:
    with pytest.raises(executors.ExecutorError) as e:
        executors.causes._result(job, 1)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("shard 1 failed: ") and "7_0_log.err" in msg and "--resume" in msg
    return msg


def test_failed_shard_line_names_a_storage_fault():
    """The shard's error is the traceback's last exception, whatever its class is called (the
    disk-full StorageFault used to be reported as 'Job (task=0) failed during processing')."""
    from submitit.core.utils import FailedJobError

    trace = ("Traceback (most recent call last):\n"
             '  File "/x/submitit/core/submission.py", line 55, in process_job\n    result = delayed.result()\n'
             "             ^^^^^^^^^^^^^^^^\n"
             '  File "/x/bench/runner.py", line 927, in run\n    raise fault from None\n'
             "invbench.bench.fsafety.StorageFault: /runs/x/recon/a/b/c/d/digits1600_s0.png: No space left on device "
             "(is the disk full?); finished rows are kept; free space (or fix the disk) and rerun with --resume\n")
    exc = FailedJobError(f"Job (task=0) failed during processing with trace:\n----------------------\n{trace}\n"
                         "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or "
                         "at paths:\n  - /runs/x/submitit/7_0_log.err\n  - /runs/x/submitit/7_0_log.out")
    msg = _shard_line(_Job(exc))
    assert "StorageFault: " in msg and "No space left on device" in msg


def _no_output(state: str, log: str) -> Exception:
    from submitit.core.utils import UncompletedJobError

    return UncompletedJobError(f"Job 7 (task: 0) with path /runs/x/submitit/7_0_result.pkl\n"
                               f"has not produced any output (state: {state})\n{log}")


SUBMITIT_INFO = ("No error stream produced. Look at stdout: /runs/x/submitit/7_0_log.out\n" + "-" * 40 + "\n"
                 "submitit INFO (2026-12-07 18:06:34,194) - Starting with JobEnvironment(job_id=7)\n"
                 "submitit INFO (2026-12-07 18:06:34,194) - Loading pickle: /runs/x/submitit/7_submitted.pkl\n")


def test_failed_shard_line_says_a_worker_ended_without_a_result():
    """A worker killed from outside leaves no result and no Python error (the local controller
    keeps no exit code): the line says so, with submitit's state (it used to end at the result
    file's path)."""
    msg = _shard_line(_Job(_no_output("FINISHED", SUBMITIT_INFO)))
    assert "worker exited without a result" in msg and "state FINISHED" in msg


def test_failed_shard_line_names_the_signal_when_known():
    msg = _shard_line(_Job(_no_output("INTERRUPTED", SUBMITIT_INFO), state="INTERRUPTED", returncode=-9))
    assert "killed by signal 9 (SIGKILL)" in msg


def test_failed_shard_line_names_a_cluster_state_and_its_log_error():
    log = ("Error stream produced:\n" + "-" * 40 + "\n"
           "slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch. Some of the step tasks have been "
           "OOM Killed.\n")
    msg = _shard_line(_Job(_no_output("OUT_OF_MEMORY", log), state="OUT_OF_MEMORY"))
    assert "state OUT_OF_MEMORY" in msg and "oom_kill event" in msg


@pytest.mark.slow
def test_killed_local_worker_is_one_line_with_its_cause(tmp_path, capsys, monkeypatch):
    """End to end with submitit-local: a shard worker that dies of SIGKILL before writing a row."""
    import submitit

    monkeypatch.setenv("PYTHONPATH", parts.subprocess_env()["PYTHONPATH"])
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)   # submitit waits 15 s for a result file
    from functools import partial

    from invbench.bench import config

    exp = config.loads(BASE, base_dir=tmp_path)
    with pytest.raises(executors.ExecutorError) as e:
        executors.run_submitit(exp, tmp_path / "run", shards=2, cluster="local",
                               setup=partial(signal.raise_signal, signal.SIGKILL))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("shard 0 failed: worker exited without a result"), msg
