"""Second reliability round (docs/reliability.md, "Run folder safety, changed inputs, missing
files, storage faults, reports"): outcomes that are not a plain exit-2 refusal, so they live
outside the bad-input corpus. Each test reproduces a defect of the earlier code."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import _parts
from _rel import cli
from test_bad_inputs import check_error_line

BASE = _parts.toml_config()          # _test-gauss prior on 3 digits, 2 tasks, 1 test solver (6 rows)


def _cfg(tmp: Path, text: str = BASE) -> Path:
    cfg = tmp / "c.toml"
    cfg.write_text(text)
    return cfg


# ----------------------------------------------------------------------------- 1. user files


def test_cleanup_never_touches_user_files(tmp_path, capsys):
    """With --allow-nonempty-out the run writes next to a user's files and removes only its own
    temp files (exact names inside recon/, meas/, truth/); a user's ``.*.tmp`` files survive."""
    out = tmp_path / "e"
    (out / "p" / "s").mkdir(parents=True)
    user = {out / "p" / ".notes.tmp": b"x", out / "p" / "s" / ".d.tmp": b"y",
            out / ".a.png.abcdefgh.tmp": b"top-level look-alike", out / "notes.txt": b"mine"}
    for f, b in user.items():
        f.write_bytes(b)
    (out / "recon").mkdir()
    own = out / "recon" / ".x_s0.png.k2j3h4g5.invbench-tmp"     # a temp file of an interrupted write
    own.write_bytes(b"half")
    rc, _, err = cli(capsys, ["run", _cfg(tmp_path), "--out", out, "--no-progress", "--allow-nonempty-out"])
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
