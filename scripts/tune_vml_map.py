"""Tune VML-MAP's hyper-parameters (ours; the paper's are unknown) on a GMM validation split.

Validation problems (disjoint from every test split by construction of the seeds):
  priors  gmm-synthetic-64 and gmm-digits (8x8, exact posteriors);
  tasks   inpaint_random, sr4_avgpool, deblur_uniform at 1x8x8, sigma_y = 0.02 (model units;
          noise_sigma 0.01 pixel units);
  images  the validation dataset ``{prior}-validation``: x0 ~ prior, drawn with
          torch.Generator().manual_seed(s) for s in 900_000 .. 900_000 + n - 1 (the declared
          validation range, never used by tests or benchmark configs), image id
          ``prior-sample-{s}``;
  seeds   every operator, noise and solver draw comes from invbench.bench.problem.build_problem
          with data_part = solver_part = "tune_vml_map" and operator_id "shared": one operator
          draw per (prior, task), so the n images of a (prior, task) are one solver call and one
          exact posterior; noise and solver seeds per image.
Criterion: relative distance ‖x̂ − x_MAP‖/‖x_MAP‖ to the exact global MAP
(prior.posterior().map()), summarised by the median over problems; a config is eligible if
NFE = N(K+1) <= --max-nfe.
Selection: the eligible SVD-preconditioned config with the lowest median distance (ties: lower
NFE); the same separately for the scalar ("plain") variant.

    OMP_NUM_THREADS=1 python scripts/tune_vml_map.py [--n 8] [--max-nfe 1100]
        [--out runs/tune_vml_map.csv]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time

import torch
from invbench.bench.config.spec import TaskSpec
from invbench.bench.problem import Problem, batched, build_problem, solve_and_score
from invbench.operators.conventions import model_sigma_to_pixel, model_to_pixel

from invbench import priors, solvers

VALIDATION_SEED_BASE = 900_000
PRIORS = ("gmm-synthetic-64", "gmm-digits")
TASKS = ("inpaint_random", "sr4_avgpool", "deblur_uniform")
SIGMA_Y = 0.02
PART = "tune_vml_map"


def task_spec(task: str) -> TaskSpec:
    """The validation task ``task`` at ``SIGMA_Y`` (model units)."""
    return TaskSpec(task, task, model_sigma_to_pixel(SIGMA_Y), {})


def prior_problems(pname: str, prior, task: str, n: int) -> list[Problem]:
    """The ``n`` validation problems of (``pname``, ``task``): one shared operator draw."""
    out = []
    for s in range(VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + n):
        x0 = prior.sample(1, generator=torch.Generator().manual_seed(s)).to(torch.float64)
        out.append(build_problem(task_spec(task), f"{pname}-validation", f"prior-sample-{s}",
                                 model_to_pixel(x0), PART, PART, operator_id="shared",
                                 device="cpu", dtype=torch.float64))
    return out


def problems(n: int):
    """Yield (prior_name, task, prior, problems, x_map) per (prior, task): ``n`` validation
    problems that one solver call takes, and their exact MAPs."""
    for pname in PRIORS:
        prior = priors.build(pname)
        for task in TASKS:
            probs = prior_problems(pname, prior, task, n)
            if len(list(batched(probs))) != 1:
                raise RuntimeError(f"{pname}/{task}: the problems do not share one operator")
            p0 = probs[0]
            y = torch.cat([p.y for p in probs])
            x_map = prior.posterior(p0.operator, y, p0.sigma_y).map()
            yield pname, task, prior, probs, x_map.reshape(y.shape[0], *p0.x_model.shape[1:])


def evaluate(cfg: dict, probs) -> tuple[float, float, float]:
    s = solvers.build("vml_map", preset="default", **cfg)
    dists = []
    for _, _, prior, batch, x_map in probs:
        try:
            x = solve_and_score(s, batch, prior).x_hat
            d = ((x - x_map).flatten(1).norm(dim=1) / x_map.flatten(1).norm(dim=1)).tolist()
        except solvers.SolverDiverged:
            d = [float("inf")] * len(batch)
        dists += d
    t = torch.tensor(dists)
    return t.median().item(), t.mean().item(), (t < 1e-2).double().mean().item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="validation images per (prior, task)")
    ap.add_argument("--max-nfe", type=int, default=1100)
    ap.add_argument("--out", default=None, help="CSV of every evaluated config")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    probs = list(problems(a.n))
    grid = []
    for N, K, init, tr in itertools.product((20, 50, 100), (5, 10, 20), ("noise", "pinv"),
                                            ("ddim", "map_consistent")):
        grid.append({"n_levels": N, "inner_steps": K, "step_size": 1.0, "init": init,
                     "transition": tr, "preconditioner": "svd"})
    for N, K, g, init in itertools.product((50,), (10, 20), (1.0, 1.9), ("noise", "pinv")):
        grid.append({"n_levels": N, "inner_steps": K, "step_size": g, "init": init,
                     "transition": "ddim", "preconditioner": "scalar"})
    rows = []
    t0 = time.time()
    for cfg in grid:
        med, mean, frac = evaluate(cfg, probs)
        nfe = cfg["n_levels"] * (cfg["inner_steps"] + 1)
        rows.append({**cfg, "nfe": nfe, "median_rel_dist": med, "mean_rel_dist": mean,
                     "frac_below_1e-2": frac})
        print(f"{cfg} nfe={nfe} median={med:.2e} mean={mean:.2e} frac<1e-2={frac:.2f} "
              f"[{time.time() - t0:.0f}s]", flush=True)
    # stage 2: step size around the best SVD config
    best = _select(rows, "svd", a.max_nfe)
    for g in (0.5, 1.5, 1.9):
        cfg = {k: best[k] for k in ("n_levels", "inner_steps", "init", "transition",
                                    "preconditioner")} | {"step_size": g}
        med, mean, frac = evaluate(cfg, probs)
        rows.append({**cfg, "nfe": best["nfe"], "median_rel_dist": med, "mean_rel_dist": mean,
                     "frac_below_1e-2": frac})
        print(f"{cfg} median={med:.2e} mean={mean:.2e} frac<1e-2={frac:.2f}", flush=True)
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    for pre in ("svd", "scalar"):
        b = _select(rows, pre, a.max_nfe)
        print(f"selected ({pre}): {b}")
    return 0


def _select(rows, pre, max_nfe):
    ok = [r for r in rows if r["preconditioner"] == pre and r["nfe"] <= max_nfe]
    return min(ok, key=lambda r: (r["median_rel_dist"], r["nfe"]))


if __name__ == "__main__":
    sys.exit(main())
