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

``main(argv) -> int`` is called by ``invbench perf`` (bench/cli.py). The measuring parts are in
:mod:`.perf_timing`, deepinv's contenders in :mod:`.perf_deepinv`, the markdown in
:mod:`.perf_tables` (the README's fixed text in :mod:`.perf_readme`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from invbench.bench import cost
from invbench.bench.cost.netclock import ClockedPrior
from invbench.bench.studies import perf_deepinv
from invbench.bench.studies import perf_timing as pc
from invbench.bench.studies.perf_tables import render_markdown, render_tables
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
DEMO_TASKS = (  # configs/demo-released.toml: (name, preset, params, noise_sigma in pixel units)
    ("inpaint_random-50", "inpaint_random", {"ratio": 0.5}, 0.05),
    ("sr4_avgpool", "sr4_avgpool", {}, 0.05),
    ("deblur_uniform", "deblur_uniform", {}, 0.05),
    ("denoise", "denoise", {}, 0.1),
)


# ----------------------------------------------------------------------------- cases


def solver_specs(listed: dict, prob: pc.TimingProblem, prior) -> dict:
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
        if name in specs:
            continue
        quick = cls.from_preset("default", **cls.QUICK)
        if not quick.requirements() <= have or nfe_per_image(quick) == 0:
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


def case_vs_deepinv(ctx: dict) -> list[dict]:
    try:
        import deepinv  # noqa: F401
    except ImportError as e:
        return [{"status": f"unavailable: deepinv not installed ({e})"}]
    dev, reps, cfg, info = ctx["device"], ctx["reps"], ctx["cfg"], ctx["prior_info"]
    out = []
    pairs = {"dps": lambda p, s: perf_deepinv.dps_pair(ctx, p, s, cfg["dps_weight"]),
             "ddrm": lambda p, s: perf_deepinv.ddrm_pair(ctx, p, s),
             "diffpir": lambda p, s: perf_deepinv.diffpir_pair(ctx, p, s)}
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
            row["quality"] = {"steps": qsteps, "n_images": n, "psnr_ours": float(po.mean()),
                              "psnr_deepinv": float(pd.mean()),
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
            s_img, ps = timed_psnr(
                lambda sn=sname, c=cp, pr=preset, o=ov, pb=prob: pc.run_solver(sn, pb, c, preset=pr, overrides=o),
                prob)
            eff = {**(VMLMAP.PRESETS[preset].params if sname == "vml_map" else {}), **ov}
            rows.append({"task": tname, "solver": sname, "preset": preset, "overrides": ov, "nfe": cp.nfe,
                         "vjp": cp.vjp,
                         "budget": ({"n_levels": eff["n_levels"], "inner_steps": eff["inner_steps"]}
                                    if sname == "vml_map" else {"steps": ov["steps"]}),
                         "seconds_per_image": s_img, "psnr": float(ps.mean()),
                         "psnr_per_image": [round(float(v), 3) for v in ps],
                         "psnr_se": float(ps.std() / n**0.5) if n > 1 else float("nan")})
        _log(ctx, f"vml vs dps {tname}: " + ", ".join(f"{r['solver']}[{r['preset']}{r['overrides'] or ''}] "
                                                      f"{r['psnr']:.2f} dB {r['seconds_per_image']:.2f} s"
                                                      for r in rows[-len(contenders):]))
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
            "note": "one batched timed run per cell (not interleaved repetitions); DPS with its per-task paper "
                    "preset at "
                    + " and ".join(str(k) for k in cfg["vml_dps_steps"])
                    + " steps (the paper's is 1000); VML-MAP presets "
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
    ctx = {"prior": prior, "prior_info": info, "device": device, "reps": int(reps), "cfg": cfg,
           "t0": time.perf_counter(),
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
        "quick": quick,
        "prior": {"name": info.name, "trained": info.trained, "weights": info.weights, "params": info.params},
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


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="invbench perf", description="What each solver costs: floor ratio, "
                                 "ours vs deepinv, throughput, VML-MAP vs DPS, fast paths (see "
                                 "reports/perf/README.md).")
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
        why = (f"unknown case(s) {', '.join(bad)}; valid: {', '.join(CASES)}" if bad
               else "--reps must be >= 5 (or use --quick)")
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
