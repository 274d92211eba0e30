"""The exact twin of the CPU demo (docs/design.md §10, reports/twin32/README.md): the demo's four tasks
at 32×32 RGB, on held-out *test* crops, every registered solver, run once with the exact
``gmm-crops32`` mixture (scored against its exact posterior) and once with the learned ``small-cpu``
UNet — same images, operators, noise and solver seeds.

Protocol (model space [-1, 1] unless stated):

* images: ``bundled.heldout_crops(n_images, 32, seed=0, split="test")`` (chelsea, coffee);
* tasks: ``TASKS`` (the demo's presets and pixel noise levels); problems from the suite's one
  problem pipeline, :func:`invbench.bench.problem.build_problem`: dataset ``DATASET``, image
  ``crop<i>``, ``data_part = solver_part = PART``, and one ``operator_id`` per task, so the
  images of a task share one operator draw, one batched solver call and one exact posterior;
* solvers: every registered non-oracle solver (``solvers.names()``), preset ``default`` (DPS: its
  per-task paper preset, as in the demo; DAPS and LMAPS: the ``cpu`` presets the demo runs,
  ``DEMO_PRESETS``) with the demo's reduced step counts ``STEP_OVERRIDES`` (a solver added later
  runs its defaults);
* per image: PSNR (pixel units, against the true crop); with ``gmm-crops32`` also the exact-posterior
  metrics (``posterior_metrics``: distance and log-posterior gap to the exact MAP, error to the
  exact posterior mean) and where the output lies (``global`` / ``local`` / ``elsewhere``: within
  ``MODE_TOL`` RMS of the global MAP, of another mode found, or of neither);
* sample sets (``gmm-crops32`` only): for images ``SAMPLE_IMAGES``, ``n_samples`` runs of each
  solver (the image's solver draws ``PART/sample<k>``,
  :meth:`invbench.bench.problem.Problem.with_solver_part`) against ``n_reference`` exact posterior
  samples of that image alone (sliced Wasserstein, ``SW_PROJECTIONS`` projections), next to the
  same number of exact samples (the finite-sample floor); the exact draws are seeded by
  ``Problem.seed_for("reference" | "exact-samples", PART)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from invbench.bench import bundled
from invbench.bench.metrics.image import psnr
from invbench.bench.metrics.posterior import posterior_metrics
from invbench.bench.metrics.sliced_wasserstein import sliced_wasserstein
from invbench.operators.conventions import model_to_pixel
from invbench.priors import CountingPrior
from torch import Tensor

from invbench import priors, solvers

from ..config.spec import TaskSpec
from ..problem import Problem, build_problem, generator, solve_and_score

TASKS: tuple[tuple[str, str, dict, float], ...] = (  # (task, preset, params, noise_sigma in pixel units)
    ("inpaint_random-50", "inpaint_random", {"ratio": 0.5}, 0.05),
    ("sr4_avgpool", "sr4_avgpool", {}, 0.05),
    ("deblur_uniform", "deblur_uniform", {}, 0.05),
    ("denoise", "denoise", {}, 0.1),
)
#: the CPU demo's reduced step counts (configs/demo-released.toml); DiffPIR and RED-diff run their defaults
STEP_OVERRIDES: dict[str, dict] = {
    "vml_map": {"n_levels": 20, "inner_steps": 4},
    "dps": {"steps": 100},
    "pigdm": {"steps": 50},
}
#: named presets the demo runs (configs/demo-released.toml): the reduced-step CPU presets of DAPS and LMAPS
DEMO_PRESETS: dict[str, str] = {"daps": "cpu", "lmaps": "cpu"}
PRIORS = ("gmm-crops32", "small-cpu")
#: the dataset name and seed part of the twin's problems (:func:`invbench.bench.problem.build_problem`)
DATASET, PART = "heldout-test-crops32", "twin32"
SAMPLE_IMAGES = (0, 8)
SW_PROJECTIONS = 256
MODE_TOL = 0.01
DT = torch.float64


@dataclass(frozen=True)
class TwinConfig:
    n_images: int = 16
    n_samples: int = 8
    n_reference: int = 512
    solvers: tuple[str, ...] | None = None  # None: every registered non-oracle solver
    tasks: tuple[str, ...] | None = None  # None: all TASKS


def solver_names(cfg: TwinConfig) -> tuple[str, ...]:
    names = cfg.solvers or tuple(n for n in solvers.names() if not n.startswith("oracle"))
    return tuple(names)


def build_solver(name: str, preset_task: str):
    # DPS: its per-task paper preset, as ``preset = "paper"`` resolves in configs/demo-released.toml
    preset = solvers.get(name).preset_for_task(preset_task) if name == "dps" else DEMO_PRESETS.get(name, "default")
    return solvers.build(name, preset, **STEP_OVERRIDES.get(name, {})), preset


def problems(task_index: int, cfg: TwinConfig, dtype: torch.dtype) -> list[Problem]:
    """The ``n_images`` problems of task ``TASKS[task_index]`` (one shared operator draw)."""
    task, preset, params, noise = TASKS[task_index]
    spec = TaskSpec(task, preset, noise, params)
    crops = bundled.heldout_crops(cfg.n_images, 32, seed=0, split="test")
    return [build_problem(spec, DATASET, f"crop{i:04d}", crops[i], PART, PART, operator_id="all",
                          dtype=dtype) for i in range(cfg.n_images)]


def psnr_px(x: Tensor, problems: list[Problem]) -> Tensor:
    """PSNR in dB of model-space outputs ``x`` against the problems' pixel truths (the suite's
    :func:`invbench.bench.metrics.image.psnr`: data range 1, images clipped to [0, 1])."""
    return psnr(model_to_pixel(x.to(DT)).cpu(), torch.cat([p.x for p in problems]))


def where(x: Tensor, modes) -> tuple[str, float]:
    """("global" | "local" | "elsewhere", RMS distance to the nearest mode found)."""
    pts = modes.points.reshape(modes.points.shape[0], -1).to(DT)
    dist = (pts - x.reshape(1, -1).to(DT)).norm(dim=1) / math.sqrt(pts.shape[1])
    k = int(dist.argmin())
    if float(dist[k]) > MODE_TOL:
        return "elsewhere", float(dist[k])
    return ("global" if k == 0 else "local"), float(dist[k])


def run_prior(prior_name: str, cfg: TwinConfig, progress=print) -> tuple[list[dict], list[dict]]:
    """All (task, solver) cells for one prior: per-image rows and (gmm only) sample-set rows."""
    exact = prior_name != "small-cpu"
    dtype = DT if exact else torch.float32
    prior = priors.build(prior_name)
    rows, srows = [], []
    for t, (task, preset, _params, _noise) in enumerate(TASKS):
        if cfg.tasks and task not in cfg.tasks:
            continue
        probs = problems(t, cfg, dtype)
        post = modes = refs = None
        if exact:
            t0 = time.perf_counter()
            post = prior.posterior(probs[0].operator, torch.cat([p.y for p in probs]), probs[0].sigma_y)
            modes = post.modes()
            refs = _references(prior, probs, cfg)
            progress(f"{prior_name} {task}: exact posterior, MAP and references in {time.perf_counter() - t0:.1f} s")
            for label, xe in (("exact MAP", post.map()), ("exact posterior mean", post.mean())):
                rows += _score_rows(prior_name, task, label, "-", xe, probs, post, modes,
                                    {"nfe": 0, "vjp": 0, "seconds": 0.0})
        for name in solver_names(cfg):
            solved = _solver_rows(prior, prior_name, name, preset, task, probs, post, modes, progress)
            rows += solved
            if exact and cfg.n_samples > 0 and solved[0]["status"] == "ok":
                srows += _sample_rows(prior, name, preset, task, probs, post, refs, cfg)
        if exact and cfg.n_samples > 0:
            for i, (ref, exact_xs) in refs.items():
                srows.append(_sample_row(prior_name, task, "exact samples", i, exact_xs, post.mean()[i], ref))
    return rows, srows


def _references(prior, probs: list[Problem], cfg: TwinConfig) -> dict[int, tuple[Tensor, Tensor]]:
    """Per sample-set image ``i``: ``n_reference`` and ``n_samples`` exact posterior samples of its
    measurement alone (so they do not depend on the other images)."""
    out = {}
    if cfg.n_samples <= 0:
        return out
    for i in (i for i in SAMPLE_IMAGES if i < len(probs)):
        p = probs[i]
        post_i = prior.posterior(p.operator, p.y, p.sigma_y)
        out[i] = (post_i.sample(cfg.n_reference, generator=generator(p.seed_for("reference", PART)))[0],
                  post_i.sample(cfg.n_samples, generator=generator(p.seed_for("exact-samples", PART)))[0])
    return out


def _solver_rows(prior, prior_name, name, preset, task, probs, post, modes, progress) -> list[dict]:
    """One batched solve of every image by solver ``name``: its rows (one status row on failure)."""
    solver, spreset = build_solver(name, preset)
    cp = CountingPrior(prior)
    t0 = time.perf_counter()
    try:
        x = solve_and_score(solver, probs, cp).x_hat
    except (solvers.SolverDiverged, solvers.SolverSkip) as e:
        status = f"{type(e).__name__}: {e}"
        progress(f"{prior_name} {task} {name}: {status}")
        return [{"prior": prior_name, "task": task, "solver": name, "preset": spreset, "status": status}]
    cost = {"nfe": cp.nfe, "vjp": cp.vjp, "seconds": time.perf_counter() - t0}
    progress(f"{prior_name} {task} {name}: ok, {cost['seconds']:.1f} s, NFE {cp.nfe}, VJP {cp.vjp}")
    return _score_rows(prior_name, task, name, spreset, x, probs, post, modes, cost)


def _score_rows(prior_name, task, name, spreset, x, probs, post, modes, cost) -> list[dict]:
    base = {"prior": prior_name, "task": task, "solver": name, "preset": spreset, "status": "ok",
            "seconds_per_image": cost["seconds"] / x.shape[0], "nfe": cost["nfe"], "vjp": cost["vjp"]}
    ps = psnr_px(x, probs)
    pm = posterior_metrics(model_to_pixel(x.to(DT)), post) if post is not None else None
    out = []
    for i in range(x.shape[0]):
        r = {**base, "image": i, "psnr": float(ps[i])}
        if pm is not None:
            r.update({k: float(v[i]) for k, v in pm.items()})
            r["mode"], r["dist_nearest_mode"] = where(x[i], modes[i])
            r["n_modes"] = int(modes[i].points.shape[0])
        out.append(r)
    return out


def _sample_rows(prior, name, preset, task, probs, post, refs, cfg) -> list[dict]:
    out = []
    for i, (ref, _) in refs.items():
        solver, _ = build_solver(name, preset)
        draws = [probs[i].with_solver_part(f"{PART}/sample{k}") for k in range(cfg.n_samples)]
        try:
            xs = solve_and_score(solver, draws, prior).x_hat
        except (solvers.SolverDiverged, solvers.SolverSkip):
            continue
        out.append(_sample_row(prior.name, task, name, i, xs, post.mean()[i], ref))
    return out


def _sample_row(prior_name, task, name, i, xs, mu, ref) -> dict:
    d = xs[0].numel()
    return {"prior": prior_name, "task": task, "solver": name, "image": i,
            "err_avg_post_mean": float((xs.to(DT).mean(0) - mu.to(DT)).norm() / math.sqrt(d)),
            "sw": float(sliced_wasserstein(xs.to(DT), ref.to(DT), SW_PROJECTIONS, 0))}


def time_denoisers(batch: int = 4, repeats: int = 5) -> list[dict]:
    """Median wall time (s) of ``denoise`` (forward) and of forward + backward (a VJP through the
    denoiser) at ``batch`` 32×32 RGB images, σ = 0.5, for both priors, on this machine."""
    out = []
    g = torch.Generator().manual_seed(0)
    for name in PRIORS:
        p = priors.build(name)
        dtype = DT if name != "small-cpu" else torch.float32
        x = torch.randn(batch, 3, 32, 32, generator=g).to(dtype)
        s = torch.full((batch,), 0.5, dtype=dtype)

        def fwd(p=p, x=x, s=s):
            with torch.no_grad():
                p.denoise(x, s)

        def fwd_bwd(p=p, x=x, s=s):
            xr = x.clone().requires_grad_(True)
            p.denoise(xr, s).sum().backward()

        row = {"prior": name, "batch": batch, "threads": torch.get_num_threads()}
        for label, fn in (("forward_s", fwd), ("forward_backward_s", fwd_bwd)):
            fn()
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            row[label] = sorted(ts)[len(ts) // 2]
        out.append(row)
    return out
