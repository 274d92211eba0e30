"""Tune VML-MAP (ours; the paper's values are unknown) on the small CPU prior's validation crops.

Validation problems (disjoint from every test split):
  prior   priors small-cpu (VP adapter over the 32x32 UNet), weights from ``--weights``
          (default priors/data/small_cpu.pt; the file's sha256 is written into every CSV row);
  images  ``invbench.bench.bundled.heldout_crops(n_crops, 32, seed=CROP_SEED, split="validation")``:
          crops of grace_hopper only (test = chelsea/coffee is never touched), pixel [0, 1];
  tasks   inpaint_random (ratio 0.5), sr4_avgpool, deblur_uniform at 3x32x32;
  noise   noise_sigma = 0.05 pixel units (sigma_y = 0.1 model units); stage "noiseless" uses
          1e-3 pixel units on ``--single-task``;
  seeds   each crop i is solved with ``n_seeds`` seeds s: every operator, noise and solver draw
          comes from invbench.bench.problem.build_problem (dataset "grace_hopper-validation",
          image ``crop{i:04d}``, data_part = solver_part = ``tune_vml_map_small/{s}``,
          operator_id "shared": one operator draw per (task, s); problems with equal operators
          are one solver call, invbench.bench.problem.batched); noise and solver seeds per
          image, so batching does not change results; float32, as the small prior runs.
          Every CSV row names this scheme (``seeding``); rows measured under another scheme
          are never reused.
Metric: PSNR in pixel space (invbench.bench.problem.solve_and_score: clipped to [0, 1]), mean over
images.

Budget-aware plan (the whole brief does not fit one shared CPU core: one VJP through the UNet
costs ~40-80 ms per 32x32 image there, so VML-MAP's GMM default N=100, K=10 costs ~45-65 s per
image). Stages, in order; all on the three tasks unless stated:
  refs        DDRM-20, PiGDM-100, DPS-250 (DPS.preset_for_task) -- reference points, not tuned
  transition  (N, K) = (20, 2), gamma 1, init noise, sigma_max 80: "ddim" vs "map_consistent"
  gamma       (20, 2): gamma in {0.5, 1, 1.9}; at the chosen gamma the transition question again
  budget      chosen gamma/transition at (N, K) in (10,1) (10,2) (20,1) (20,2) (20,5) (50,2)
              (``--full-grid``: N in {10,20,50,100} x K in {1,2,5,10}); choice among NFE <= 300
  knobs       (20, 2) with the chosen gamma/transition: init pinv, sigma_max 157 (one at a time);
              then the combined choice at the chosen budget
  presets     the shipped presets ``learned`` and ``fast`` (solvers/vml_map.py), measured beside
              the selection (a lookup where a stage above measured them); they choose nothing
  noiseless   ``--single-task`` at noise 1e-3 px: both transitions at gamma 1 and the chosen
              gamma, DDRM, PiGDM
  expensive   ``--single-task`` (all tasks with ``--full-grid``): DPS-1000 and the chosen setting
              at (100, 10), the GMM default's budget
Every choice takes the best mean PSNR over the three tasks and keeps the incumbent unless the
challenger wins by more than 0.05 dB.
``--max-minutes`` stops before starting a configuration that would begin after the limit; rows
already in ``--out`` for the same weights, image count and seeding are skipped (``--resume`` is
the default), so a rerun continues where the last one stopped. Every configuration writes one CSV
row per task with the per-image PSNRs (``;``-joined, image order = seed-major), so comparisons can
be paired.

    OMP_NUM_THREADS=1 python scripts/tune_vml_map_small.py [--weights priors/data/small_cpu.pt]
        [--crops 4] [--seeds 2] [--max-minutes 30]
        [--out reports/validation/vml_map_small_cpu_tuning.csv]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import sys
import time
from pathlib import Path

import torch
from invbench.bench.bundled import heldout_crops
from invbench.bench.config.spec import TaskSpec
from invbench.bench.problem import Problem, batched, build_problem, solve_and_score
from invbench.priors.small_cpu import DEFAULT_WEIGHTS, load_small_cpu
from invbench.solvers.dps import DPS

from invbench import priors, solvers

CROP_SEED = 0
DATASET = "grace_hopper-validation"
SEEDING = "build_problem"  # the CSV's ``seeding``: rows under another scheme are never reused
TASKS = ("inpaint_random", "sr4_avgpool", "deblur_uniform")
TASK_KW = {"inpaint_random": {"ratio": 0.5}}
NOISE_PX = 0.05
NOISELESS_PX = 1e-3
FIELDS = ("stage", "solver", "label", "task", "noise_px", "sigma_y", "n_levels", "inner_steps",
          "step_size", "transition", "init", "sigma_max", "nfe", "vjp", "n_images", "psnr_mean",
          "psnr_std", "sec_per_image", "psnr_per_image", "weights_sha256", "seeding")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def seed_part(s: int) -> str:
    """data_part = solver_part of seed ``s``."""
    return f"tune_vml_map_small/{s}"


class Problems:
    """Validation problems per (task, noise), seed-major: crop ``i`` under seed ``s``."""

    def __init__(self, n_crops: int, n_seeds: int):
        # (n, 3, 32, 32) pixel units, float32
        self.x_px = heldout_crops(n_crops, 32, seed=CROP_SEED, split="validation")
        self.n_crops, self.n_seeds = n_crops, n_seeds
        self._cache: dict = {}

    def ids(self) -> list[tuple[int, int]]:
        return [(s, i) for s in range(self.n_seeds) for i in range(self.n_crops)]

    def get(self, task: str, noise_px: float) -> list[Problem]:
        key = (task, noise_px)
        if key not in self._cache:
            spec = TaskSpec(task, task, noise_px, dict(TASK_KW.get(task, {})))
            self._cache[key] = [
                build_problem(spec, DATASET, f"crop{i:04d}", self.x_px[i], seed_part(s),
                              seed_part(s), operator_id="shared", device="cpu",
                              dtype=torch.float32)
                for s, i in self.ids()]
        return self._cache[key]


def vml(N: int, K: int, transition: str = "ddim", gamma: float = 1.0, init: str = "noise",
        sigma_max: float = 80.0) -> dict:
    return {"solver": "vml_map", "preset": "default", "n_levels": N, "inner_steps": K,
            "step_size": gamma, "transition": transition, "init": init, "sigma_max": sigma_max}


def label(cfg: dict) -> str:
    if cfg["solver"] != "vml_map":
        extra = ",".join(f"{k}={v}" for k, v in cfg.items() if k not in ("solver", "preset"))
        return f"{cfg['solver']}[{cfg.get('preset', 'default')}]({extra})"
    return (f"vml N={cfg['n_levels']} K={cfg['inner_steps']} g={cfg['step_size']} "
            f"{cfg['transition']} {cfg['init']} smax={cfg['sigma_max']:g}")


def run_one(cfg: dict, task: str, noise_px: float, probs: Problems, prior) -> dict:
    problems = probs.get(task, noise_px)
    kw = {k: v for k, v in cfg.items() if k not in ("solver", "preset")}
    preset = cfg.get("preset", "default")
    if cfg["solver"] == "dps" and preset == "for_task":
        preset = DPS.preset_for_task(task)
    s = solvers.build(cfg["solver"], preset=preset, **kw)
    counts, p = [], []
    t0 = time.time()
    for batch in batched(problems):  # one solver call per shared operator
        cp = priors.CountingPrior(prior)
        try:
            p += solve_and_score(s, batch, cp).psnr
        except solvers.SolverDiverged:
            p += [float("nan")] * len(batch)
        counts.append((cp.nfe, cp.vjp))
    dt = time.time() - t0
    p = torch.tensor(p, dtype=torch.float64)
    B = len(problems)
    nfe, vjp = max(counts)  # per image: every call runs the same schedule
    return {"solver": cfg["solver"],
            "label": label(cfg) if preset == cfg.get("preset", "default")
            else f"{label(cfg)}->{preset}",
            "task": task, "noise_px": noise_px, "sigma_y": problems[0].sigma_y,
            "n_levels": cfg.get("n_levels", ""), "inner_steps": cfg.get("inner_steps", ""),
            "step_size": cfg.get("step_size", ""), "transition": cfg.get("transition", ""),
            "init": cfg.get("init", ""), "sigma_max": cfg.get("sigma_max", ""),
            "nfe": nfe, "vjp": vjp, "n_images": B,
            "psnr_mean": float(p.mean()), "psnr_std": float(p.std()) if B > 1 else 0.0,
            "sec_per_image": dt / B, "psnr_per_image": ";".join(f"{v:.3f}" for v in p.tolist())}


class Runner:
    def __init__(self, args, prior, probs: Problems, wsha: str):
        self.a, self.prior, self.probs, self.wsha = args, prior, probs, wsha
        self.n = probs.n_crops * probs.n_seeds
        self.t0 = time.time()
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.out.is_file() and args.resume:
            with open(self.out, newline="") as f:
                reader = csv.DictReader(f)
                self.rows = list(reader)
                header = tuple(reader.fieldnames or ())
            if header != FIELDS:  # an older layout: keep its rows (never reused) under FIELDS
                self._write_all()
        else:
            self._write_all()

    def _write_all(self) -> None:
        with open(self.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, restval="", extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def mine(self, r: dict) -> bool:
        """Whether row ``r`` was measured with these weights, image count and seeding."""
        return (r.get("seeding") == SEEDING and r["weights_sha256"] == self.wsha
                and int(r["n_images"]) == self.n)

    def find(self, stage: str, cfg: dict, task: str, noise_px: float) -> dict | None:
        lab = label(cfg)
        for r in self.rows:
            if (self.mine(r) and r["label"].split("->")[0] == lab and r["task"] == task
                    and float(r["noise_px"]) == noise_px):
                return r
        return None

    def run(self, stage: str, cfg: dict, tasks, noise_px: float = NOISE_PX) -> list[dict]:
        got = []
        for task in tasks:
            r = self.find(stage, cfg, task, noise_px)
            if r is None:
                mins = (time.time() - self.t0) / 60
                if mins > self.a.max_minutes:
                    self.skipped.append(f"{stage}: {label(cfg)} on {task} @ {noise_px} px")
                    print(f"[{mins:5.1f} min] SKIP (time limit) {stage} {label(cfg)} {task}",
                          flush=True)
                    continue
                r = run_one(cfg, task, noise_px, self.probs, self.prior) | {
                    "stage": stage, "weights_sha256": self.wsha, "seeding": SEEDING}
                self.rows.append(r)
                with open(self.out, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=FIELDS).writerow(r)
                print(f"[{(time.time() - self.t0) / 60:5.1f} min] {stage:10s} {r['label']:55s} "
                      f"{task:15s} noise={noise_px:g} NFE={r['nfe']} "
                      f"PSNR={float(r['psnr_mean']):.2f}±{float(r['psnr_std']):.2f} "
                      f"({float(r['sec_per_image']):.2f} s/img)", flush=True)
            got.append(r)
        return got


def shipped_presets() -> dict[str, dict]:
    """The shipped VML-MAP presets for learned priors, as configurations of :func:`vml`."""
    out = {}
    for name in ("learned", "fast"):
        p = solvers.build("vml_map", preset=name).params
        out[name] = vml(p.n_levels, p.inner_steps, p.transition, p.step_size, p.init,
                        p.sigma_max)
    return out


def mean_psnr(rows: list[dict]) -> float:
    """Mean over tasks of the per-task mean PSNR (nan if a task is missing or diverged)."""
    if len(rows) < len(TASKS):
        return float("nan")
    return sum(float(r["psnr_mean"]) for r in rows) / len(rows)


def _argmax(scores: dict, default):
    """Key with the highest score; ``default`` unless some key beats ``default``'s score by
    > 0.05 dB (nan scores -- a task missing or diverged -- never win)."""
    ok = {k: v for k, v in scores.items() if not math.isnan(v)}
    if not ok:
        return default
    k = max(ok, key=ok.get)
    return k if ok[k] > ok.get(default, -math.inf) + 0.05 else default


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                    help="small-cpu EMA state dict (.pt)")
    ap.add_argument("--crops", type=int, default=4, help="validation crops (grace_hopper)")
    ap.add_argument("--seeds", type=int, default=2,
                    help="seeds per crop (operator, measurement noise, solver)")
    ap.add_argument("--single-task", default="inpaint_random",
                    help="task of the noiseless/expensive stages")
    ap.add_argument("--max-minutes", type=float, default=30.0,
                    help="start no new configuration after this")
    ap.add_argument("--stages",
                    default="refs,transition,budget,knobs,presets,noiseless,expensive")
    ap.add_argument("--out", default="reports/validation/vml_map_small_cpu_tuning.csv")
    ap.add_argument("--full-grid", action="store_true",
                    help="budget stage on N in {10,20,50,100} x K in {1,2,5,10} and the expensive "
                         "stage on all tasks (hours on one CPU core)")
    ap.add_argument("--no-resume", dest="resume", action="store_false")
    ap.add_argument("--summary", default=None, help="markdown summary (default: --out with .md)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    wpath = Path(a.weights)
    wsha = sha256(wpath)
    prior = load_small_cpu(wpath)
    print(f"weights {wpath} sha256 {wsha[:16]}; "
          f"sigma range {prior.sigma_min:.4g}..{prior.sigma_max:.4g}", flush=True)
    probs = Problems(a.crops, a.seeds)
    R = Runner(a, prior, probs, wsha)
    stages = a.stages.split(",")
    one = (a.single_task,)
    res: dict[str, list] = {}

    if "refs" in stages:
        for cfg in ({"solver": "ddrm", "preset": "default"},
                    {"solver": "pigdm", "preset": "default"},
                    {"solver": "dps", "preset": "for_task", "steps": 250}):
            res.setdefault("refs", []).append((cfg, R.run("refs", cfg, TASKS)))
    # --- transition at gamma = 1 (the GMM question) ---------------------------------------------
    best = vml(20, 2, "ddim")
    if "transition" in stages:
        sc = {tr: mean_psnr(R.run("transition", vml(20, 2, tr), TASKS))
              for tr in ("ddim", "map_consistent")}
        best["transition"] = _argmax(sc, best["transition"])
        print(f"transition: {sc} -> {best['transition']}", flush=True)
    # --- step size at (20, 2); then the transition question again at the chosen gamma -----------
    if "knobs" in stages:
        sc = {g: mean_psnr(R.run("gamma", best | {"step_size": g}, TASKS))
              for g in (1.0, 0.5, 1.9)}
        best["step_size"] = _argmax(sc, 1.0)
        if best["step_size"] != 1.0:
            sc = {tr: mean_psnr(R.run("gamma", best | {"transition": tr}, TASKS))
                  for tr in ("ddim", "map_consistent")}
            best["transition"] = _argmax(sc, best["transition"])
        print(f"gamma: chosen {label(best)}", flush=True)
    # --- budget curve at the chosen gamma / transition ------------------------------------------
    if "budget" in stages:
        grid = ([(N, K) for N in (10, 20, 50, 100) for K in (1, 2, 5, 10)] if a.full_grid
                else [(10, 1), (10, 2), (20, 1), (20, 2), (20, 5), (50, 2)])
        sc = {}
        for N, K in grid:
            rows = R.run("budget", best | {"n_levels": N, "inner_steps": K}, TASKS)
            if N * (K + 1) <= 300:
                sc[(N, K)] = mean_psnr(rows)
        N, K = _argmax(sc, (best["n_levels"], best["inner_steps"]))
        best |= {"n_levels": N, "inner_steps": K}
        print(f"budget: chosen {label(best)}", flush=True)
    # --- init and sigma_max, one at a time at (20, 2) with the chosen gamma / transition --------
    if "knobs" in stages:
        kb = best | {"n_levels": 20, "inner_steps": 2}
        for key, alt in (("init", "pinv"), ("sigma_max", 157.0)):
            sc = {kb[key]: mean_psnr(R.run("knobs", kb, TASKS)),
                  alt: mean_psnr(R.run("knobs", kb | {key: alt}, TASKS))}
            best[key] = _argmax(sc, kb[key])
        R.run("knobs", best, TASKS)  # the combination (a no-op lookup if already measured)
        print(f"knobs: chosen {label(best)}", flush=True)
    if "presets" in stages:
        for name, cfg in shipped_presets().items():
            print(f"preset {name} ({label(cfg)}): "
                  f"{mean_psnr(R.run('presets', cfg, TASKS)):.2f} dB", flush=True)
    if "noiseless" in stages:
        g = best["step_size"]
        cfgs = [vml(20, 2, "ddim"), vml(20, 2, "map_consistent")]
        if g != 1.0:
            cfgs += [vml(20, 2, "ddim", g), vml(20, 2, "map_consistent", g)]
        for cfg in cfgs + [{"solver": "ddrm", "preset": "default"},
                           {"solver": "pigdm", "preset": "default"}]:
            R.run("noiseless", cfg, one, NOISELESS_PX)
    if "expensive" in stages:
        exp_tasks = TASKS if a.full_grid else one
        R.run("expensive", {"solver": "dps", "preset": "for_task", "steps": 1000}, exp_tasks)
        R.run("expensive", best | {"n_levels": 100, "inner_steps": 10}, exp_tasks)
    summary = Path(a.summary) if a.summary else R.out.with_suffix(".md")
    write_summary(summary, R, wpath, wsha, a, best)
    print(f"wrote {R.out} and {summary}; chosen: {label(best)}", flush=True)
    if R.skipped:
        print("NOT RUN (time limit): " + " | ".join(R.skipped), flush=True)
    return 0


def write_summary(path: Path, R: Runner, wpath: Path, wsha: str, a, best: dict) -> None:
    rows = [r for r in R.rows if R.mine(r)]
    by: dict[tuple, dict] = {}
    for r in rows:
        key = (r["stage"], r["label"].split("->")[0], float(r["noise_px"]))
        by.setdefault(key, {})[r["task"]] = r
    lines = [("# VML-MAP tuning on small-cpu validation crops "
              "(generated by scripts/tune_vml_map_small.py)"), "",
             (f"weights `{wpath}` (sha256 `{wsha}`); {a.crops} grace_hopper crops x {a.seeds} "
              f"seeds per task; operator, noise and solver seeds from build_problem "
              f"(seeding `{SEEDING}`); "
              f"PSNR (dB, pixel space) mean over images; `mean` = mean over the three tasks. "
              f"`dps[for_task]` = DPS.preset_for_task (paper-inpaint / paper-sr / paper-deblur). "
              "NFE / VJP per image as counted by priors.CountingPrior; s/img = wall seconds per "
              "image (1 thread, shared CPU)."), ""]
    hdr = "| stage | config | noise px | NFE | VJP | " + " | ".join(TASKS) + " | mean | s/img |"
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for (stage, lab, npx), d in by.items():
        any_r = next(iter(d.values()))
        cells = [f"{float(d[t]['psnr_mean']):.2f}" if t in d else "" for t in TASKS]
        m = (f"{sum(float(r['psnr_mean']) for r in d.values()) / len(d):.2f}"
             if len(d) == len(TASKS) else "")
        s = sum(float(r["sec_per_image"]) for r in d.values()) / len(d)
        lines.append(f"| {stage} | {lab} | {npx:g} | {any_r['nfe']} | {any_r['vjp']} | "
                     + " | ".join(cells) + f" | {m} | {s:.1f} |")
    lines += ["", f"Chosen (rules in the script's docstring): `{label(best)}`."]
    for name, cfg in shipped_presets().items():
        got = [r for t in TASKS if (r := R.find("presets", cfg, t, NOISE_PX)) is not None]
        score = f"{mean_psnr(got):.2f} dB mean" if len(got) == len(TASKS) else "not measured"
        lines.append(f"- shipped preset `{name}` = `{label(cfg)}`: {score}")
    # smallest VML-MAP budget whose PSNR reaches DPS-1000's, per task where DPS-1000 was run
    for t in TASKS:
        dps = [r for r in rows if r["task"] == t and r["solver"] == "dps"
               and int(r["nfe"]) == 1000 and float(r["noise_px"]) == NOISE_PX]
        if not dps:
            continue
        target = float(dps[0]["psnr_mean"])
        ok = sorted((int(r["nfe"]), float(r["sec_per_image"]), r["label"], float(r["psnr_mean"]))
                    for r in rows
                    if r["task"] == t and r["solver"] == "vml_map"
                    and float(r["noise_px"]) == NOISE_PX and float(r["psnr_mean"]) >= target)
        reach = (f"VML-MAP reaching it: `{ok[0][2]}` NFE {ok[0][0]}, {ok[0][3]:.2f} dB, "
                 f"{ok[0][1]:.1f} s/img" if ok else "VML-MAP reaching it: none measured")
        lines.append(f"- {t}: DPS-1000 {target:.2f} dB "
                     f"({float(dps[0]['sec_per_image']):.1f} s/img); smallest " + reach)
    if R.skipped:
        lines += ["", "Not run (time limit): " + "; ".join(R.skipped)]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
