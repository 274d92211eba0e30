"""Regenerates reports/tuning/: tunes every solver of configs/tuning-study.toml with the same budget
(TRIALS trials, NFE cap per solve) on the validation split, runs paper/default and tuned presets
on the test split, and writes the paired table (table.md) and the commands (commands.txt).

Usage: python scripts/tuning_study.py [TRIALS]        (default 12; resumes finished studies)
       python scripts/tuning_study.py --table-only   (the table again from the stored studies and run)

Tuning wall times are read from each study's trial timestamps (first start to last end), so a
resumed study reports the time its trials took, not the time of the last call."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
from invbench.bench import cli
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tuning-study.toml"
OUT = ROOT / "reports" / "tuning"
RUNS = ROOT / "runs" / "tuning-study"
NFE_CAP = 50


NAMES = ["dps", "ddrm", "pigdm", "diffpir", "reddiff", "daps", "lmaps", "vml_map"]


def study_wall(solver: str) -> tuple[float, int, int]:
    """(seconds from the first trial's start to the last trial's end, trials, diverged trials)."""
    import optuna

    st = optuna.load_study(study_name="invbench-tune", storage=f"sqlite:///{OUT / solver / 'study.sqlite3'}")
    ts = [t for t in st.trials if t.datetime_start and t.datetime_complete]
    wall = (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)).total_seconds()
    return wall, len(st.trials), sum("diverged" in t.user_attrs for t in st.trials)


def main() -> int:
    if sys.argv[1:] == ["--table-only"]:
        return write_table()
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    text = CONFIG.read_text()
    names = NAMES
    OUT.mkdir(parents=True, exist_ok=True)
    cmds = []
    for s in names:
        args = ["tune", str(CONFIG.relative_to(ROOT)), "--solver", s, "--budget-trials", str(trials),
                "--nfe-cap", str(NFE_CAP), "--seed", "0", "--out", f"reports/tuning/{s}"]
        cmds.append("invbench " + " ".join(args))
        if cli.main(args) != 0:
            return 1
    run_cfg = OUT / "study-run.toml"
    extra = "".join(f'\n[[solvers]]\nname = "{s}"\nlabel = "{s}-tuned"\npreset = "tuned:{s}/preset.toml"\n'
                    for s in names)
    run_cfg.write_text(text + extra)
    args = ["run", str(run_cfg.relative_to(ROOT)), "--out", str(RUNS.relative_to(ROOT)), "--no-progress",
            "--allow-nonempty-out"]
    cmds.append("invbench " + " ".join(args))
    t0 = time.perf_counter()
    if cli.main(args) != 0:
        return 1
    run_wall = time.perf_counter() - t0
    (OUT / "commands.txt").write_text("\n".join(cmds) + f"\n# run wall {run_wall:.0f} s\n")
    return write_table()


def write_table() -> int:
    names = NAMES
    walls = {s: study_wall(s) for s in names}
    con = sqlite3.connect(RUNS / "results.sqlite")
    rows = con.execute("SELECT solver, preset, preset_provenance, image_id, psnr, nfe FROM results WHERE "
                       "status='ok'").fetchall()
    con.close()
    by = {}
    for solver, preset, prov, iid, psnr, nfe in rows:
        by.setdefault(solver, {})[iid] = (psnr, preset, prov, nfe)
    lines = [("| solver | paper/default preset | its provenance | PSNR [dB] | tuned PSNR [dB] | tuned − paper [dB] "
              "(95% paired t CI) | NFE/solve | trials (diverged) | tune wall [s] |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in names:
        a, b = by.get(s, {}), by.get(f"{s}-tuned", {})
        ids = sorted(set(a) & set(b))
        pa = np.array([a[i][0] for i in ids])
        pb = np.array([b[i][0] for i in ids])
        d = pb - pa
        lo, hi = (stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d)) if len(d) > 1
                  else (np.nan, np.nan))
        first = a[ids[0]]
        lines.append(f"| {s} | {first[1]} | {first[2]} | {pa.mean():.2f} | {pb.mean():.2f} | {d.mean():+.2f} "
                     f"[{lo:+.2f}, {hi:+.2f}] | {b[ids[0]][3]} | {walls[s][1]} ({walls[s][2]}) | {walls[s][0]:.0f} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
