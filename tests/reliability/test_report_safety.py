"""Safety of ``invbench report`` (docs/reports.md, "Incomplete runs" and "Writing the report"):

* an incomplete run (killed, or still running) says so: rows present against rows expected from
  the run's grid, per cell and as a banner; solvers never reached are listed as "not run"; a
  sharded run being written is reported from the run store plus the shard stores;
* every image the report reads is checked against a pixel cap by its header before decoding;
* the report is built in a staging folder next to ``--out`` and swapped in, so a kill at any
  point leaves the old or the new report whole and no stale figure survives; a folder that is
  not a report is never replaced;
* storage errors and report settings that name nothing in the run are one line and exit 2.

Runs are the fake contract-schema runs of ``tests/helpers/report_fixture.py`` (no solver runs).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import os
import shutil
import signal
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest

from tests.helpers.reliability import cli, tree_digest
from tests.helpers.report_fixture import CellSpec, make_run

# the grid the fixture's rows come from: 3 solvers x 1 task x 1 dataset (3 images) x 2 seeds
GRID_CONFIG = """\
name = "fixture"
seeds = [0, 1]

[[datasets]]
name = "tiny"
type = "bundled"

[[priors]]
name = "small-cpu"
datasets = ["tiny"]

[[tasks]]
name = "inpaint_box"
operator = "inpaint_box"
noise_sigma = 0.025

[[solvers]]
name = "dps"

[[solvers]]
name = "ddrm"

[[solvers]]
name = "vml_map"
"""
GRID_META = {"config": GRID_CONFIG,
             "datasets": repr({"tiny": {"type": "bundled", "count": 3, "image_shape": [3, 16, 16]}})}


def _cells(*solvers: str) -> list[CellSpec]:
    return [CellSpec(s, "default", "inpaint_box", "tiny", "small-cpu", 24.0 - i, 1.0 + i, 50, 50)
            for i, s in enumerate(solvers)]


def _grid_run(path: Path, solvers=("dps", "ddrm", "vml_map")) -> Path:
    return make_run(path, _cells(*solvers), meta_extra=GRID_META)


def _sql(db: Path, sql: str, params: tuple = ()) -> None:
    con = sqlite3.connect(db)
    con.execute(sql, params)
    con.commit()
    con.close()


def _md_row(md: str, solver: str) -> list[str]:
    """The leaderboard row of ``solver`` (its display name, as Markdown escapes it)."""
    from invbench.bench.report.names import solver_name

    name = solver_name(solver).replace("_", "\\_")
    line = next(ln for ln in md.splitlines() if ln.startswith("|") and f"| {name} " in ln)
    return [c.strip() for c in line.strip("|").split("|")]


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(autouse=True)
def quick_figures(monkeypatch):
    """Figures laid out as usual but saved as a 1-pixel PNG and an empty PDF, at one width: these
    tests are about which files a report holds and when, not about how figures look (that is
    tests/bench/test_figures.py), and rendering is most of a report's time."""
    import functools

    from invbench.bench.report import figures
    from matplotlib.figure import Figure
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="png")
    tiny = buf.getvalue()

    def savefig(self, fname, *, format=None, **kw):
        fname.write(tiny if format == "png" else b"%PDF-1.4\n%%EOF\n")

    monkeypatch.setattr(Figure, "savefig", savefig)
    monkeypatch.setattr(figures, "make_figures",
                        functools.partial(figures.make_figures, widths=(figures.DOUBLE_COLUMN_IN,)))


# --------------------------------------------------------------------------- incomplete runs


def test_incomplete_run_states_rows_present_and_expected(tmp_path, capsys):
    """A run killed after 4 of dps's 6 rows and before vml_map: dps reads 4/6 (not 4/4),
    vml_map is listed as "not run", and a banner says 10 of 18 rows."""
    cfg = GRID_CONFIG + '\n[report]\nreference = "vml_map"\n'   # declared, never reached: no refusal
    run = make_run(tmp_path / "run", _cells("dps", "ddrm"), meta_extra={**GRID_META, "config": cfg})
    _sql(run / "results.sqlite", "DELETE FROM results WHERE solver = 'dps' AND image_id = 'img2'")
    rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "rep"])
    assert rc == 0, err
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "incomplete run: 10 of 18 rows" in md
    assert "4/6" in _md_row(md, "dps") and "6/6" in _md_row(md, "ddrm")
    assert "not run" in _md_row(md, "vml_map")[-1] and "0/6" in _md_row(md, "vml_map")
    assert "not run 2/6" in _md_row(md, "dps")[-1]
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "incomplete run: 10 of 18 rows" in page
    recs = {r["solver"]: r for r in _csv(tmp_path / "rep" / "leaderboard.csv")}
    assert (recs["dps"]["n_rows"], recs["dps"]["n_expected"]) == ("4", "6")
    assert (recs["vml_map"]["n_rows"], recs["vml_map"]["n_expected"], recs["vml_map"]["status"]) == ("0", "6",
                                                                                                     "not run")
    assert "invbench: warning: incomplete run: 10 of 18 rows" in err     # and warning lines on the terminal
    assert "invbench: warning: report.reference 'vml_map' has no row in this run" in err


def test_complete_run_has_no_banner(tmp_path, capsys):
    run = _grid_run(tmp_path / "run")
    rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "rep"])
    assert rc == 0 and "incomplete" not in err
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "incomplete run" not in md and "6/6" in _md_row(md, "vml_map")


def _move_rows_to_shard(run: Path, shard: int, where: str) -> Path:
    """Move the rows matching ``where`` from the run store into ``shards/<shard>/results.sqlite``
    (what a shard has committed but the parent has not merged yet)."""
    sdir = run / "shards" / str(shard)
    sdir.mkdir(parents=True)
    shutil.copy(run / "results.sqlite", sdir / "results.sqlite")
    _sql(sdir / "results.sqlite", f"DELETE FROM results WHERE NOT ({where})")
    _sql(run / "results.sqlite", f"DELETE FROM results WHERE {where}")
    return sdir


def test_live_sharded_run_is_reported_from_run_and_shard_stores(tmp_path, capsys):
    """While a sharded run is being written (lock held, rows still in the shard stores), the
    report shows the committed rows of the shard stores and says that the run is still running,
    instead of "no results"."""
    run = _grid_run(tmp_path / "run", ("dps", "ddrm"))
    _move_rows_to_shard(run, 0, "solver = 'dps'")
    _move_rows_to_shard(run, 1, "solver = 'ddrm' AND seed = 0")
    _sql(run / "results.sqlite", "DELETE FROM results")      # nothing merged yet
    with open(run / ".lock", "a+") as lock:                   # the parent holds the run's lock
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "rep"])
    assert rc == 0, err
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "no results" not in md
    assert "incomplete run: 9 of 18 rows" in md and "still running" in md
    assert "6/6" in _md_row(md, "dps") and "3/6" in _md_row(md, "ddrm")
    assert "not run" in _md_row(md, "vml_map")[-1]
    assert "still running" in (tmp_path / "rep" / "index.html").read_text()


def test_shard_rows_never_replace_finished_run_rows(tmp_path):
    """A shard store's unfinished row does not hide the run store's finished one (the rule of
    the merge that the next --resume does)."""
    from invbench.bench.report import load_run

    run = _grid_run(tmp_path / "run")
    sdir = run / "shards" / "0"
    sdir.mkdir(parents=True)
    shutil.copy(run / "results.sqlite", sdir / "results.sqlite")
    _sql(sdir / "results.sqlite", "UPDATE results SET status = 'error', psnr = NULL WHERE solver = 'dps'")
    r = load_run(run, progress=True)
    assert len(r.results) == 18 and (r.results["status"] == "ok").all()


# --------------------------------------------------------------------------- pixel cap


def _png_header_only(path: Path, width: int, height: int, idat: bytes = b"") -> None:
    """A PNG whose header declares ``width`` x ``height`` (8-bit grey), with ``idat`` as pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(idat))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 60_000])
def test_oversized_run_images_are_refused_by_header(tmp_path, capsys, monkeypatch, side):
    """A reconstruction whose header declares more pixels than the cap is never decoded: its
    panel says so and a warning names the file; the rest of the report is written (exit 0).
    (Before: 10000x10000 took the report to 7.9 GB; 60000x60000 ended in a
    DecompressionBombError naming no file.)"""
    from PIL import ImageFile

    run = _grid_run(tmp_path / "run")
    bomb = run / "recon" / "dps__default" / "inpaint_box" / "tiny" / "small-cpu" / "img0_s0.png"
    _png_header_only(bomb, side, side, b"\0" * 1000)
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(getattr(self, "filename", ""))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "rep"])
    assert rc == 0, err
    assert decoded and bomb.resolve() not in {Path(f).resolve() for f in decoded}   # never decoded
    line = next(ln for ln in err.splitlines() if "img0_s0.png" in ln)
    assert line.startswith("invbench: warning: ") and "pixels" in line and "cap" in line
    assert list((tmp_path / "rep" / "figures").glob("grid__*.png"))
    assert "img0_s0.png" in (tmp_path / "rep" / "index.html").read_text()


# --------------------------------------------------------------------------- atomic report


def test_report_replaces_the_old_one_whole_and_drops_stale_figures(tmp_path, capsys):
    run = _grid_run(tmp_path / "run")
    rep = tmp_path / "rep"
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    stale = rep / "figures" / "pareto__gone__task.png"    # a figure the next report does not make
    stale.write_bytes(b"old")
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    assert not stale.exists() and (rep / "index.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]   # no staging folder left


def test_a_folder_that_is_not_a_report_is_never_replaced(tmp_path, capsys):
    run = _grid_run(tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("my work")
    before = tree_digest(mine)
    rc, _, err = cli(capsys, ["report", run, "--out", mine])
    assert rc == 2 and err.count("\n") == 1 and "invbench: error: report --out" in err and "not a report" in err
    assert tree_digest(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "run"]


def test_a_report_of_an_earlier_version_is_replaced(tmp_path, capsys):
    """A report folder written before the marker file existed (only report files) is replaced."""
    run = _grid_run(tmp_path / "run")
    rep = tmp_path / "rep"
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    (rep / ".invbench-report").unlink()
    (rep / "figures" / "bars__old__x.pdf").write_bytes(b"old")
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    assert not (rep / "figures" / "bars__old__x.pdf").exists() and (rep / ".invbench-report").is_file()


def _killed_report(run: Path, rep: Path, where: str) -> None:
    """Write the report of ``run`` into ``rep`` in a forked child that SIGKILLs itself at
    ``where`` ("build": while figures are written; "swap": right after the new folder is moved in,
    before the old one is deleted)."""
    pid = os.fork()
    if pid == 0:   # child: no pytest cleanup, no flush, like a kill
        try:
            from invbench.bench.report import figures

            def die(*a, **k):
                os.kill(os.getpid(), signal.SIGKILL)

            if where == "build":
                real = figures.bars

                def bars(*a, **k):
                    real(*a, **k)
                    die()
                figures.bars = bars
            else:   # the first removal after the build is the old folder's, after the swap
                shutil.rmtree = die
            from invbench.bench.report import write_report

            write_report(run, rep)
        finally:
            os._exit(3)   # not reached when killed
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.parametrize("where", ["build", "swap"])
def test_sigkill_leaves_the_old_or_the_new_report_whole(tmp_path, capsys, where):
    run = _grid_run(tmp_path / "run", ("dps", "ddrm"))
    rep = tmp_path / "rep"
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    old = tree_digest(rep)
    _sql(run / "results.sqlite", "UPDATE results SET psnr = psnr + 1")   # the new report differs
    _killed_report(run, rep, where)
    if where == "build":
        assert tree_digest(rep) == old                        # the old report, untouched
    else:
        assert tree_digest(rep) != old and (rep / "index.html").exists() and (rep / "leaderboard.csv").exists()
        assert (rep / ".invbench-report").is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("rep", "run")]
    assert leftovers and all(n.startswith(".rep.") for n in leftovers)   # the killed report's folder
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]   # cleaned by the next report


# --------------------------------------------------------------------------- storage errors, settings


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_storage_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch, code):
    """A full, read-only or forbidden disk under --out: exit 2, one line naming the path and the
    error, the previous report whole and no staging folder left."""
    from invbench.bench import fsafety

    run = _grid_run(tmp_path / "run")
    rep = tmp_path / "rep"
    assert cli(capsys, ["report", run, "--out", rep])[0] == 0
    old = tree_digest(rep)
    real = fsafety.atomic_write_bytes

    def write(path, data):
        if str(path).endswith(".pdf"):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, data)

    monkeypatch.setattr(fsafety, "atomic_write_bytes", write)
    monkeypatch.setattr("invbench.bench.report.figures.atomic_write_bytes", write)
    monkeypatch.setattr("invbench.bench.report.figbase.atomic_write_bytes", write)
    rc, _, err = cli(capsys, ["report", run, "--out", rep])
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("invbench: error: report --out ") and os.strerror(code) in err and ".pdf" in err
    assert tree_digest(rep) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]


def test_storage_error_creating_the_staging_folder(tmp_path, capsys, monkeypatch):
    import tempfile

    run = _grid_run(tmp_path / "run")

    def mkdtemp(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".rep.x"))

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "sub" / "rep"])
    assert rc == 2 and err.count("\n") == 1 and "Read-only file system" in err and "report --out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]   # the parent it created is removed


def test_unknown_report_images_are_refused(tmp_path, capsys):
    cfg = GRID_CONFIG + '\n[report]\nimages = ["nope"]\n'
    run = make_run(tmp_path / "run", _cells("dps"), meta_extra={**GRID_META, "config": cfg})
    rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "rep"])
    assert rc == 2 and err.count("\n") == 1, err
    assert "report.images" in err and "'nope'" in err and "img0" in err
    assert not (tmp_path / "rep").exists()


def test_unknown_reference_is_refused(tmp_path, capsys):
    run = _grid_run(tmp_path / "run", ("dps", "ddrm"))
    rc, _, err = cli(capsys, ["report", run, "--out", tmp_path / "rep", "--reference", "pigdm"])
    assert rc == 2 and err.count("\n") == 1, err
    assert "--reference" in err and "'pigdm'" in err and "ddrm" in err and "dps" in err
    assert not (tmp_path / "rep").exists()
