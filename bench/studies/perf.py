"""``invbench perf``: what each solver really costs (docs/design.md §10; report in reports/perf/README.md).

One process, contenders interleaved (A B A B …), one untimed warm-up round, median and min–max
over ``--reps`` (≥ 5 unless ``--quick``) repetitions, ratios pair by pair (round i with round i).
Cases (each a key of the JSON written by ``--json``):

* ``floor`` — for every solver: seconds per image ÷ the network-evaluation floor
  ``(NFE − VJP)·t_forward + VJP·t_forward+backward`` (:func:`invbench.bench.studies.perf_timing.floor_seconds`),
  ``t_*`` measured on the same denoiser, batch and device in the same round as the solver run;
  NFE/VJP counted by :class:`priors.CountingPrior`. Reduced step counts (per-step cost is what is
  measured; stated in the output).
* ``vs_deepinv`` — DPS, DDRM and DiffPIR ours vs ``deepinv.sampling.DPS`` / ``DDRM`` / ``DiffPIR``
  on the same denoiser (ours wrapped as a deepinv ``Denoiser``), operator (random inpainting 50 %,
  32×32), steps and dtype (float32), ours configured to run deepinv's algorithm
  (docs/solvers-baselines.md); time at batch 1, and PSNR of both on the same test crops.
* ``throughput`` — images/s at batch 1, 4, 8, 16 for every solver (interleaved over batch sizes),
  batch-8/batch-1 speed-up pair by pair, and the peak memory of one solve per batch size.
* ``vml_vs_dps`` — VML-MAP vs DPS: seconds per image and PSNR on the demo tasks, and VML-MAP's
  PSNR as a function of its budget (levels × inner steps). Needs the trained small-cpu weights.
* ``fast_paths`` — one denoiser call per fast-path switch (:mod:`invbench.priors.fast_paths`): time and
  the max deviation of D from the default.

``main(argv) -> int`` is called by ``invbench perf`` (bench/cli.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from invbench.bench import cost
from invbench.bench.cost.netclock import ClockedPrior
from invbench.bench.studies import perf_timing as pc
from invbench.priors import CountingPrior

__all__ = ["CASES", "SETTINGS", "main", "render_markdown", "run"]

CASES = ("floor", "vs_deepinv", "throughput", "vml_vs_dps", "fast_paths")

# Reduced step counts: full run / --quick. Per-step cost is what the floor and throughput measure.
SETTINGS = {
    "full": {
        "floor": {"dps": {"preset": "paper-inpaint", "overrides": {"steps": 20}},
                  "ddrm": {"overrides": {"steps": 20}},
                  "pigdm": {"overrides": {"steps": 20}},
                  "vml_map": {"overrides": {"n_levels": 4, "inner_steps": 4}},
                  # the second-round solvers at 20 network evaluations too, with the inner work of
                  # their CPU presets (DAPS 10 Langevin steps per level, LMAPS 20 gradient steps)
                  "diffpir": {"overrides": {"steps": 20}},
                  "reddiff": {"overrides": {"steps": 20}},
                  "daps": {"preset": "cpu", "overrides": {"anneal_steps": 10}},
                  "lmaps": {"preset": "cpu"}},
        "dps_steps": 20, "dps_quality_steps": 50, "dps_weight": 20.0, "ddrm_steps": 20, "diffpir_steps": 20,
        "quality_images": {"dps": 16, "ddrm": 128, "diffpir": 16},
        "throughput_batches": (1, 4, 8, 16),
        "throughput": {"dps": {"preset": "paper-inpaint", "overrides": {"steps": 3}},
                       "ddrm": {"overrides": {"steps": 3}},
                       "pigdm": {"overrides": {"steps": 3}},
                       "vml_map": {"overrides": {"n_levels": 1, "inner_steps": 2}}},
        "vml_images": 8, "vml_dps_steps": (1000, 100),
        "vml_presets": ("fast", "learned"),
        "vml_sweep": ((5, 1), (5, 4), (10, 2), (20, 2), (20, 4)),
        "fast_batch": 8,
    },
    "quick": {
        "floor": {"dps": {"preset": "paper-inpaint", "overrides": {"steps": 2}},
                  "ddrm": {"overrides": {"steps": 2}},
                  "pigdm": {"overrides": {"steps": 2}},
                  "vml_map": {"overrides": {"n_levels": 1, "inner_steps": 1}},
                  "daps": {"overrides": {"anneal_steps": 1, "ode_steps": 1, "mcmc_steps": 1}},
                  "lmaps": {"overrides": {"steps": 1, "inner_steps": 1}}},
        "dps_steps": 2, "dps_quality_steps": 2, "dps_weight": 20.0, "ddrm_steps": 2, "diffpir_steps": 2,
        "quality_images": {"dps": 2, "ddrm": 2, "diffpir": 2},
        "throughput_batches": (1, 2),
        "throughput": {"dps": {"preset": "paper-inpaint", "overrides": {"steps": 1}},
                       "ddrm": {"overrides": {"steps": 1}},
                       "pigdm": {"overrides": {"steps": 1}},
                       "vml_map": {"overrides": {"n_levels": 1, "inner_steps": 1}},
                       "daps": {"overrides": {"anneal_steps": 1, "ode_steps": 1, "mcmc_steps": 1}},
                       "lmaps": {"overrides": {"steps": 1, "inner_steps": 1}}},
        "vml_images": 1, "vml_dps_steps": (4, 2),
        "vml_presets": ("fast",), "vml_quick_overrides": {"n_levels": 1, "inner_steps": 1},
        "vml_sweep": ((1, 1),),
        "fast_batch": 1,
        "calls": 1,
    },
}

FLOOR_TASK = ("inpaint_random", {"ratio": 0.5})
DEMO_TASKS = (  # configs/demo.toml: (name, preset, params, noise_sigma in pixel units)
    ("inpaint_random-50", "inpaint_random", {"ratio": 0.5}, 0.05),
    ("sr4_avgpool", "sr4_avgpool", {}, 0.05),
    ("deblur_uniform", "deblur_uniform", {}, 0.05),
    ("denoise", "denoise", {}, 0.1),
)


# ----------------------------------------------------------------------------- cases


def solver_specs(listed: dict, prob: pc.Problem, prior) -> dict:
    """The solvers a case times: those ``listed`` in ``SETTINGS`` with their settings, then every
    other solver of the package registry that can run on ``prob`` under ``prior`` and calls the
    network, at its ``QUICK`` settings (the per-step cost is what the floor and throughput
    measure), so that a new solver is timed without an edit here. Oracles (no network) and
    solvers registered at run time (tests, plugins) are left out."""
    from invbench.bench.run import nfe_per_image

    from invbench import solvers

    have = set(prob.A.capabilities) | set(prior.capabilities)
    specs = dict(listed)
    for name in solvers.NAMES:
        cls = solvers.get(name)
        if name in specs or not cls.requires <= have:
            continue
        if nfe_per_image(cls.from_preset("default", **cls.QUICK)) == 0:
            continue
        specs[name] = {"overrides": dict(cls.QUICK)}
    return specs


def case_floor(ctx: dict) -> list[dict]:
    prior, dev, reps, cfg = ctx["prior"], ctx["device"], ctx["reps"], ctx["cfg"]
    prob = pc.make_problem(FLOOR_TASK[0], 1, device=dev, params=FLOOR_TASK[1])
    out = []
    for name, spec in solver_specs(cfg["floor"], prob, prior).items():
        preset, ov = spec.get("preset", "default"), spec.get("overrides", {})
        nfe, vjp = pc.count_costs(name, prob, prior, preset=preset, overrides=ov)  # also a warm-up
        calls = cfg.get("calls", 3)  # denoiser calls per timed forward / forward+backward sample
        f, fb = pc.denoiser_calls(prior, 1, dev, calls)
        inrun: list[float] = []  # network seconds inside each timed solve (the harness's clock)

        def solve(n=name, pr=preset, o=ov, acc=inrun):
            tp = ClockedPrior(prior)
            pc.run_solver(n, prob, tp, preset=pr, overrides=o)
            cost.synchronize(dev)  # CUDA events are read after the device has finished
            acc.append(tp.network_seconds())

        t = pc.interleave([("solver", solve), ("fwd", f), ("fwd_bwd", fb)], reps, dev)
        inrun = inrun[-reps:]  # drop the warm-up round
        tf = [v / calls for v in t["fwd"]]
        tfb = [v / calls for v in t["fwd_bwd"]]
        floors = [pc.floor_seconds(nfe, vjp, a, b) for a, b in zip(tf, tfb, strict=True)]
        literal = [nfe * a + vjp * b for a, b in zip(tf, tfb, strict=True)]
        out.append({
            "solver": name, "preset": preset, "overrides": ov, "batch": 1, "nfe": nfe, "vjp": vjp,
            "task": f"{FLOOR_TASK[0]} {FLOOR_TASK[1]}",
            "t_solver": pc.stats(t["solver"]), "t_forward": pc.stats(tf), "t_forward_backward": pc.stats(tfb),
            "floor_s": pc.stats(floors), "ratio": pc.pair_ratios(t["solver"], floors),
            "ratio_literal_formula": pc.pair_ratios(t["solver"], literal),
            "network_seconds_in_run": pc.stats(inrun), "ratio_in_run": pc.pair_ratios(t["solver"], inrun),
        })
        _log(ctx, f"floor {name}: ratio {out[-1]['ratio']['median']:.3f} (NFE {nfe}, VJP {vjp})")
    return out


def _dps_pair(ctx: dict, prob, steps: int, weight: float, seed: int = 3):
    """(ours, deepinv) closures running DPS with deepinv's algorithm on ``prob`` (all images)."""
    import deepinv

    prior, dev = ctx["prior"], ctx["device"]
    den = pc.dinv_denoiser(prior)
    phys, y_pix = pc.dinv_inpainting(prob)
    rng = torch.Generator(device=dev).manual_seed(seed)
    dps = deepinv.sampling.DPS(den, num_steps=steps + 1, weight=weight, dtype=torch.float32, device=dev, rng=rng)
    sig = [float(dps.sde.sigma_t(t)) for t in dps.solver.timesteps]
    ov = {"sigmas": tuple(sig[:-1]), "zeta": weight / 2, "zeta_schedule": "deepinv", "clip_x0": True,
          "clip_range": (-3.0, 1.0), "variance": "fixed"}

    def ours():  # the same noise as deepinv's (common random numbers; seed must be non-zero for deepinv)
        return pc.run_solver("dps", prob, prior, overrides=ov, seed=seed, shared_generator=True)

    def theirs():
        return pc.pixel_to_model(dps(y_pix, phys, seed=seed))

    return ours, theirs, den, ov


def _ddrm_pair(ctx: dict, prob, steps: int, seed: int = 3):
    """(ours, deepinv) closures running DDRM (η = 0.85, η_b = 1) at the true noise level: ours on
    the prior's 20-step DDPM grid with ``init="exact"``; deepinv told σ_k = level/√2 and noise
    √2·noise_sigma with the 1/√2-compensating wrapper (its noise is drawn as randn/√2)."""
    import deepinv
    from invbench.solvers.ddpm import sampling_sigmas

    prior = ctx["prior"]
    levels = sampling_sigmas(prior, steps)
    den = pc.dinv_denoiser(prior, noise_factor=1 / pc.sqrt2())
    phys, y_pix = pc.dinv_inpainting(prob, noise_sigma=pc.sqrt2() * prob.noise_sigma)
    import numpy as np

    model = deepinv.sampling.DDRM(den, sigmas=np.asarray(levels) / pc.sqrt2(), eta=0.85, etab=1.0)
    ov = {"steps": steps, "init": "exact"}

    def ours():
        return pc.run_solver("ddrm", prob, prior, overrides=ov, seed=seed)

    def theirs():
        with torch.no_grad():
            return pc.pixel_to_model(model(y_pix, phys, seed=seed + 1))

    return ours, theirs, den, ov


def _diffpir_pair(ctx: dict, prob, steps: int, seed: int = 3):
    """(ours, deepinv) closures running DiffPIR (ζ = 0.3, deepinv's λ = 3.5, which is our λ = 7:
    deepinv weighs the prior term of its proximal step by 2ρ, docs/solvers-baselines.md) on
    deepinv's own level schedule for ``steps`` iterations, each from its own start (different
    noise; the loops agree to float32 round-off under shared noise, tests/solvers/test_diffpir.py)."""
    import deepinv

    prior = ctx["prior"]
    den = pc.dinv_denoiser(prior)
    phys, y_pix = pc.dinv_inpainting(prob)
    model = deepinv.sampling.DiffPIR(den, deepinv.optim.data_fidelity.L2(), sigma=prob.noise_sigma,
                                     max_iter=steps, zeta=0.3, lambda_=3.5, device=prob.y.device)
    ov = {"sigmas": tuple(float(s) for s in model.sigmas[model.seq]), "lambda_": 7.0, "zeta": 0.3}

    def ours():
        return pc.run_solver("diffpir", prob, prior, overrides=ov, seed=seed)

    def theirs():
        with torch.no_grad():
            return pc.pixel_to_model(model(y_pix, phys, seed=seed + 1))

    return ours, theirs, den, ov


def case_vs_deepinv(ctx: dict) -> list[dict]:
    try:
        import deepinv  # noqa: F401
    except ImportError as e:
        return [{"status": f"unavailable: deepinv not installed ({e})"}]
    dev, reps, cfg, info = ctx["device"], ctx["reps"], ctx["cfg"], ctx["prior_info"]
    out = []
    pairs = {"dps": lambda p, s: _dps_pair(ctx, p, s, cfg["dps_weight"]), "ddrm": lambda p, s: _ddrm_pair(ctx, p, s),
             "diffpir": lambda p, s: _diffpir_pair(ctx, p, s)}
    for name, pair in pairs.items():
        prob1 = pc.make_problem(FLOOR_TASK[0], 1, device=dev, params=FLOOR_TASK[1])
        steps = cfg[f"{name}_steps"]
        ours, theirs, den, ov = pair(prob1, steps)
        type(den).calls = 0
        theirs()
        nfe_d = type(den).calls
        nfe_o, vjp_o = pc.count_costs(name, prob1, ctx["prior"], overrides=ov)
        nreps = max(reps, ctx["pair_reps"])
        t = pc.interleave([("ours", ours), ("deepinv", theirs)], nreps, dev)
        with pc.null_network(ctx["prior"]):  # the same two solves around a network that costs ~nothing
            t0 = pc.interleave([("ours", ours), ("deepinv", theirs)], nreps, dev)
        row = {"solver": name, "task": f"{FLOOR_TASK[0]} {FLOOR_TASK[1]}, noise_sigma {prob1.noise_sigma}",
               "steps": steps, "batch": 1, "dtype": "float32", "ours_overrides": _jsonable(ov),
               "nfe_ours": nfe_o, "vjp_ours": vjp_o, "nfe_deepinv": nfe_d,
               "t_ours": pc.stats(t["ours"]), "t_deepinv": pc.stats(t["deepinv"]),
               "ratio_ours_over_deepinv": pc.pair_ratios(t["ours"], t["deepinv"]),
               "loop_ours": pc.stats(t0["ours"]), "loop_deepinv": pc.stats(t0["deepinv"])}
        if name == "dps":
            row["deepinv_weight"] = cfg["dps_weight"]
        # quality: same images and seeds, same steps
        qsteps = cfg["dps_quality_steps"] if name == "dps" else steps
        if not info.trained:
            row["quality"] = {"status": pc.WEIGHTS_NOT_TRAINED}
        else:
            probq = pc.make_problem(FLOOR_TASK[0], cfg["quality_images"][name], device=dev, params=FLOOR_TASK[1])
            oq, tq, _, _ = pair(probq, qsteps)
            xo, xd = oq(), tq()
            po, pd = pc.psnr_pixel(xo, probq.x), pc.psnr_pixel(xd, probq.x)
            d = po - pd
            n = d.numel()
            se = float(d.std() / n**0.5) if n > 1 else float("nan")
            row["quality"] = {"steps": qsteps, "n_images": n, "psnr_ours": float(po.mean()), "psnr_deepinv": float(pd.mean()),
                              "psnr_diff": float(d.mean()), "psnr_diff_se": se,
                              "common_random_numbers": name == "dps",
                              "max_abs_diff_per_image": [float(f"{v:.3g}") for v in (xo - xd).abs().flatten(1).amax(1)],
                              "psnr_ours_per_image": [round(float(v), 3) for v in po],
                              "psnr_deepinv_per_image": [round(float(v), 3) for v in pd]}
        out.append(row)
        _log(ctx, f"vs deepinv {name}: ours/deepinv {row['ratio_ours_over_deepinv']['median']:.3f}; loop only "
                  f"{1e3 * row['loop_ours']['median']:.1f} vs {1e3 * row['loop_deepinv']['median']:.1f} ms")
    return out


def case_throughput(ctx: dict) -> list[dict]:
    prior, dev, reps, cfg = ctx["prior"], ctx["device"], ctx["reps"], ctx["cfg"]
    batches = cfg["throughput_batches"]
    prob = pc.make_problem(FLOOR_TASK[0], max(batches), device=dev, params=FLOOR_TASK[1])
    out = []
    for name, spec in solver_specs(cfg["throughput"], prob, prior).items():
        preset, ov = spec.get("preset", "default"), spec.get("overrides", {})

        def runner(b, n=name, pr=preset, o=ov):
            return lambda: pc.run_solver(n, prob, prior, preset=pr, overrides=o, batch=b)

        mem = {b: pc.measure_peak(runner(b), dev) for b in batches}  # = the warm-up round
        t = pc.interleave([(f"b{b}", runner(b)) for b in batches], reps, dev, warmup=0)
        row = {"solver": name, "preset": preset, "overrides": ov, "batches": {}}
        for b in batches:
            ips = [b / s for s in t[f"b{b}"]]
            row["batches"][str(b)] = {"seconds": pc.stats(t[f"b{b}"]), "images_per_s": pc.stats(ips), "memory": mem[b]}
        if 1 in batches and 8 in batches:
            row["speedup_b8_over_b1"] = pc.pair_ratios([8 / s for s in t["b8"]], [1 / s for s in t["b1"]])
        out.append(row)
        if "speedup_b8_over_b1" in row:
            _log(ctx, f"throughput {name}: batch 8 / batch 1 = {row['speedup_b8_over_b1']['median']:.2f}x")
    return out


def case_vml_vs_dps(ctx: dict) -> dict:
    """VML-MAP (presets tuned on the validation split) against DPS at the paper's 1000 steps and
    the demo's 100, on every demo task; then VML-MAP's budget sweep (N × K) on the first task."""
    info, prior, dev, cfg = ctx["prior_info"], ctx["prior"], ctx["device"], ctx["cfg"]
    if not info.trained:
        return {"status": pc.WEIGHTS_NOT_TRAINED}
    from invbench.solvers.dps import DPS
    from invbench.solvers.vml_map import VMLMAP

    n = cfg["vml_images"]
    vml_ov = cfg.get("vml_quick_overrides", {})
    rows = []

    def timed_psnr(fn, prob):
        t0 = time.perf_counter()
        cost.synchronize(dev)
        x = fn()
        cost.synchronize(dev)
        return (time.perf_counter() - t0) / n, pc.psnr_pixel(x, prob.x)

    warm = pc.make_problem("inpaint_random", n, device=dev, params={"ratio": 0.5})
    pc.run_solver("vml_map", warm, prior, overrides={"n_levels": 1, "inner_steps": 1})  # warm-up
    for tname, preset_name, params, ns in DEMO_TASKS:
        prob = pc.make_problem(preset_name, n, device=dev, params=params, noise_sigma=ns)
        dps_preset = DPS.preset_for_task(preset_name)
        contenders = [("dps", dps_preset, {"steps": k}) for k in cfg["vml_dps_steps"]]
        contenders += [("vml_map", pr, dict(vml_ov)) for pr in cfg["vml_presets"]]
        for sname, preset, ov in contenders:  # one batched timed run each, in this order per task
            cp = CountingPrior(prior)  # counts per solve (a batched call counts once)
            s_img, ps = timed_psnr(lambda sn=sname, c=cp, pr=preset, o=ov, pb=prob: pc.run_solver(sn, pb, c, preset=pr, overrides=o), prob)
            eff = {**(VMLMAP.PRESETS[preset].params if sname == "vml_map" else {}), **ov}
            rows.append({"task": tname, "solver": sname, "preset": preset, "overrides": ov, "nfe": cp.nfe, "vjp": cp.vjp,
                         "budget": ({"n_levels": eff["n_levels"], "inner_steps": eff["inner_steps"]} if sname == "vml_map"
                                    else {"steps": ov["steps"]}),
                         "seconds_per_image": s_img, "psnr": float(ps.mean()),
                         "psnr_per_image": [round(float(v), 3) for v in ps],
                         "psnr_se": float(ps.std() / n**0.5) if n > 1 else float("nan")})
        _log(ctx, f"vml vs dps {tname}: " + ", ".join(f"{r['solver']}[{r['preset']}{r['overrides'] or ''}] {r['psnr']:.2f} dB "
                                                      f"{r['seconds_per_image']:.2f} s" for r in rows[-len(contenders):]))
    sweep = []
    tname, preset_name, params, ns = DEMO_TASKS[0]
    prob = pc.make_problem(preset_name, n, device=dev, params=params, noise_sigma=ns)
    for N, K in cfg["vml_sweep"]:
        ov = {"n_levels": N, "inner_steps": K}
        s_img, ps = timed_psnr(lambda o=ov: pc.run_solver("vml_map", prob, prior, preset="learned", overrides=o), prob)
        sweep.append({"task": tname, "n_levels": N, "inner_steps": K, "nfe": N * (K + 1), "vjp": N * K,
                      "seconds_per_image": s_img, "psnr": float(ps.mean()),
                      "psnr_se": float(ps.std() / n**0.5) if n > 1 else float("nan")})
    ref = cfg["vml_dps_steps"][0]
    return {"n_images": n, "batch": n, "rows": rows, "sweep": sweep, "reference_dps_steps": ref,
            "note": "one batched timed run per cell (not interleaved repetitions); DPS with its per-task paper preset at "
                    + " and ".join(str(k) for k in cfg["vml_dps_steps"]) + " steps (the paper's is 1000); VML-MAP presets "
                    + ", ".join(f"'{p}'" for p in cfg["vml_presets"]) + " (tuned on the validation split, "
                    "docs/solvers-vml-map.md); the sweep varies N × K of preset 'learned'"}


def case_fast_paths(ctx: dict) -> list[dict]:
    from invbench.priors.fast_paths import FastPaths, with_fast_paths

    prior, dev, reps, cfg = ctx["prior"], ctx["device"], ctx["reps"], ctx["cfg"]
    B = cfg["fast_batch"]
    variants = [FastPaths(), FastPaths(autocast="bf16"), FastPaths(channels_last=True)]
    if torch.device(dev).type == "cuda":
        variants += [FastPaths(autocast="fp16"), FastPaths(tf32=True), FastPaths(autocast="bf16", channels_last=True)]
    if ctx.get("compile"):
        variants.append(FastPaths(compile=True))
    g = torch.Generator().manual_seed(5)
    x = torch.randn((B, *prior.image_shape), generator=g).to(dev)
    s = torch.full((B,), 0.5, device=dev)
    with torch.no_grad():
        ref = prior.denoise(x, s)
    priors_ = [(fp.label(), with_fast_paths(prior, fp)) for fp in variants]
    calls = cfg.get("calls", 3)

    def fwd(p):
        def f():
            with torch.no_grad():
                for _ in range(calls):
                    p.denoise(x, s)
        return f

    t = pc.interleave([(lab, fwd(p)) for lab, p in priors_], reps, dev)
    out = []
    for lab, p in priors_:
        with torch.no_grad():
            d = p.denoise(x, s)
        out.append({"fast_paths": lab, "batch": B, "t_forward": pc.stats([v / calls for v in t[lab]]),
                    "ratio_to_default": pc.pair_ratios(t[lab], t["default"]),
                    "max_abs_diff_D": float((d - ref).abs().max()),
                    "rel_l2_diff_D": float((d - ref).norm() / ref.norm())})
    return out


# ----------------------------------------------------------------------------- driver


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float):
        return float(f"{o:.8g}")
    return o


def _log(ctx: dict, msg: str) -> None:
    if ctx.get("verbose", True):
        print(f"[perf {time.perf_counter() - ctx['t0']:6.1f}s] {msg}", file=sys.stderr, flush=True)


def run(device: str = "cpu", reps: int = 5, quick: bool = False, cases=CASES, weights: str | None = None,
        threads: int | None = None, compile: bool = False, verbose: bool = True) -> dict:
    """Run the perf cases and return the result dictionary (see the module docstring)."""
    if threads:
        torch.set_num_threads(int(threads))
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device available")
    cfg = SETTINGS["quick" if quick else "full"]
    prior, info = pc.timing_prior(device, weights)
    ctx = {"prior": prior, "prior_info": info, "device": device, "reps": int(reps), "cfg": cfg, "t0": time.perf_counter(),
           "verbose": verbose, "compile": compile,
           "pair_reps": 2 if quick else 9}  # ours vs deepinv: a small difference needs more repetitions
    try:
        import deepinv

        dinv_version = deepinv.__version__
    except ImportError:
        dinv_version = None
    res: dict = {"meta": {
        "device": device, "device_name": cost.device_name(device), "torch": torch.__version__, "deepinv": dinv_version,
        "python": platform.python_version(), "threads": torch.get_num_threads(), "reps": int(reps), "warmup_rounds": 1,
        "cpu_capability": cost.cpu_capability(),
        "quick": quick, "prior": {"name": info.name, "trained": info.trained, "weights": info.weights, "params": info.params},
        "load_avg_before": list(os.getloadavg()), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": _jsonable(cfg), "floor_definition": "(NFE - VJP) * t_forward + VJP * t_forward+backward",
    }}
    funcs = {"floor": case_floor, "vs_deepinv": case_vs_deepinv, "throughput": case_throughput,
             "vml_vs_dps": case_vml_vs_dps, "fast_paths": case_fast_paths}
    res["case_seconds"] = {}
    for c in cases:
        t = time.perf_counter()
        res[c] = _jsonable(funcs[c](ctx))
        res["case_seconds"][c] = round(time.perf_counter() - t, 1)
    res["meta"]["load_avg_after"] = list(os.getloadavg())
    res["meta"]["wall_seconds"] = round(time.perf_counter() - ctx["t0"], 1)
    return res


# ----------------------------------------------------------------------------- markdown


def _ms(st: dict) -> str:
    return f"{1e3 * st['median']:.1f} [{1e3 * st['min']:.1f}–{1e3 * st['max']:.1f}]"


def _r(st: dict, nd: int = 3) -> str:
    return f"{st['median']:.{nd}f} [{st['min']:.{nd}f}–{st['max']:.{nd}f}]"


def _mb(b) -> str:
    return "—" if b is None else f"{b / 2**20:.0f}"


def render_tables(res: dict) -> str:
    """Markdown tables of a result dictionary (the measured part of reports/perf/README.md)."""
    m = res["meta"]
    L = [(f"Device: **{m['device_name']}** (`{m['device']}`), torch {m['torch']}, deepinv {m['deepinv']}, "
         f"{m['threads']} thread(s); {m['reps']} interleaved repetitions after {m['warmup_rounds']} warm-up round; "
         f"load average {m['load_avg_before'][0]:.2f} before / {m['load_avg_after'][0]:.2f} after; "
         f"total {m['wall_seconds']:.0f} s; started {m['started']}."),
         f"Prior: {m['prior']['name']} ({m['prior']['params']:,} parameters); weights: {m['prior']['weights']}.",
         ("Times are median [min–max] over the repetitions; ratios are taken pair by pair (repetition i with "
         "repetition i) and summarised the same way."), ""]
    if "floor" in res:
        L += ["### Floor ratio (batch 1, `inpaint_random` 50 %, reduced step counts)", "",
              ("| solver | steps | NFE | VJP | t_forward ms | t_fwd+bwd ms | floor ms | solver ms/image | **floor ratio** "
              "| in-run ratio | literal-formula ratio |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["floor"]:
            L.append(f"| {_solver_label(r)} | {_steps(r['overrides'])} | {r['nfe']} | {r['vjp']} | {_ms(r['t_forward'])} | "
                     f"{_ms(r['t_forward_backward'])} | {_ms(r['floor_s'])} | {_ms(r['t_solver'])} | "
                     f"**{_r(r['ratio'])}** | {_r(r['ratio_in_run'])} | {_r(r['ratio_literal_formula'])} |")
        L += ["", ("Floor = (NFE − VJP)·t_forward + VJP·t_forward+backward (a differentiated evaluation is one "
              "forward + one backward, not counted twice). The issue's literal formula NFE·t_forward + "
              "VJP·t_forward+backward counts the forward of every VJP twice; its ratio is shown for reference "
              "only (it flatters solvers with VJPs). In-run ratio = the solve's time ÷ the time spent inside the "
              "network (forward and backward, clocked by `invbench.bench.cost.netclock.ClockedPrior`, the clock the harness uses in every run) during that same solve: "
              "what the solver adds around its network calls, insensitive to load drift between measurements."), ""]
    if "vs_deepinv" in res:
        L += ["### Ours vs deepinv (same denoiser, operator, steps, dtype float32; batch 1)", "",
              ("| solver | steps | NFE ours / deepinv | ours ms | deepinv ms | **ours / deepinv** | loop only: ours ms | "
               "loop only: deepinv ms | PSNR ours | PSNR deepinv | Δ PSNR (± SE) | max abs Δx̂ (median over images) |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["vs_deepinv"]:
            if "status" in r:
                L.append(f"| — | {r['status']} ||||||||||")
                continue
            q = r["quality"]
            if "status" in q:
                qs = f"{q['status']} | {q['status']} | — | —"
            else:
                crn = "same noise" if q.get("common_random_numbers") else "different noise"
                md = (f"{statistics.median(q['max_abs_diff_per_image']):.2g}"
                      if q.get("common_random_numbers") and q.get("max_abs_diff_per_image") else "— (different noise)")
                qs = (f"{q['psnr_ours']:.2f} | {q['psnr_deepinv']:.2f} | {q['psnr_diff']:+.2f} ± {q['psnr_diff_se']:.2f} "
                      f"({q['n_images']} images, {q['steps']} steps, {crn}) | {md} |")
            loop = (f"{_ms(r['loop_ours'])} | {_ms(r['loop_deepinv'])}" if "loop_ours" in r else "— | —")
            L.append(f"| {r['solver']} | {r['steps']} | {r['nfe_ours']} / {r['nfe_deepinv']} | {_ms(r['t_ours'])} | "
                     f"{_ms(r['t_deepinv'])} | **{_r(r['ratio_ours_over_deepinv'])}** | {loop} | {qs}")
        L += ["", ("Loop only: the same two solves timed with the network replaced by ε = 0.1·x "
                   "(`invbench.bench.studies.perf_timing.null_network`): what each implementation costs around its network calls. "
                   "Max abs Δx̂: model units, per image, ours − deepinv; with the same noise (DPS: both draw from one "
                   "generator seeded alike) it measures float32 divergence of the two trajectories, not sampling noise."), ""]
    if "throughput" in res:
        rows = res["throughput"]
        bs = list(rows[0]["batches"]) if rows else []
        L += ["### Throughput (images/s) and peak memory per solve (`inpaint_random` 50 %, reduced steps)", "",
              "| solver | steps | " + " | ".join(f"batch {b} img/s" for b in bs) + " | **batch 8 / batch 1** | "
              + " | ".join(f"peak MiB (+Δ) b{b}" for b in bs) + " |",
              "|---|---|" + "---|" * (2 * len(bs) + 1)]
        for r in rows:
            sp = _r(r["speedup_b8_over_b1"], 2) if "speedup_b8_over_b1" in r else "—"
            ips = " | ".join(_r(r["batches"][b]["images_per_s"], 1) for b in bs)
            mem = " | ".join(f"{_mb(r['batches'][b]['memory']['peak_bytes'])} (+{_mb(r['batches'][b]['memory']['increase_bytes'])})" for b in bs)
            L.append(f"| {_solver_label(r)} | {_steps(r['overrides'])} | {ips} | **{sp}** | {mem} |")
        if rows:
            L += ["", f"Memory: {rows[0]['batches'][bs[0]]['memory']['kind']}; +Δ = increase over the value before the solve.", ""]
    if "vml_vs_dps" in res:
        v = res["vml_vs_dps"]
        L += ["### VML-MAP vs DPS on the demo tasks (small-cpu prior, 32×32 test crops)", ""]
        if "status" in v:
            L += [f"Not measured: {v['status']} (rerun the command once `priors/data/small_cpu.pt` exists).", ""]
        else:
            ref = v.get("reference_dps_steps", 1000)
            L += [f"{v['n_images']} images per task, batch {v['batch']}; {v['note']}.", "",
                  (f"| task | solver | preset | budget | NFE | VJP | s/image | PSNR dB (± SE) | time ÷ DPS-{ref} | "
                   f"ΔPSNR vs DPS-{ref} (± paired SE) | ≤ 0.1× time at ≥ PSNR |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in v["rows"]:
                d = _vml_reference(v, r["task"])
                tr, dp = r["seconds_per_image"] / d["seconds_per_image"], r["psnr"] - d["psnr"]
                ok = "—" if r["solver"] == "dps" else ("yes" if tr <= 0.1 and dp >= 0 else "no")
                L.append(f"| {r['task']} | {r['solver']} | {r['preset']} | {_budget(r)} | {r['nfe']} | {r['vjp']} | "
                         f"{r['seconds_per_image']:.2f} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | {tr:.3f} | "
                         f"{'—' if r is d else f'{dp:+.2f}' + _paired_se(r, d)} | {ok} |")
            L += ["", f"VML-MAP budget sweep on {v['sweep'][0]['task'] if v['sweep'] else '—'} (preset 'learned', N × K varied):", "",
                  "| levels N | inner K | NFE | VJP | s/image | PSNR dB (± SE) |", "|---|---|---|---|---|---|"]
            for s_ in v["sweep"]:
                L.append(f"| {s_['n_levels']} | {s_['inner_steps']} | {s_['nfe']} | {s_['vjp']} | {s_['seconds_per_image']:.2f} | "
                         f"{s_['psnr']:.2f} ± {s_['psnr_se']:.2f} |")
            L += [""]
    if "fast_paths" in res:
        L += ["### Fast paths on this device (one denoiser forward)", "",
              "| switches | batch | ms / call | time ÷ default | max abs ΔD | rel. L2 ΔD |", "|---|---|---|---|---|---|"]
        for r in res["fast_paths"]:
            L.append(f"| {r['fast_paths']} | {r['batch']} | {_ms(r['t_forward'])} | {_r(r['ratio_to_default'], 2)} | "
                     f"{r['max_abs_diff_D']:.2e} | {r['rel_l2_diff_D']:.2e} |")
        L += [""]
    L.append(render_acceptance(res))
    return "\n".join(L)


def render_acceptance(res: dict) -> str:
    """The performance targets, judged from the measured numbers (medians)."""
    L = ["### Targets, judged from the medians above", ""]
    for r in res.get("floor", []):
        v = r["ratio"]["median"]
        L.append(f"- floor ratio ≤ 1.05, {r['solver']}: {v:.3f} — {'met' if v <= 1.05 else 'NOT met'} "
                 f"(in-run ratio {r['ratio_in_run']['median']:.3f})")
    for r in res.get("vs_deepinv", []):
        if "status" in r:
            continue
        v, q = r["ratio_ours_over_deepinv"]["median"], r["quality"]
        tq = "quality not measured (" + q["status"] + ")" if "status" in q else (
            f"Δ PSNR {q['psnr_diff']:+.2f} dB ± {q['psnr_diff_se']:.2f} — "
            + ("within ± 0.2 dB" if abs(q["psnr_diff"]) <= 0.2 else "outside ± 0.2 dB"))
        L.append(f"- {r['solver']} ours/deepinv time ≤ 1.0: {v:.3f} — {'met' if v <= 1.0 else 'NOT met'}; {tq}")
    for r in res.get("throughput", []):
        if "speedup_b8_over_b1" in r:
            v = r["speedup_b8_over_b1"]["median"]
            L.append(f"- batch 8 ≥ 1.5× batch 1 images/s, {r['solver']}: {v:.2f}× — {'met' if v >= 1.5 else 'NOT met'}")
    v = res.get("vml_vs_dps")
    if v is not None:
        if "status" in v:
            L.append(f"- VML-MAP ≤ 0.1× DPS time at ≥ DPS PSNR: not measured ({v['status']})")
        else:
            for r in v["rows"]:
                if r["solver"] == "dps":
                    continue
                d = _vml_reference(v, r["task"])
                tr, dp = r["seconds_per_image"] / d["seconds_per_image"], r["psnr"] - d["psnr"]
                held = "holds" if tr <= 0.1 and dp >= 0 else "does not hold"
                L.append(f"- VML-MAP '{r['preset']}' ({_budget(r)}) on {r['task']}: {tr:.3f}× the time of DPS at {_budget(d)}, "
                         f"Δ PSNR {dp:+.2f} dB — target {held}")
    return "\n".join(L + [""])


def _solver_label(r: dict) -> str:
    """``solver`` or ``solver (preset)`` when the row ran a preset other than the defaults."""
    preset = r.get("preset", "default")
    return r["solver"] if preset == "default" else f"{r['solver']} ({preset})"


def _steps(ov: dict) -> str:
    if "n_levels" in ov:
        return f"N={ov['n_levels']}, K={ov['inner_steps']}"
    if "steps" in ov and len(ov) == 1:
        return str(ov["steps"])
    return ", ".join(f"{k}={v}" for k, v in ov.items()) or "default"


def _budget(r: dict) -> str:
    b = r.get("budget", r["overrides"])
    return f"N={b['n_levels']}×K={b['inner_steps']}" if "n_levels" in b else f"{b.get('steps')} steps"


def _paired_se(r: dict, d: dict) -> str:
    """' ± SE' of the per-image PSNR differences r − d (same images), or '' if not recorded."""
    a, b = r.get("psnr_per_image"), d.get("psnr_per_image")
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return ""
    diff = [x - y for x, y in zip(a, b, strict=True)]
    return f" ± {statistics.stdev(diff) / len(diff) ** 0.5:.2f}"


def _vml_reference(v: dict, task: str) -> dict:
    """The DPS row that VML-MAP is judged against on ``task``: the paper's step count (the first)."""
    ref = v.get("reference_dps_steps")
    rows = [r for r in v["rows"] if r["task"] == task and r["solver"] == "dps"]
    for r in rows:
        if ref is None or r.get("budget", r["overrides"]).get("steps") == ref:
            return r
    return rows[0]


def render_markdown(res: dict, command: str) -> str:
    """The complete reports/perf/README.md: how to regenerate, the tables, and the notes."""
    from invbench.bench.studies import perf_readme

    return perf_readme.README.format(command=command, tables=render_tables(res))


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="invbench perf", description="What each solver costs: floor ratio, "
                                 "ours vs deepinv, throughput, VML-MAP vs DPS, fast paths (see reports/perf/README.md).")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="write the full report (e.g. reports/perf/README.md)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per contender (>= 5 unless --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny step counts and batches: checks the machinery only")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--weights", help="small-cpu weights file (default priors/data/small_cpu.pt if present)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile fast path (slow first call)")
    ap.add_argument("--from-json", metavar="FILE", help="measure nothing: re-render --markdown from a saved JSON")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``invbench perf``: returns 0 on success, 2 on bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) and 2
    cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    bad = [c for c in cases if c not in CASES]
    if bad or args.reps < 1 or (args.reps < 5 and not args.quick):
        why = f"unknown case(s) {', '.join(bad)}; valid: {', '.join(CASES)}" if bad else "--reps must be >= 5 (or use --quick)"
        sys.stderr.write(f"invbench: error: {why}\n")
        return 2
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        command = res["meta"]["command"]
    else:
        res = run(args.device, args.reps, args.quick, cases, args.weights, args.threads, args.compile, not args.quiet)
        command = "invbench perf " + " ".join(argv)
        res["meta"]["command"] = command
    if args.json and not args.from_json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(render_markdown(res, command))
    print(render_tables(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
