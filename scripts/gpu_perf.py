"""GPU performance pass on the real ADM architectures (reports/perf/README.md, "GPU"). Run via ``scripts/gpu_perf.sh``.

Builds deepinv ``DiffUNet`` at the FFHQ size (``large_model=False``, 93.6 M parameters, DPS's
``ffhq_10m.pt`` architecture) and the ImageNet size (``large_model=True``, 552.8 M, guided-diffusion's
256×256 unconditional) with **random weights** (timing only: no quality is measured here; the
zero-initialised output convolutions are re-drawn so ε is not identically 0) at 256×256 under our
VP adapter (``invbench.priors.adm.DiffUNetEps`` + ``invbench.priors.vp.VPPrior``, learned variance), then for each
model, batch size (1, 8) and fast-path setting (default, bf16, fp16, tf32, channels_last,
bf16+channels_last, compile):

* the denoiser's forward and forward+backward time (median of 3 after a warm-up) and max |ΔD| vs
  the default setting on the same input;
* one timed pass of each solver (DPS, DDRM, ΠGDM, VML-MAP) on ``inpaint_random`` 50 % at reduced
  step counts (after one warm-up pass), its floor ratio, and its time at the papers' step counts
  **extrapolated** as ``measured × floor(paper config) / floor(reduced config)`` (stated as such);
* peak ``torch.cuda.max_memory_allocated`` per solver pass.

A time budget (``--budget-s``, default 450 s) is checked before every item; what does not fit is
recorded as skipped. Writes ``reports/perf/gpu-<device>.json`` and ``.md``. Never compare these
times with another device's.

``--smoke`` runs a tiny CPU version (32×32, FFHQ size, batch 1, two settings) to check the code.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from invbench.bench import cost
from invbench.bench.studies import perf_timing as pc
from invbench.priors.fast_paths import FastPaths, with_fast_paths

REDUCED = {"dps": {"steps": 2}, "ddrm": {"steps": 2}, "pigdm": {"steps": 2},
           "vml_map": {"n_levels": 1, "inner_steps": 1}}
PAPER = {  # (NFE, VJP) of the papers' / our presets' step counts
    "dps": (1000, 1000, "1000 ancestral steps"),
    "ddrm": (20, 0, "20 steps"),
    "pigdm": (100, 100, "100 DDIM steps"),
    "vml_map": (100 * 11, 100 * 10, "preset default N=100, K=10"),
}
FAST = [FastPaths(), FastPaths(autocast="bf16"), FastPaths(autocast="fp16"), FastPaths(tf32=True),
        FastPaths(channels_last=True), FastPaths(autocast="bf16", channels_last=True), FastPaths(compile=True)]


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def build_adm(large: bool, device: str, seed: int = 0):
    from invbench.priors.adm import DiffUNetEps, build_diffunet
    from invbench.priors.vp import VPPrior

    torch.manual_seed(seed)
    unet = build_diffunet(large, device=device)
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and not p.abs().sum():
                p.normal_(0, 0.02)
    unet.eval().requires_grad_(False)
    return VPPrior(DiffUNetEps(unet).eval(), image_shape=(3, 256, 256), learned_variance=True)


def med_time(fn, device: str, n: int = 3) -> float:
    fn()  # warm-up (compiles for torch.compile)
    return statistics.median(pc.timed(fn, device) for _ in range(n))


def denoiser_times(prior, B: int, device: str, hw: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, 3, hw, hw), generator=g).to(device)
    v = torch.randn((B, 3, hw, hw), generator=g).to(device)
    s = torch.full((B,), 0.5, device=device)

    def f():
        with torch.no_grad():
            return prior.denoise(x, s)

    def fb():
        xr = x.detach().requires_grad_(True)
        torch.autograd.grad(prior.denoise(xr, s), xr, grad_outputs=v)

    return med_time(f, device), med_time(fb, device), f


def one_model(name: str, large: bool, args, budget: Budget, log) -> dict:
    dev, hw = args.device, args.size
    base = build_adm(large, dev)
    if hw != 256:
        base.image_shape = (3, hw, hw)
    out = {"model": name, "large_model": large, "params": sum(p.numel() for p in base.net.parameters()),
           "image": [3, hw, hw], "cells": []}
    refs = {}
    for B in args.batches:
        for fp in args.fast:
            cell = {"batch": B, "fast_paths": fp.label()}
            out["cells"].append(cell)
            if budget.left() < args.reserve_s:
                cell["status"] = "skipped: time budget"
                continue
            try:
                prior = with_fast_paths(base, fp)
                tf, tfb, f = denoiser_times(prior, B, dev, hw)
                d = f()
                if fp.label() == "default":
                    refs[B] = d
                ref = refs.get(B)
                cell.update({"t_forward": tf, "t_forward_backward": tfb,
                             "max_abs_diff_D": None if ref is None else float((d.float() - ref.float()).abs().max())})
                images = torch.rand(B, 3, hw, hw, generator=torch.Generator().manual_seed(2))
                prob = pc.make_problem("inpaint_random", B, device=dev, params={"ratio": 0.5},
                                       images=images, dataset=f"uniform-noise-{hw}")
                cell["solvers"] = {}
                for sname, ov in REDUCED.items():
                    if budget.left() < args.reserve_s:
                        cell["solvers"][sname] = {"status": "skipped: time budget"}
                        continue
                    nfe, vjp = pc.count_costs(sname, prob, prior, overrides=ov, batch=B)  # warm-up pass
                    def solve(sn=sname, pb=prob, pr=prior, o=ov):
                        return pc.run_solver(sn, pb, pr, overrides=o)

                    mem = pc.measure_peak(solve, dev)
                    t = pc.timed(solve, dev)
                    fl = pc.floor_seconds(nfe, vjp, tf, tfb)
                    pn, pv, what = PAPER[sname]
                    cell["solvers"][sname] = {
                        "overrides": ov, "nfe": nfe, "vjp": vjp, "seconds": t, "seconds_per_image": t / B,
                        "floor_ratio": t / fl, "peak_bytes": mem["peak_bytes"],
                        "paper_config": what,
                        "paper_seconds_per_image_extrapolated": t / B * pc.floor_seconds(pn, pv, tf, tfb) / fl,
                    }
                cell["status"] = "ok"
                log(f"{name} b{B} {fp.label()}: fwd {1e3 * tf:.1f} ms, fwd+bwd {1e3 * tfb:.1f} ms")
            except torch.cuda.OutOfMemoryError as e:
                cell["status"] = f"oom: {str(e).splitlines()[0]}"
            except Exception as e:  # noqa: BLE001 - one failed setting must not lose the others
                cell["status"] = f"error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            finally:
                if torch.device(dev).type == "cuda":
                    torch.cuda.empty_cache()
    del base
    return out


def render(res: dict) -> str:
    L = [f"# GPU performance: {res['device_name']}", "",
         (f"torch {res['torch']}; generated by `{res['command']}` in {res['wall_seconds']:.0f} s (budget "
         f"{res['budget_s']:.0f} s). Random weights (timing only). Solver passes at reduced steps "
         f"({', '.join(f'{k} {v}' for k, v in REDUCED.items())}); the 'paper s/img' column is **extrapolated**: "
         "measured × floor(paper config)/floor(reduced config). Floor = (NFE−VJP)·t_fwd + VJP·t_fwd+bwd. "
         "Do not compare with other devices."), ""]
    if res.get("invbench_perf"):
        L += [f"`invbench perf --device cuda` (small prior, 32×32): see `{res['invbench_perf']}`.", ""]
    for m in res["models"]:
        L += [f"## {m['model']} ({m['params'] / 1e6:.1f} M parameters, {m['image'][1]}×{m['image'][2]})", "",
              ("| batch | fast paths | fwd ms | fwd+bwd ms | max abs ΔD | solver | s/img (reduced) | floor ratio | "
               "paper s/img (extrap.) | peak GiB |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
        for c in m["cells"]:
            if c.get("status") != "ok":
                L.append(f"| {c['batch']} | {c['fast_paths']} | {c.get('status')} |||||||")
                continue
            dd = "—" if c["max_abs_diff_D"] is None else f"{c['max_abs_diff_D']:.1e}"
            for i, (sn, s) in enumerate(c["solvers"].items()):
                head = (f"| {c['batch']} | {c['fast_paths']} | {1e3 * c['t_forward']:.1f} | "
                        f"{1e3 * c['t_forward_backward']:.1f} | {dd} "
                        if i == 0 else "| | | | | ")
                if "status" in s:
                    L.append(head + f"| {sn} | {s['status']} ||||")
                else:
                    L.append(head + f"| {sn} | {s['seconds_per_image']:.3f} | {s['floor_ratio']:.3f} | "
                             f"{s['paper_seconds_per_image_extrapolated']:.1f} ({s['paper_config']}) | "
                             f"{s['peak_bytes'] / 2**30:.2f} |")
        L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget-s", type=float, default=450.0)
    ap.add_argument("--reserve-s", type=float, default=25.0, help="stop starting new items when less is left")
    ap.add_argument("--out", default=str(ROOT / "reports" / "perf"))
    ap.add_argument("--models", default="ffhq,imagenet")
    ap.add_argument("--invbench-json", default=None,
                    help="path of the invbench perf --device cuda JSON (for the table)")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU check of this script")
    args = ap.parse_args(argv)
    args.size, args.batches, args.fast = 256, (1, 8), FAST
    if args.smoke:
        args.device, args.size, args.batches, args.models = "cpu", 32, (1,), "ffhq"
        args.fast = [FastPaths(), FastPaths(autocast="bf16")]
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_perf: no CUDA device", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    name = cost.device_name(args.device)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    t0 = time.perf_counter()

    def log(msg):
        print(f"[gpu_perf {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    res = {"device": args.device, "device_name": name, "torch": torch.__version__, "budget_s": args.budget_s,
           "command": "python scripts/gpu_perf.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "invbench_perf": args.invbench_json, "models": []}
    for key, large in (("ffhq", False), ("imagenet", True)):
        if key in args.models.split(","):
            if budget.left() < args.reserve_s:
                res["models"].append({"model": f"adm-{key}", "large_model": large, "params": 0,
                                      "image": [3, args.size, args.size],
                                      "cells": [], "status": "skipped: time budget"})
                continue
            res["models"].append(one_model(f"adm-{key} architecture", large, args, budget, log))
    res["wall_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-{slug}" + ("-smoke" if args.smoke else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"{stem}.md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
