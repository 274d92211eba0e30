"""Second reliability round (docs/reliability.md, "Run folder safety, changed inputs, missing
files, storage faults, reports"): outcomes that are not a plain exit-2 refusal, so they live
outside the bad-input corpus. Each test reproduces a defect of the earlier code."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from test_bad_inputs import check_error_line

from tests.helpers import parts
from tests.helpers.reliability import cli

BASE = parts.toml_config()          # _test-gauss prior on 3 digits, 2 tasks, 1 test solver (6 rows)


def _cfg(tmp: Path, text: str = BASE) -> Path:
    cfg = tmp / "c.toml"
    cfg.write_text(text)
    return cfg


# ----------------------------------------------------------------------------- 1. user files


def test_cleanup_never_touches_user_files(tmp_path, capsys):
    """With --allow-nonempty-out the run writes next to a user's files. Without a results store
    nothing there is the run's own, so nothing is cleaned — not even a file named like the run's
    temp files; on a resume of its own store the run removes only its own temp files (exact
    names inside recon/, meas/, truth/); a user's ``.*.tmp`` files survive."""
    out = tmp_path / "e"
    (out / "p" / "s").mkdir(parents=True)
    user = {out / "p" / ".notes.tmp": b"x", out / "p" / "s" / ".d.tmp": b"y",
            out / ".a.png.abcdefgh.tmp": b"top-level look-alike", out / "notes.txt": b"mine"}
    for f, b in user.items():
        f.write_bytes(b)
    (out / "recon").mkdir()
    own = out / "recon" / ".x_s0.png.k2j3h4g5.invbench-tmp"     # a temp file of an interrupted write
    own.write_bytes(b"half")
    cfg = _cfg(tmp_path)
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--allow-nonempty-out"])
    assert rc == 0, err
    assert own.read_bytes() == b"half", "a file the run did not write was removed"
    own.unlink()
    own = out / "recon" / ".y_s0.png.k2j3h4g5.invbench-tmp"    # now inside the run's own folder
    own.write_bytes(b"half")
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    assert rc == 0, err
    for f, b in user.items():
        assert f.read_bytes() == b, f"user file {f.name} changed or deleted"
    assert not own.exists()
    assert (out / "results.sqlite").is_file()


def test_resume_keeps_user_files_in_run_folder(tmp_path, capsys):
    """A resumed run (folder holds a store) also leaves files it did not create alone."""
    cfg, out = _cfg(tmp_path), tmp_path / "run"
    assert cli(capsys, ["run", cfg, "--out", out, "--no-progress"])[0] == 0
    notes = out / "recon" / ".my-notes.tmp"
    notes.write_text("keep me")
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    assert rc == 0, err
    assert notes.read_text() == "keep me"


# ----------------------------------------------------------------------------- 3. missing files


def test_resume_recomputes_rows_whose_files_are_missing(tmp_path, capsys, monkeypatch):
    """A finished row whose reconstruction PNG (or its .npy) was deleted is recomputed by
    --resume, which says so; with a set metric (FID, unavailable here) the resume still finishes.
    The recomputed files are bitwise the originals; other rows are not redone."""
    from invbench.bench import store

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    text = BASE.replace('image = ["psnr", "mse", "consistency"]',
                        'image = ["psnr", "mse"]\nset = ["fid"]\n[metrics.fid]\ninception_path = "w/inception.pt"')
    cfg, out = _cfg(tmp_path, text), tmp_path / "run"
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress"])
    assert rc == 0, err
    before = store.load_results(out).set_index("row_id")
    png, npy = before.recon_path.iloc[0], before.recon_path.iloc[1][:-4] + ".npy"
    old = {rel: (out / rel).read_bytes() for rel in (png, npy)}
    (out / png).unlink()
    (out / npy).unlink()
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    assert rc == 0, err
    assert "2 finished row(s) lost their files" in err and "recomputing" in err
    after = store.load_results(out).set_index("row_id")
    assert {rel: (out / rel).read_bytes() for rel in old} == old
    redone = after.index[after.created != before.created.reindex(after.index)]
    assert sorted(redone) == sorted(before.index[:2])
    assert after.psnr.equals(before.psnr.reindex(after.index))
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    assert rc == 0 and "lost their files" not in err


# ----------------------------------------------------------------------------- 5. error path


def test_error_path_imports_nothing(monkeypatch):
    """Classifying an error (exit 2 or 1) imports no module: under memory pressure an import in
    the handler would raise a second error and leak a traceback."""
    import builtins

    from invbench.bench import cli, config, store

    def no_import(*a, **k):
        raise MemoryError("import attempted in the error path")

    monkeypatch.setattr(builtins, "__import__", no_import)
    assert cli._is_bad_input(config.ConfigError("x")) and cli._is_bad_input(store.StoreError("x"))
    assert not cli._is_bad_input(RuntimeError("x"))


# ----------------------------------------------------------------------------- 6. storage faults


def _fsize_limit(nbytes: int):
    def limit():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes beyond the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def test_store_creation_fault_leaves_nothing_behind(tmp_path):
    """A storage fault while the store is created (here: a file-size limit, as on a full disk):
    exit 1, one line naming the store and what to do, and no folder or empty store left behind,
    so a plain rerun works once the fault is gone."""
    cfg, out = _cfg(tmp_path), tmp_path / "run"
    proc = parts.cli_subprocess(["run", str(cfg), "--out", str(out), "--no-progress"], preexec_fn=_fsize_limit(1024))
    _, stderr = proc.communicate(timeout=300)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert r.returncode == 1, r.stderr
    line = check_error_line(r.stderr.strip().splitlines()[-1] + "\n", ["results.sqlite", "disk I/O error", "rerun"])
    assert "StoreError" not in line and not out.exists()
    r = parts.cli_run(["run", str(cfg), "--out", str(out), "--no-progress"])
    assert r.returncode == 0, r.stderr


def test_locked_store_is_reported_naming_the_store(tmp_path, capsys, monkeypatch):
    """Another SQLite writer (not an invbench run) holds the store: the run reports it after
    store.LOCK_WAIT_S (5 s; shortened here) as one line naming the store, exit 1, not after 60 s
    as 'database is locked'; the rows already finished are untouched."""
    from invbench.bench import store

    cfg, out = _cfg(tmp_path), tmp_path / "run"
    assert cli(capsys, ["run", cfg, "--out", out, "--no-progress"])[0] == 0
    con = sqlite3.connect(out / "results.sqlite", isolation_level=None)
    con.execute("DELETE FROM results WHERE row_id IN (SELECT row_id FROM results LIMIT 2)")
    n = con.execute("SELECT count(*) FROM results").fetchone()[0]
    con.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    try:
        rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert rc == 1
    check_error_line(err, [str(out / "results.sqlite"), "locked by another process", "--resume"])
    assert len(store.load_results(out)) == n


# ----------------------------------------------------------------------------- 7. executor errors


def test_failed_shard_is_one_line_naming_shard_error_and_log():
    """A shard's traceback (as submitit reports it) becomes one line: the shard, the error's last
    line, the log file and the resume hint."""
    import pytest
    from invbench.bench import executors
    from submitit.core.utils import FailedJobError

    class _Job:
        class paths:
            stderr = "/runs/x/submitit/7_0_log.err"

        def result(self):
            raise FailedJobError("Job (task=0) failed during processing with trace:\n----------------------\n"
                                 "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                                 "invbench.bench.runner.RunError: /runs/x/shards/1: another invbench run is writing "
                                 "this run directory (lock held)\n\nYou can check full logs with 'job.stderr(0)'")

    with pytest.raises(executors.ExecutorError) as e:
        executors.causes._result(_Job(), 1)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("shard 1 failed: invbench.bench.runner.RunError: ")
    assert "lock held" in msg and "7_0_log.err" in msg and "--resume" in msg


# ----------------------------------------------------------------------------- 9. reports and readers


def _finished_run(tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    rc, _, err = cli(capsys, ["run", _cfg(tmp_path), "--out", out, "--no-progress"])
    assert rc == 0, err
    return out


def test_readers_leave_the_run_folder_unchanged(tmp_path, capsys):
    """report, compare and the store readers open a finished run's store read-only
    (immutable): the run folder is byte-identical afterwards and no -wal/-shm file appears."""
    from invbench.bench import store

    from tests.helpers.reliability import tree_digest

    out = _finished_run(tmp_path, capsys)
    before = (tree_digest(out), sorted(p.name for p in out.iterdir()))
    rc, _, err = cli(capsys, ["report", out, "--out", tmp_path / "rep"])
    assert rc == 0, err
    rc, _, err = cli(capsys, ["compare", out, out])
    assert rc == 0, err
    store.load_results(out)
    store.load_meta(out)
    assert (tree_digest(out), sorted(p.name for p in out.iterdir())) == before
    assert not list(out.glob("results.sqlite-*"))


def test_report_files_are_replaced_atomically(tmp_path, capsys, monkeypatch):
    """A report write that fails (disk full on the PDF) leaves the previous files whole under
    their names and no temp file; the error names the file."""
    import errno
    import os

    out = _finished_run(tmp_path, capsys)
    rep = tmp_path / "rep"
    assert cli(capsys, ["report", out, "--out", rep])[0] == 0
    old = {p: p.read_bytes() for p in rep.rglob("*") if p.is_file()}
    real = os.replace

    def replace(src, dst, *a, **k):
        if str(dst).endswith(".pdf"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    rc, _, err = cli(capsys, ["report", out, "--out", rep])
    monkeypatch.undo()
    assert rc == 2 and ".pdf" in err and "No space left on device" in err   # a storage error of --out: exit 2
    assert {p: p.read_bytes() for p in rep.rglob("*") if p.is_file()} == old


def test_local_shards_get_no_time_limit(tmp_path, monkeypatch):
    """Local submitit jobs are given LOCAL_TIMEOUT_MIN (one year) unless the config sets
    timeout_min: submitit's own default (a few minutes) killed long shards."""
    import submitit
    from invbench.bench import config, executors

    seen: list[dict] = []
    real = submitit.AutoExecutor.update_parameters

    def record(self, **kw):
        seen.append(kw)
        return real(self, **kw)

    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", record)
    exp = config.load(_cfg(tmp_path))
    executors.run_submitit(exp, tmp_path / "run", shards=2, cluster="debug", setup=parts.register)
    assert any(kw.get("timeout_min") == executors.LOCAL_TIMEOUT_MIN for kw in seen), seen
