"""Prepared, not yet run to completion: regenerates reports/tuning/ by tuning every solver of
configs/tuning-study.toml with the same budget on the validation split, running paper/default and
tuned presets on the test split, and writing the paired table. Usage: python scripts/tuning_study.py [TRIALS]."""

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


def main() -> int:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    text = CONFIG.read_text()
    names = ["dps", "ddrm", "pigdm", "diffpir", "reddiff", "vml_map"]
    OUT.mkdir(parents=True, exist_ok=True)
    cmds, walls = [], {}
    for s in names:
        t0 = time.perf_counter()
        args = ["tune", str(CONFIG.relative_to(ROOT)), "--solver", s, "--budget-trials", str(trials),
                "--nfe-cap", str(NFE_CAP), "--seed", "0", "--out", f"reports/tuning/{s}"]
        cmds.append("invbench " + " ".join(args))
        if cli.main(args) != 0:
            return 1
        walls[s] = time.perf_counter() - t0
    run_cfg = OUT / "study-run.toml"
    extra = "".join(f'\n[[solvers]]\nname = "{s}"\nlabel = "{s}-tuned"\npreset = "tuned:{s}/preset.toml"\n' for s in names)
    run_cfg.write_text(text + extra)
    args = ["run", str(run_cfg.relative_to(ROOT)), "--out", str(RUNS.relative_to(ROOT)), "--no-progress", "--allow-nonempty-out"]
    cmds.append("invbench " + " ".join(args))
    t0 = time.perf_counter()
    if cli.main(args) != 0:
        return 1
    run_wall = time.perf_counter() - t0
    con = sqlite3.connect(RUNS / "results.sqlite")
    rows = con.execute("SELECT solver, preset, preset_provenance, image_id, psnr, nfe FROM results WHERE status='ok'").fetchall()
    con.close()
    by = {}
    for solver, preset, prov, iid, psnr, nfe in rows:
        by.setdefault(solver, {})[iid] = (psnr, preset, prov, nfe)
    lines = ["| solver | paper/default preset | its provenance | PSNR [dB] | tuned PSNR [dB] | tuned − paper [dB] (95% paired t CI) | NFE/solve | tune wall [s] |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for s in names:
        a, b = by.get(s, {}), by.get(f"{s}-tuned", {})
        ids = sorted(set(a) & set(b))
        pa = np.array([a[i][0] for i in ids])
        pb = np.array([b[i][0] for i in ids])
        d = pb - pa
        lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d)) if len(d) > 1 else (np.nan, np.nan)
        first = a[ids[0]]
        lines.append(f"| {s} | {first[1]} | {first[2]} | {pa.mean():.2f} | {pb.mean():.2f} | {d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}] "
                     f"| {b[ids[0]][3]} | {walls[s]:.0f} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    (OUT / "commands.txt").write_text("\n".join(cmds) + f"\n# run wall {run_wall:.0f} s\n")
    print("\n".join(lines))
    print(f"run wall {run_wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
