"""Third reliability round, run folders (docs/reliability.md, "Third round"): file names that
never collide, no folder deleted without asking, store-less folders that are not empty, files
created with the user's umask, a damaged store refused up front, the lock's holder named.
Each test reproduces a defect of the earlier code."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from invbench.bench.datasets import make_manifest
from invbench.bench.run import paths as run_paths
from test_bad_inputs import check_error_line

from tests.helpers import parts
from tests.helpers.reliability import cli, tree_digest

BASE = parts.toml_config()          # _test-gauss prior on 3 digits, 2 tasks, 1 test solver (6 rows)


def _cfg(tmp: Path, text: str = BASE, name: str = "c.toml") -> Path:
    cfg = tmp / name
    cfg.write_text(text)
    return cfg


# ----------------------------------------------------------------------------- names

HOSTILE = ["a b", "a_b", "a?b", "a/b", "a\\b", ".a", "_.a", "", "_", "图像", "画像", "a~b", "A", "a" * 40,
           "a_b~" + "0" * run_paths.HASH_CHARS, "x\x00y", "x\ny", "..", "."]


def test_stem_is_injective_safe_and_keeps_safe_ids():
    stems = [run_paths.stem(s) for s in HOSTILE]
    assert len(set(stems)) == len(HOSTILE), "two ids share a file name"
    for raw, s in zip(HOSTILE, stems):
        assert "/" not in s and "\\" not in s and not s.startswith(".") and s and s.isprintable(), (raw, s)
    for safe in ("img_0001", "a-b+c.d", "A"):
        assert run_paths.stem(safe) == safe   # committed runs keep their names
    assert run_paths.colliding(["a b", "a_b", "a?b"]) is None
    assert run_paths.colliding(["Img", "img"]) == ("Img", "img")   # case-insensitive file systems


def _named_folder(tmp: Path, names: list[str]) -> Path:
    """imgs/ with one distinct 8x8 image per name (value i / 10), plus a manifest."""
    root = tmp / "imgs"
    root.mkdir()
    for i, n in enumerate(names):
        np.save(root / f"{n}.npy", np.full((1, 8, 8), (i + 1) / 10))
    (root / "MANIFEST.sha256").write_text(make_manifest(root))
    return root


FOLDER = ('[[datasets]]\nname = "imgs"\ntype = "folder"\nroot = "imgs"\n'
          'manifest = "imgs/MANIFEST.sha256"\nchannels = 1\n')
DIGITS = '[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 3\n'


def test_ids_that_differ_outside_the_safe_set_get_their_own_files(tmp_path, capsys):
    """'a b', 'a_b' and 'a?b' (and two 2-character CJK names) used to share one reconstruction,
    measurement and truth file (the last writer won); now each has its own, holding its image."""
    from invbench.bench.runfiles import read_png
    from invbench.bench.store import load_results

    names = ["a b", "a_b", "a?b", "图像", "画像"]
    _named_folder(tmp_path, names)
    out = tmp_path / "run"
    text = parts.toml_config(extra="save_npy = true").replace(DIGITS, FOLDER)
    rc, _, err = cli(capsys, ["run", _cfg(tmp_path, text), "--out", out, "--no-progress"])
    assert rc == 0, err
    df = load_results(out)
    assert set(df["image_id"]) == set(names)
    assert df["recon_path"].nunique() == len(df) == 2 * len(names)
    for i, n in enumerate(names):
        truth = read_png(out / run_paths.truth_rel("imgs", n))
        assert np.allclose(truth, (i + 1) / 10, atol=1 / 255), f"truth of {n!r} holds another image"
        assert (out / run_paths.meas_rel("inpaint", "imgs", n, 0)).is_file()
        for rel in df[df["image_id"] == n]["recon_path"]:
            assert (out / rel).is_file() and (out / (rel[:-4] + ".npy")).is_file()


def test_ids_whose_names_would_collide_are_refused(tmp_path, capsys):
    """Ids that differ only in case would share a file on a case-insensitive file system:
    refused up front naming both, nothing written."""
    _named_folder(tmp_path, ["Img", "img"])
    cfg = _cfg(tmp_path, BASE.replace(DIGITS, FOLDER))
    before = tree_digest(tmp_path)
    rc, _, err = cli(capsys, ["run", cfg, "--out", tmp_path / "run", "--no-progress"])
    assert rc == 2
    check_error_line(err, ["datasets[0] (imgs)", "'Img'", "'img'", "share one file name"])
    assert tree_digest(tmp_path) == before


def test_report_grid_reads_the_truth_the_runner_wrote(tmp_path, capsys):
    """The report's sample grid finds truth and measurement of an id with unsafe characters
    (it used to look for ``truth/<dataset>/<raw id>.png``)."""
    from invbench.bench.report import figbase
    from invbench.bench.report.data import load_run

    _named_folder(tmp_path, ["a b", "c?d"])
    out = tmp_path / "run"
    assert cli(capsys, ["run", _cfg(tmp_path, BASE.replace(DIGITS, FOLDER)), "--out", out, "--no-progress"])[0] == 0
    seen = []
    real = figbase.read_png
    figbase.read_png = lambda p: seen.append(p) or real(p)
    try:
        from invbench.bench.report import write_report

        write_report(out, tmp_path / "rep")
    finally:
        figbase.read_png = real
    found = {Path(p).relative_to(out).as_posix() for p in seen if p is not None}
    assert run_paths.truth_rel("imgs", "a b") in found and run_paths.meas_rel("inpaint", "imgs", "a b", 0) in found
    assert load_run(out).results["image_id"].nunique() == 2


# ----------------------------------------------------------------------------- demo replaces only its own files


@pytest.fixture
def no_report(monkeypatch):
    """The demo's report is not what these tests check: skip it (it costs seconds)."""
    from invbench.bench import report

    monkeypatch.setattr(report, "write_report", lambda run_dir, out=None, **kw: Path(run_dir) / "report")


def _fake_repo(tmp: Path, steps: int) -> Path:
    """A repository root whose configs/demo.toml is the small test experiment named 'demo'."""
    root = tmp / "repo"
    (root / "configs").mkdir(parents=True)
    text = BASE.replace('name = "t"', 'name = "demo"').replace('name = "_test_noisy"',
                                                                 'name = "_test_noisy"\noverrides = { steps = '
                                                                 f'{steps} }}')
    (root / "configs" / "demo.toml").write_text(text)
    return root


def test_demo_replaces_only_what_the_older_run_wrote(tmp_path, capsys, monkeypatch, no_report):
    """``invbench demo --out DIR`` with an older demo run in DIR used to ``rmtree`` DIR, the user's
    notes and other folders included. Now it removes the files the old run wrote, says so, and
    leaves everything else."""
    from invbench.bench import cli as bcli

    out = tmp_path / "demo"
    monkeypatch.setattr(bcli, "_repo_root", lambda: _fake_repo(tmp_path / "a", steps=2))
    assert cli(capsys, ["demo", "--out", out, "--no-progress"])[0] == 0
    (out / "notes.txt").write_text("my notes")
    (out / "analysis").mkdir()
    (out / "analysis" / "fig.py").write_text("print(1)")
    monkeypatch.setattr(bcli, "_repo_root", lambda: _fake_repo(tmp_path / "b", steps=3))
    rc, _, err = cli(capsys, ["demo", "--out", out, "--no-progress"])
    assert rc == 0, err
    assert "replacing the older demo run" in err and "nothing else in the folder is touched" in err
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "analysis" / "fig.py").read_text() == "print(1)"
    from invbench.bench.store import load_meta

    assert "steps = 3" in load_meta(out)["config"]


def test_demo_refuses_when_the_old_runs_folders_hold_user_files(tmp_path, capsys, monkeypatch, no_report):
    from invbench.bench import cli as bcli

    out = tmp_path / "demo"
    monkeypatch.setattr(bcli, "_repo_root", lambda: _fake_repo(tmp_path / "a", steps=2))
    assert cli(capsys, ["demo", "--out", out, "--no-progress"])[0] == 0
    (out / "recon" / "mine.txt").write_text("keep")
    before = tree_digest(out)
    monkeypatch.setattr(bcli, "_repo_root", lambda: _fake_repo(tmp_path / "b", steps=3))
    rc, _, err = cli(capsys, ["demo", "--out", out, "--no-progress"])
    assert rc == 2
    check_error_line(err, ["--out", "older demo run", "recon/mine.txt", "choose another --out"])
    assert tree_digest(out) == before


# ----------------------------------------------------------------------------- store-less folders


def test_run_named_entries_without_a_store_are_not_a_run(tmp_path, capsys):
    """A folder with only ``recon/`` and ``truth/`` (no store) used to count as empty: the run
    wrote into it, deleted user files matching the temp pattern and kept a stale truth PNG."""
    out = tmp_path / "out"
    (out / "recon").mkdir(parents=True)
    user_tmp = out / "recon" / ".x_s0.png.k2j3h4g5.invbench-tmp"
    user_tmp.write_bytes(b"a user's file")
    stale = out / run_paths.truth_rel("digits", "0")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    before = tree_digest(out)
    cfg = _cfg(tmp_path)
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress"])
    assert rc == 2
    check_error_line(err, ["--out", "folder is not empty and holds no run", "recon", "--allow-nonempty-out"])
    assert tree_digest(out) == before
    # told to write there anyway: the user's file stays, and truth/ is the run's own
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--allow-nonempty-out"])
    assert rc == 0, err
    assert user_tmp.read_bytes() == b"a user's file"
    from invbench.bench.store import load_results

    ids = sorted(set(load_results(out)["image_id"]))
    for iid in ids:
        assert (out / run_paths.truth_rel("digits", iid)).read_bytes()[:4] == b"\x89PNG"


def test_an_empty_lock_file_alone_is_a_killed_start_not_a_foreign_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").touch()
    rc, _, err = cli(capsys, ["run", _cfg(tmp_path), "--out", out, "--no-progress"])
    assert rc == 0, err


# ----------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, capsys, mask, mode):
    """Every output file used to be 0600 whatever the umask (group members could not read a shared
    run); now the mode is 0666 & ~umask, as for any file a program creates."""
    old = os.umask(mask)
    try:
        out = tmp_path / "run"
        assert cli(capsys, ["run", _cfg(tmp_path), "--out", out, "--no-progress"])[0] == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*.png")]
    assert files
    assert {p.stat().st_mode & 0o777 for p in files} == {mode}


# ----------------------------------------------------------------------------- damaged store, locks


def _corrupt_index(db: Path) -> None:
    """Overwrite the root page of the results table's primary-key index with garbage cells."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE type='index' AND tbl_name='results'").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page + 8)
        f.write(bytes(range(7, 250)) * 3)


def test_store_with_a_corrupt_index_is_refused_up_front(tmp_path, capsys):
    """A store whose index is damaged passed the up-front check and failed later naming no file."""
    cfg, out = _cfg(tmp_path), tmp_path / "run"
    assert cli(capsys, ["run", cfg, "--out", out, "--no-progress"])[0] == 0
    _corrupt_index(out / "results.sqlite")
    before = tree_digest(out)
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    assert rc == 2
    check_error_line(err, [str(out / "results.sqlite"), "damaged"])
    assert tree_digest(out) == before


def _hold(script: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_message_names_the_holding_process(tmp_path, capsys):
    """'another invbench run is writing this run directory' now says which process holds it."""
    cfg, out = _cfg(tmp_path), tmp_path / "run"
    assert cli(capsys, ["run", cfg, "--out", out, "--no-progress"])[0] == 0
    p = _hold(f"""
        import fcntl, time
        f = open({str(out / '.lock')!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(60)
        """)
    try:
        rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    finally:
        p.kill()
        p.wait()
    assert rc == 2
    check_error_line(err, ["lock held", f"pid {p.pid}", "python"])


def test_locked_store_message_names_the_sqlite_writer(tmp_path, capsys, monkeypatch):
    """An SQLite writer of another program holds the store: the line names its pid."""
    from invbench.bench import store

    cfg, out = _cfg(tmp_path), tmp_path / "run"
    assert cli(capsys, ["run", cfg, "--out", out, "--no-progress"])[0] == 0
    con = sqlite3.connect(out / "results.sqlite", isolation_level=None)
    con.execute("DELETE FROM results WHERE row_id IN (SELECT row_id FROM results LIMIT 2)")
    con.close()
    p = _hold(f"""
        import sqlite3, time
        con = sqlite3.connect({str(out / 'results.sqlite')!r}, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        print("held", flush=True)
        time.sleep(60)
        """)
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    try:
        rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", "--resume"])
    finally:
        p.kill()
        p.wait()
    assert rc == 1
    check_error_line(err, [str(out / "results.sqlite"), "locked by another process", f"pid {p.pid}"])


# ----------------------------------------------------------------------------- bounds and paths


def test_out_with_an_overlong_name_is_exit_2(tmp_path, capsys):
    """``run --out x/<300 chars>`` ended with exit 1 and a raw OSError."""
    cfg = _cfg(tmp_path)
    before = tree_digest(tmp_path)
    rc, _, err = cli(capsys, ["run", cfg, "--out", tmp_path / "x" / ("a" * 300), "--no-progress"])
    assert rc == 2
    check_error_line(err, ["--out", "300 bytes", "limit 255", "shorter --out"])
    assert tree_digest(tmp_path) == before


def test_unbounded_warmup_is_refused(tmp_path, capsys):
    """``warmup = 10**12`` (with a 0-NFE solver nothing would even count it) never ended."""
    rc, _, err = cli(capsys, ["run", _cfg(tmp_path), "--out", tmp_path / "run", "--no-progress",
                              "--set", "warmup=1000000000000"])
    assert rc == 2
    check_error_line(err, ["warmup: must be at most 100"])
    assert not (tmp_path / "run").exists()
