"""Run the exact twin of the demo (``invbench.bench.studies.twin32``) and write reports/twin32/.

Usage (from the repository root)::

    python scripts/twin32.py run --prior gmm-crops32      # rows_gmm-crops32.csv, samples_gmm-crops32.csv
    python scripts/twin32.py run --prior small-cpu        # rows_small-cpu.csv
    python scripts/twin32.py time                         # denoiser_timing.csv
    python scripts/twin32.py report                       # README tables from the CSVs

``run`` records its wall time in ``wall_<prior>.txt``; ``--images``, ``--samples``, ``--tasks``
and ``--solvers`` shrink the study (the committed report uses the defaults).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from invbench.bench.studies import twin32, twin32_report

OUT = Path(__file__).resolve().parents[1] / "reports" / "twin32"


def write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--prior", choices=twin32.PRIORS, required=True)
    r.add_argument("--images", type=int, default=16)
    r.add_argument("--samples", type=int, default=8)
    r.add_argument("--tasks", nargs="*")
    r.add_argument("--solvers", nargs="*")
    r.add_argument("--out", type=Path, default=OUT)
    r.add_argument("--tag", default="", help="suffix of the output files (one file per partial run)")
    t = sub.add_parser("time")
    t.add_argument("--out", type=Path, default=OUT)
    rep = sub.add_parser("report")
    rep.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "run":
        cfg = twin32.TwinConfig(n_images=args.images, n_samples=args.samples,
                                tasks=tuple(args.tasks) if args.tasks else None,
                                solvers=tuple(args.solvers) if args.solvers else None)
        t0 = time.perf_counter()
        rows, srows = twin32.run_prior(args.prior, cfg, progress=lambda s: print(s, flush=True))
        wall = time.perf_counter() - t0
        write_csv(args.out / f"rows_{args.prior}{args.tag}.csv", rows)
        if srows:
            write_csv(args.out / f"samples_{args.prior}{args.tag}.csv", srows)
        (args.out / f"wall_{args.prior}{args.tag}.txt").write_text(
            f"{wall:.0f} s wall, torch threads {torch.get_num_threads()}, images {args.images}, samples "
            f"{args.samples}\n")
        print(f"{args.prior}: {wall:.0f} s")
    elif args.cmd == "time":
        write_csv(args.out / "denoiser_timing.csv", twin32.time_denoisers())
    else:
        (args.out / "README.md").write_text(twin32_report.render(args.out))
        print(f"wrote {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
