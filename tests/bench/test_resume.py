"""Kill-and-resume: SIGKILL a run at several points, --resume, compare with an uninterrupted run."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest
from invbench.bench import store

from tests.helpers import parts

parts.register()

SOLVERS = '[[solvers]]\nname = "_test_noisy"\noverrides = { steps = 300 }\n'


def _text(steps: int = 300):
    return parts.toml_config(solvers_=SOLVERS.replace("300", str(steps)), limit=10, extra="save_npy = true")



def _run_and_kill(cfg, out, k: int, resume: bool, deadline: float = 120) -> dict[str, float]:
    """Start a run, SIGKILL it once >= k rows are committed; return the committed rows' created times."""
    args = ["run", str(cfg), "--out", str(out), "--no-progress"] + (["--resume"] if resume else [])
    p = parts.cli_subprocess(args)
    db = out / "results.sqlite"
    t0 = time.time()
    while time.time() - t0 < deadline:
        if p.poll() is not None:
            break
        if parts.count_rows(db) >= k:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    p.wait(timeout=60)
    p.stdout.close()
    p.stderr.close()
    if not db.exists():
        return {}
    con = sqlite3.connect(str(db))
    try:
        return dict(con.execute("SELECT row_id, created FROM results WHERE status IN ('ok','skipped')"))
    finally:
        con.close()


def _snapshot(run_dir):
    df = store.load_results(run_dir).sort_values("row_id").reset_index(drop=True)
    files = {}
    for rel in df.recon_path.dropna():
        files[rel] = (run_dir / rel).read_bytes()
        files[rel[:-4] + ".npy"] = (run_dir / (rel[:-4] + ".npy")).read_bytes()
    return df, files


@pytest.mark.parametrize("points", [
    pytest.param((5,), id="one-kill"),
    pytest.param((0, 3, 9, 14), id="four-kills", marks=pytest.mark.slow),   # 0: as soon as the store exists
])
def test_kill_then_resume(tmp_path, points):

    cfg = tmp_path / "c.toml"
    cfg.write_text(_text(300 if len(points) > 1 else 100))
    ref = tmp_path / "ref"   # uninterrupted reference, in process (same code path as the CLI), 1 thread
    parts.reference_run(cfg, ref)
    ref_df, ref_files = _snapshot(ref)
    n = len(ref_df)
    assert n == 20 and set(ref_df.status) == {"ok"}

    out = tmp_path / "killed"
    finished: dict[str, float] = {}
    partial = 0
    for i, k in enumerate(points):
        done = _run_and_kill(cfg, out, k, resume=i > 0)
        for rid, created in finished.items():   # nothing finished was recomputed
            assert done.get(rid) == created
        finished = done
        partial += len(done) < n
    print(f"kill points with a partial store: {partial}/{len(points)}")
    assert partial >= max(1, len(points) - 1)
    r = parts.cli_run(["run", str(cfg), "--out", str(out), "--resume", "--no-progress"])
    assert r.returncode == 0, r.stderr
    df, files = _snapshot(out)
    after = dict(zip(df.row_id, df.created))
    assert all(after[rid] == c for rid, c in finished.items())
    cols = ["row_id", "solver", "preset", "task", "dataset", "prior", "image_id", "seed", "status", "psnr", "mse",
            "consistency", "nfe", "vjp", "recon_path", "operator_seed", "noise_seed", "solver_seed"]
    assert df[cols].equals(ref_df[cols])
    assert df.row_id.is_unique and len(df) == n
    assert files.keys() == ref_files.keys() and all(files[k] == ref_files[k] for k in files)
    assert not [p for p in out.rglob("*") if p.name.endswith("tmp")]


def test_resume_redoes_unfinished_rows_only(tmp_path):
    """Rows marked error/oom/diverged are redone on --resume; ok rows are kept as they are."""
    from invbench.bench import config, run

    text = parts.toml_config(solvers_=SOLVERS.replace("300", "2"), limit=3)
    exp = config.loads(text, base_dir=tmp_path)
    out = tmp_path / "run"
    run.run(run.prepare(exp, out), out)
    with store.Store(out / "results.sqlite") as st:
        rows = st.rows("ORDER BY row_id")
        victim = rows[0]["row_id"]
        st.con.execute("UPDATE results SET status='error', message='x', psnr=NULL WHERE row_id=?", (victim,))
        created = {r["row_id"]: r["created"] for r in rows}
    s = run.run(run.prepare(exp, out, resume=True), out, resume=True)
    assert s.skipped_done == len(rows) - 1 and s.counts == {"ok": 1}
    df = store.load_results(out)
    assert set(df.status) == {"ok"} and len(df) == len(rows)
    assert all(c == created[rid] for rid, c in zip(df.row_id, df.created) if rid != victim)
    assert dict(zip(df.row_id, df.created))[victim] > created[victim]


def test_second_run_on_same_dir_is_refused(tmp_path):
    from invbench.bench import config, run
    from invbench.bench.run import resume

    exp = config.loads(parts.toml_config(limit=1), base_dir=tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    with resume.lock(out), pytest.raises(resume.RunError, match="lock"):
        run.run(run.prepare(exp, out), out)
    assert not (out / "results.sqlite").exists()


@pytest.mark.parametrize("recorded_scheme, says", [
    (None, "earlier invbench that hashed operators by their attributes"),
    ("state", "earlier invbench that encoded operator and network states without framing"),
    ("current", "inputs changed"),
])
def test_resume_of_a_run_with_other_operator_hashes_says_why(tmp_path, recorded_scheme, says):
    """A run started before operators hashed their declared state() records other operator
    hashes: its resume is refused with that reason, not "inputs changed" (which stays the
    message when the run recorded the current scheme)."""
    import json

    from invbench.bench import config, run
    from invbench.bench.run import resume

    exp = config.loads(parts.toml_config(limit=1), base_dir=tmp_path)
    out = tmp_path / "run"
    run.run(run.prepare(exp, out), out, progress=False)
    with store.Store(out / "results.sqlite") as st:
        meta = st.meta()
        hashes = {k: ("0" * 64 if ".operator[" in k else v) for k, v in json.loads(meta["input_hashes"]).items()}
        st.set_meta({"input_hashes": json.dumps(hashes, sort_keys=True)})
        if recorded_scheme is None:
            st.con.execute("DELETE FROM meta WHERE key = 'operator_hashing'")
            st.con.commit()
        elif recorded_scheme != "current":
            st.set_meta({"operator_hashing": recorded_scheme})
    with pytest.raises(resume.RunError, match=says):
        run.run(run.prepare(exp, out, True), out, resume=True, progress=False)
