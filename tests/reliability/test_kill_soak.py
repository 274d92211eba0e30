"""Kill soak (docs/reliability.md, "Kill soak"): SIGKILL ``invbench run`` at seeded random moments, ``--resume`` each
time, and compare the final store and images with an uninterrupted run.

A *kill point* is drawn from a seeded ``random.Random``: either a startup kill (a random time
0.05-2.5 s after launch: during imports, validation, store creation) or a row kill (once the
process has committed ``k`` new rows, ``k`` in 0..3, plus a random 0-0.3 s delay, so kills land
inside solves, file writes and commits). After every kill:

* the process really died of SIGKILL (exit status -9) and left at most its batch in flight;
* every row that was finished before keeps its ``created`` time, and its reconstruction file
  its inode and mtime (nothing finished is recomputed or rewritten).

After the last kill a final ``--resume`` finishes the run; the store must equal the
uninterrupted reference: same row ids (unique), statuses, metrics, seeds and paths; PNG and
float .npy reconstructions bitwise identical; no extra files; no temp files.

The slow soak (20 kill points) uses ``configs/smoke.toml`` when the small CPU prior's weights
(priors/data/small_cpu.pt) exist, else the GMM-only config of tests/helpers/reliability.py, and prints which.
The default suite runs a 2-kill-point subset on a smaller GMM config. tests/bench/test_resume.py
kills a test-solver run at fixed row counts (1 and 4 kill points); this file is the randomised,
real-solver version.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from invbench.bench import store

from tests.helpers import parts
from tests.helpers.reliability import REPO, gmm_text

SMOKE = REPO / "configs" / "smoke.toml"
SMALL_WEIGHTS = REPO / "priors" / "data" / "small_cpu.pt"
COMPARE = ["row_id", "experiment", "solver", "preset", "task", "operator", "noise_sigma", "sigma_y", "dataset",
           "prior", "image_id", "seed", "status", "message", "nfe", "vjp", "config_hash", "recon_path",
           "operator_seed", "noise_seed", "solver_seed", *store.METRIC_COLUMNS]



def _finished(db: Path) -> dict[str, tuple[float, str]]:
    """row_id -> (created, recon_path) of the ok/skipped rows."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute(
            "SELECT row_id, created, recon_path FROM results WHERE status IN ('ok', 'skipped')")}
    finally:
        con.close()


def _stat(run_dir: Path, rel: str | None):
    if not rel:
        return None
    st = (run_dir / rel).stat()
    return st.st_ino, st.st_mtime_ns


@dataclass
class SoakResult:
    config: str
    rows: int
    kills: int = 0
    partial: int = 0
    moments: list[str] = field(default_factory=list)

    def line(self, n: int) -> str:
        return f"kill soak: {self.kills}/{n} kill points, nothing lost, nothing duplicated, identical results"


def _snapshot(run_dir: Path):
    df = store.load_results(run_dir).sort_values("row_id").reset_index(drop=True)
    files = {p.relative_to(run_dir).as_posix(): p.read_bytes()
             for sub in ("recon", "meas", "truth") for p in sorted((run_dir / sub).rglob("*")) if p.is_file()}
    return df, files


def soak(cfg: Path, work: Path, n_kills: int, seed: int) -> SoakResult:
    """Run the soak described in the module docstring; assertion errors name the failing kill."""
    ref = work / "ref"
    parts.reference_run(cfg, ref)   # 1 thread, like the killed subprocesses
    ref_df, ref_files = _snapshot(ref)
    n = len(ref_df)
    assert n > n_kills and ref_df.row_id.is_unique
    res = SoakResult(cfg.name, n)
    rng = random.Random(seed)
    out = work / "killed"
    db = out / "results.sqlite"
    finished: dict[str, tuple[float, str]] = {}
    stats: dict[str, object] = {}
    for i in range(n_kills):
        base = max(parts.count_rows(db), 0)
        left = n_kills - i
        startup = rng.random() < 0.15
        k = min(rng.choice([0, 1, 1, 2, 3]), max(0, (n - base - 2) // left))
        delay = rng.uniform(0.0, 0.3)
        t_kill = rng.uniform(0.05, 2.5)
        args = ["run", str(cfg), "--out", str(out), "--no-progress"] + (["--resume"] if db.exists() else [])
        p = parts.cli_subprocess(args)
        t0 = time.time()
        what = ""
        while p.poll() is None and time.time() - t0 < 600:
            if startup and time.time() - t0 >= t_kill:
                what = f"startup +{t_kill:.2f}s"
                break
            if not startup and parts.count_rows(db) >= base + k:
                time.sleep(delay)
                what = f"after {k} new row(s) +{delay:.2f}s"
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        assert p.returncode == -signal.SIGKILL, f"kill {i + 1}: the run ended by itself before the kill " \
                                                 f"(rc {p.returncode}); stderr: {err[-500:]}"
        res.kills += 1
        done = _finished(db)
        for rid, (created, rel) in finished.items():   # nothing finished was recomputed / rewritten
            assert rid in done and done[rid][0] == created, f"kill {i + 1}: finished row {rid[:12]} was redone"
            assert _stat(out, rel) == stats[rid], f"kill {i + 1}: file {rel} of a finished row was rewritten"
        for rid, (created, rel) in done.items():
            if rid not in stats:
                stats[rid] = _stat(out, rel)
        finished = done
        res.partial += len(done) < n
        res.moments.append(f"{what}: {len(done)}/{n} rows")
    r = parts.cli_run(["run", str(cfg), "--out", str(out), "--resume", "--no-progress"], timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    df, files = _snapshot(out)
    assert df.row_id.is_unique and len(df) == n, "rows lost or duplicated"
    for rid, (created, rel) in finished.items():
        row = df[df.row_id == rid].iloc[0]
        assert row.created == created and _stat(out, rel) == stats[rid], f"finished row {rid[:12]} redone at the end"
    assert df[COMPARE].equals(ref_df[COMPARE]), "final rows differ from the uninterrupted run"
    assert files.keys() == ref_files.keys(), "files lost or extra files left"
    diff = [k for k in files if files[k] != ref_files[k]]
    assert not diff, f"{len(diff)} files differ from the uninterrupted run, e.g. {diff[:3]}"
    assert not [q for q in out.rglob("*") if q.name.endswith("tmp")], "temp files left behind"
    return res


def _soak_config(tmp_path: Path, **kw) -> Path:
    cfg = tmp_path / "soak.toml"
    cfg.write_text(gmm_text("rel-soak", **kw))
    return cfg


@pytest.mark.slow  # ~12 s; the default suite kills and resumes a run in tests/bench/test_resume.py
def test_kill_soak_fast_subset(tmp_path, figures):
    """2 seeded kill points on a 24-row GMM run."""
    cfg = _soak_config(tmp_path, limit=3, seeds="[0]")
    res = soak(cfg, tmp_path, n_kills=2, seed=8)
    print("\n" + res.line(2) + f" [{res.config}, {res.rows} rows; " + "; ".join(res.moments) + "]")
    assert res.kills == 2
    figures.record("kill_soak_fast",
                   {"kills": res.kills, "of": 2, "rows": res.rows, "config": "GMM (tests/helpers/reliability.py "
                                                                             "gmm_text, limit 3, one seed)",
                                      "moments": res.moments})


@pytest.mark.slow
def test_kill_soak_20_points(tmp_path, figures):
    """Acceptance: 20 seeded kill points, nothing lost, nothing duplicated, identical results."""
    if SMALL_WEIGHTS.exists():
        cfg, which = SMOKE, f"configs/smoke.toml (small-cpu weights present at {SMALL_WEIGHTS.relative_to(REPO)})"
    else:
        cfg, which = _soak_config(tmp_path, limit=8), ("GMM-only config (tests/helpers/reliability.py gmm_text, "
                                                       "limit 8; priors/data/small_cpu.pt not present)")
    print(f"\nkill soak config: {which}")
    res = soak(cfg, tmp_path, n_kills=20, seed=2024)
    for j, m in enumerate(res.moments, 1):
        print(f"  kill {j:2d}: {m}")
    print(res.line(20))
    assert res.kills == 20 and res.partial == 20
    figures.record("kill_soak",
                   {"kills": res.kills, "of": 20, "rows": res.rows, "config": which, "moments": res.moments})
