"""Concurrency (docs/reliability.md, "Concurrency"): a second writer on the same RUN_DIR is refused; the lock is an
``flock`` on ``RUN_DIR/.lock`` that the kernel releases when its holder dies, so a SIGKILLed run
leaves no stale lock; readers never block or see half rows; the store is never corrupt.

Mechanism (docs/reliability.md#concurrency): ``invbench.bench.run.run`` opens ``RUN_DIR/.lock`` and
takes ``fcntl.flock(LOCK_EX | LOCK_NB)``; failure -> ``RunError`` "another invbench run is
writing this run directory (lock held by pid N: COMMAND)" -> exit 2. The existing-store checks (``--resume``
needed, same config hash) run before the lock and again under it. The lock file stays after a
run; it is not the lock (the kernel's flock is), so a leftover file never blocks anything.
tests/bench/test_resume.py::test_second_run_on_same_dir_is_refused covers the in-process case
(the lock held by the test itself).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from invbench.bench import store

from tests.helpers import parts
from tests.helpers.reliability import cli, gmm_text

TASKS, SOLVERS = 2, 4



def _intact(out: Path, n_expected: int) -> None:
    con = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    df = store.load_results(out)
    assert df.row_id.is_unique and len(df) == n_expected and set(df.status) == {"ok"}
    assert all((out / rel).is_file() for rel in df.recon_path)


def test_second_writer_refused_and_no_stale_lock_after_sigkill(tmp_path, capsys, figures):
    limit, seeds = 2, [0, 1]
    n = TASKS * SOLVERS * limit * len(seeds)
    cfg = tmp_path / "c.toml"
    cfg.write_text(gmm_text("rel-conc", limit=limit, seeds=str(seeds), dps_steps=60))
    out = tmp_path / "run"
    db = out / "results.sqlite"
    a = parts.cli_subprocess(["run", str(cfg), "--out", str(out), "--no-progress"])
    try:
        t0 = time.time()
        while parts.count_rows(db) < 2 and a.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
        assert a.poll() is None, "the first run ended before the test could race it"
        # stopped, the first run keeps its flock for as long as this test needs (a GMM run can
        # otherwise finish while this process prepares its own attempt)
        os.kill(a.pid, signal.SIGSTOP)
        # a reader (report, load_results) works while the run writes, and sees only whole rows
        df = store.load_results(out)
        assert len(df) >= 2 and all((out / rel).is_file() for rel in df.recon_path)
        before = parts.count_rows(db)
        # a second writer (a different process: this one) is refused, with or without --resume
        rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--resume", "--no-progress"])
        assert rc == 2 and err.count("\n") == 1, err
        assert "another invbench run is writing this run directory (lock held" in err, err
        assert f"by pid {a.pid}" in err, err   # the holder is named
        rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress"])
        assert rc == 2 and "--resume" in err, err
        assert a.poll() is None, "the first run ended during the race; the refusal was not tested against a live lock"
        assert parts.count_rows(db) >= before
        a.send_signal(signal.SIGKILL)   # kills the stopped process as it is
        a.wait(timeout=60)
        assert a.returncode == -signal.SIGKILL
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        a.stdout.close()
        a.stderr.close()
    killed_at = parts.count_rows(db)
    assert 0 < killed_at < n
    # the lock file is still there, but the kernel released the flock with the process: no stale lock
    assert (out / ".lock").exists()
    t1 = time.time()
    rc, o, err = cli(capsys, ["run", cfg, "--out", out, "--resume", "--no-progress"])
    assert rc == 0, err
    assert f"{killed_at} already done" in o
    _intact(out, n)
    figures.record("concurrency", {"second_writer": "refused (exit 2, lock held)", "without_resume": "refused (exit 2)",
                                   "resume_after_sigkill": "ok", "rows": n, "killed_at": killed_at,
                                   "resume_wait_s": round(time.time() - t1, 1)})


@pytest.mark.slow
def test_two_simultaneous_fresh_runs(tmp_path, figures):
    """Two processes started together on a fresh RUN_DIR without --resume: exactly one runs, the
    other is refused with exit 2 (lock held, or the store already exists); the store is intact."""
    limit, seeds = 3, [0]
    n = TASKS * SOLVERS * limit * len(seeds)
    cfg = tmp_path / "c.toml"
    cfg.write_text(gmm_text("rel-conc2", limit=limit, seeds=str(seeds), dps_steps=60))
    out = tmp_path / "run"
    procs = [parts.cli_subprocess(["run", str(cfg), "--out", str(out), "--no-progress"]) for _ in range(2)]
    res = []
    for p in procs:
        _, e = p.communicate(timeout=600)
        res.append((p.returncode, e))
    codes = sorted(rc for rc, _ in res)
    assert codes == [0, 2], res
    err = next(e for rc, e in res if rc == 2)
    assert err.count("\n") == 1 and ("lock held" in err or "already holds a run" in err), err
    _intact(out, n)
    figures.record("concurrency_simultaneous", {"exit_codes": codes, "refusal": err.strip()[:120]})
