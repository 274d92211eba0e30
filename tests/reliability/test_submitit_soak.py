"""Soak of the submitit-local executor: SIGKILL or SIGTERM the parent ``invbench run
--executor submitit-local --shards 2`` at seeded random moments, check that its shard workers
die with it, ``--resume`` each time, and compare the final store and files with an
uninterrupted run (docs/reliability.md, "submitit-local under signals").

After every kill: the parent ended (SIGKILL: status -9; SIGTERM: it exits by itself, 130, or
dies of the signal); within 15 s no process of the run's submitit folder (controller or worker)
is left; every row finished before (in the run store or a shard store) keeps its ``created`` time
and its file its inode and mtime. The final ``--resume`` (submitit-local again) must give the
reference's rows (ids, statuses, metrics, seeds, paths) and bitwise-identical files.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from invbench.bench import store
from test_kill_soak import COMPARE, _snapshot, _stat

from tests.helpers import parts
from tests.helpers.reliability import gmm_text

SUBMITIT = ["--executor", "submitit-local", "--shards", "2"]


def _all_finished(out: Path) -> dict[str, tuple[float, str]]:
    """row_id -> (created, recon_path) of ok/skipped rows in the run store and every shard store."""
    rows: dict[str, tuple[float, str]] = {}
    for db in [out / "results.sqlite", *sorted(out.glob("shards/*/results.sqlite"))]:
        if not db.exists():
            continue
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                for rid, created, rel in con.execute(
                        "SELECT row_id, created, recon_path FROM results WHERE status IN ('ok', 'skipped')"):
                    rows.setdefault(rid, (created, rel))
            finally:
                con.close()
        except sqlite3.DatabaseError:
            continue   # not created yet
    return rows


def _leftover_processes(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (submitit controllers / workers)."""
    out = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmd.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text:
            out.append(f"{cmd.parent.name}: {text[:200]}")
    return out


def soak_submitit(cfg: Path, work: Path, n_kills: int, seed: int) -> list[str]:
    ref = work / "ref"
    r = parts.cli_run(["run", str(cfg), "--out", str(ref), "--no-progress"], timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    ref_df, ref_files = _snapshot(ref)
    n = len(ref_df)
    assert n >= 12 * 2
    rng = random.Random(seed)
    out = work / "killed"
    finished: dict[str, tuple[float, str]] = {}
    stats: dict[str, object] = {}
    moments = []
    for i in range(n_kills):
        sig = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
        base = len(_all_finished(out))
        startup = rng.random() < 0.2
        k = min(rng.choice([0, 1, 2, 3]), max(0, (n - base - 8) // (n_kills - i)))
        delay, t_kill = rng.uniform(0.0, 0.3), rng.uniform(0.5, 4.0)
        if n - base < 12:   # two shards finish a few rows within the kill delay: keep the run from ending
            startup, t_kill = True, min(t_kill, 2.5)
        args = ["run", str(cfg), "--out", str(out), "--no-progress", *SUBMITIT] + (["--resume"] if out.exists() else [])
        p = parts.cli_subprocess(args)
        t0 = time.time()
        what = ""
        while p.poll() is None and time.time() - t0 < 600:
            if startup and time.time() - t0 >= t_kill:
                what = f"startup +{t_kill:.2f}s"
                break
            if not startup and len(_all_finished(out)) >= base + k:
                time.sleep(delay)
                what = f"after {k} new row(s) +{delay:.2f}s"
                break
            time.sleep(0.01)
        assert p.poll() is None, f"kill {i + 1}: the run ended by itself (rc {p.returncode}): {p.stderr.read()[-800:]}"
        p.send_signal(sig)
        p.wait(timeout=120)
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        if sig == signal.SIGKILL:
            assert p.returncode == -signal.SIGKILL, (p.returncode, err[-500:])
        else:
            assert p.returncode in (130, -signal.SIGTERM), (p.returncode, err[-500:])
        t1 = time.time()
        while _leftover_processes(out / "submitit") and time.time() - t1 < 15:
            time.sleep(0.1)
        left = _leftover_processes(out / "submitit")
        assert not left, f"kill {i + 1} ({sig.name}): shard processes outlived their parent: {left}"
        done = _all_finished(out)
        for rid, (created, rel) in finished.items():
            assert rid in done and done[rid][0] == created, f"kill {i + 1}: finished row {rid[:12]} was redone"
            assert _stat(out, rel) == stats[rid], f"kill {i + 1}: file {rel} of a finished row was rewritten"
        for rid, (_, rel) in done.items():
            stats.setdefault(rid, _stat(out, rel))
        finished = done
        moments.append(f"{sig.name} {what}: {len(done)}/{n} rows")
    r = parts.cli_run(["run", str(cfg), "--out", str(out), "--resume", "--no-progress", *SUBMITIT], timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    df, files = _snapshot(out)
    assert df.row_id.is_unique and len(df) == n, "rows lost or duplicated"
    assert df[COMPARE].equals(ref_df[COMPARE]), "final rows differ from the uninterrupted run"
    assert files.keys() == ref_files.keys(), "files lost or extra files left"
    assert all(files[f] == ref_files[f] for f in files), "files differ from the uninterrupted run"
    assert not [q for q in out.rglob("*") if q.name.endswith("tmp")], "temp files left behind"
    assert len(store.load_results(out)) == n
    return moments, n


@pytest.mark.slow
def test_submitit_local_soak_10_points(tmp_path, figures):
    """Acceptance: 10 kill points (SIGKILL and SIGTERM alternately) of a sharded run: no shard
    process outlives its parent, nothing finished is lost or redone, --resume gives identical results."""
    cfg = tmp_path / "soak.toml"
    cfg.write_text(gmm_text("rel-submitit-soak", limit=6, seeds="[0]", dps_steps=40))
    moments, n = soak_submitit(cfg, tmp_path, n_kills=10, seed=77)
    for j, m in enumerate(moments, 1):
        print(f"  kill {j:2d}: {m}")
    print("submitit-local soak: 10/10 kill points, no orphan shard processes, identical results")
    figures.record("submitit_soak", {"kills": 10, "of": 10, "rows": n, "moments": moments,
                                     "config": "GMM (tests/helpers/reliability.py gmm_text, limit 6, one seed), "
                                               "--shards 2"})
