"""Fit ``gmm-crops32``: a low-rank-plus-isotropic Gaussian mixture on 32×32 RGB crops (d = 3072).

Data (no download): 8 000 crops of the bundled TRAIN images (``invbench.bench.bundled.train_crops(
8000, 32, seed=0)``, the split the small CPU prior was trained on), model space ``2·pixel - 1``.
Model selection on 1 000 crops of the held-out *validation* image
(``heldout_crops(1000, 32, seed=1, split="validation")``); the *test* images (chelsea, coffee)
are never seen. Every (K, r) of the grid is fitted by EM (``invbench.priors.gmm_lowrank_fit``),
the validation log-likelihood of the stored parameters (basis rounded to float16, re-orthonormalised on load)
is recorded, and the best is written to ``priors/data/gmm_crops32.npz``.

Usage (from the repository root)::

    python scripts/fit_gmm_crops32.py                      # grid, write the best
    python scripts/fit_gmm_crops32.py --grid 8x64          # one fit

Grid: (K, r) in ``DEFAULT_GRID``; EM stops after ``--iters`` (6)
iterations or when the training log-likelihood gains less than ``--tol`` (0.5) nats per image.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from invbench.bench import bundled
from invbench.priors.gmm_lowrank_fit import fit_lowrank_gmm, mean_log_likelihood
from invbench.priors.gmm_lowrank_library import CROPS32_FILE, load_lowrank_npz, save_lowrank_npz

N_TRAIN, N_VAL, TRAIN_SEED, VAL_SEED = 8_000, 1_000, 0, 1
TAU2_FLOOR = 1e-4
DEFAULT_GRID = ("4x32", "8x32", "4x64")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID), help="KxR entries")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--tol", type=float, default=0.5, help="stop when train log-lik/image improves less (nats)")
    ap.add_argument("--out", type=Path, default=CROPS32_FILE)
    args = ap.parse_args()
    bundled.verify_manifest()
    Xtr = (2 * bundled.train_crops(N_TRAIN, 32, seed=TRAIN_SEED) - 1).reshape(N_TRAIN, -1).double()
    Xva = (2 * bundled.heldout_crops(N_VAL, 32, seed=VAL_SEED, split="validation") - 1).reshape(N_VAL, -1).double()
    results, best = [], None
    for entry in args.grid:
        K, r = (int(v) for v in entry.lower().split("x"))
        t0 = time.perf_counter()
        p = fit_lowrank_gmm(Xtr, K, r, tau2_floor=TAU2_FLOOR, n_iter=args.iters, tol=args.tol, seed=0,
                            log=lambda s, K=K, r=r: print(f"{K}x{r}{s}", flush=True))
        secs = time.perf_counter() - t0
        tmp = args.out.with_suffix(f".{K}x{r}.tmp.npz")
        save_lowrank_npz(tmp, p, (3, 32, 32), {})
        q = load_lowrank_npz(tmp)
        stored = {"weights": q.weights, "means": q.means, "basis": q.basis, "eigvals": q.eigvals, "tau2": q.tau2}
        row = {"K": K, "r": r, "iterations": p["iterations"], "fit_seconds": round(secs, 1),
               "train_loglik": round(mean_log_likelihood(Xtr, stored), 2),
               "val_loglik": round(mean_log_likelihood(Xva, stored), 2),
               "tau2_min": float(p["tau2"].min()), "tau2_max": float(p["tau2"].max())}
        print(json.dumps(row), flush=True)
        results.append(row)
        if best is None or row["val_loglik"] > best[0]["val_loglik"]:
            if best is not None:
                best[1].unlink()
            best = (row, tmp, p)
        else:
            tmp.unlink()
    row, tmp, p = best
    tmp.unlink()
    meta = {"name": "gmm-crops32", "train": f"bundled.train_crops({N_TRAIN}, 32, seed={TRAIN_SEED})",
            "validation": f"bundled.heldout_crops({N_VAL}, 32, seed={VAL_SEED}, split='validation')",
            "tau2_floor": TAU2_FLOOR, "chosen": row, "grid": results,
            "basis_storage": "float16, re-orthonormalised (QR, float64) on load",
            "command": "python scripts/fit_gmm_crops32.py " + " ".join(f"--grid {' '.join(args.grid)}".split())}
    save_lowrank_npz(args.out, p, (3, 32, 32), meta)
    print(f"wrote {args.out} (K={row['K']}, r={row['r']}, validation log-lik {row['val_loglik']})")


if __name__ == "__main__":
    main()
