"""Building blocks of ``invbench perf`` (:mod:`invbench.bench.studies.perf`): the timing prior,
problems, interleaved timing, statistics and the deepinv wrappers.

Units: seconds; images in model space [-1, 1] for solvers, pixel space [0, 1] for PSNR;
``noise_sigma`` in pixel units (``sigma_y = 2 * noise_sigma`` in model units).

Seeds: every problem is built by :func:`invbench.bench.problem.build_problem` (the suite's one
scheme, docs/design.md §2): for the study seed ``s`` the data and solver seed parts are
``perf/<s>`` (:func:`seed_part`), and a batch's images name one operator id
(:data:`SHARED_OPERATOR`) so they share one operator draw and are timed as one batched call;
noise and solver seeds are each image's own. The exception is ``run_solver(...,
shared_generator=True)``: one generator seeded like deepinv's sampler (common random numbers).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from invbench.bench import cost
from invbench.operators.conventions import model_to_pixel, noise_sigma_to_model, pixel_to_model
from invbench.priors import CountingPrior
from invbench.priors.small_cpu import DEFAULT_WEIGHTS, load_small_cpu
from invbench.priors.small_unet import build_small_unet
from invbench.priors.vp import VPPrior
from torch import Tensor

from invbench import solvers

from ..problem import Problem, build_problem

__all__ = [
    "BUNDLED_TEST",
    "SHARED_OPERATOR",
    "PriorInfo",
    "TimingProblem",
    "count_costs",
    "denoiser_costs",
    "dinv_denoiser",
    "interleave",
    "make_problem",
    "pair_ratios",
    "psnr_pixel",
    "run_solver",
    "seed_part",
    "solver_seeds",
    "stats",
    "timing_prior",
]

WEIGHTS_NOT_TRAINED = "weights not trained yet"


# ----------------------------------------------------------------------------- priors


@dataclass
class PriorInfo:
    """Which network the timings ran on: ``trained`` False means random weights (timing only)."""

    name: str
    trained: bool
    weights: str  # path + sha256, or why random
    params: int


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timing_prior(device: str = "cpu", weights: str | Path | None = None,
                 seed: int = 0) -> tuple[VPPrior, PriorInfo]:
    """The small CPU prior (``priors/data/small_cpu.pt`` or ``weights``) when its weights exist,
    else the same architecture with seeded random weights (timing only: the cost of a network
    call does not depend on its weight values). The output convolution is re-initialised
    randomly too (it is zero at construction), so ε is not identically 0."""
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_file():
        prior = load_small_cpu(path).to(device=device)
        info = PriorInfo("small-cpu", True, f"{_shown(path)} sha256 {_sha256(path)[:16]}…",
                         _n_params(prior.net))
        return prior, info
    if weights is not None:
        raise FileNotFoundError(f"{path}: small-cpu weights not found")
    g = torch.Generator().manual_seed(seed)
    net = build_small_unet()
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and not p.abs().sum():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    net.eval().requires_grad_(False)
    prior = VPPrior(net.to(device), image_shape=(3, 32, 32))
    info = PriorInfo("small-cpu architecture, random weights", False,
                     f"{WEIGHTS_NOT_TRAINED} ({path} missing): random weights, timing only",
                     _n_params(net))
    return prior, info


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (reports do not name the
    machine's folders)."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _n_params(net) -> int:
    return int(sum(p.numel() for p in net.parameters()))


# ----------------------------------------------------------------------------- problems

#: Seed-scheme name of the timing images ``bundled.heldout_crops(n, 32, seed, split="test")``.
BUNDLED_TEST = "bundled-test"
#: Operator id every image of a timing batch names: the batch shares one operator draw.
SHARED_OPERATOR = "shared"


def seed_part(seed: int) -> str:
    """The seed part (``data_part`` and ``solver_part`` of
    :func:`invbench.bench.problem.build_problem`) of the perf study's draws under ``seed``."""
    return f"perf/{seed}"


@dataclass
class TimingProblem:
    """A measured batch sharing one operator: ``x`` ground truth (model units [-1, 1], float32,
    on the device), operator ``A``, measurement ``y`` (model units), ``sigma_y`` (model units),
    ``noise_sigma`` (pixel units), ``task`` (the operator preset), and ``problems``: the batch's
    images as :class:`invbench.bench.problem.Problem` values in order (identity and seeds)."""

    x: Tensor
    A: object
    y: Tensor
    sigma_y: float
    noise_sigma: float
    task: str
    problems: list[Problem] = field(default_factory=list)


def make_problem(task: str, n: int, *, device: str = "cpu", noise_sigma: float = 0.05,
                 seed: int = 0, params: dict | None = None, images: Tensor | None = None,
                 dataset: str | None = None) -> TimingProblem:
    """``n`` images measured through operator preset ``task`` (with ``params``) at pixel-unit
    ``noise_sigma`` (``sigma_y = 2 * noise_sigma`` in model units), float32 on ``device``.

    Images: ``n`` held-out 32×32 test crops (``invbench.bench.bundled.heldout_crops(n, 32, seed,
    split="test")``, dataset :data:`BUNDLED_TEST`, image ids ``crop0000``, ``crop0001``, …), or
    the first ``n`` of ``images`` (pixel units [0, 1], ``(N, C, H, W)``), which ``dataset`` must
    then name (image ids ``image0000``, …). Each image is built by
    :func:`invbench.bench.problem.build_problem` (task name = ``task``) with data and solver part
    :func:`seed_part` ``(seed)`` and operator id :data:`SHARED_OPERATOR`: the batch shares one
    operator draw (one batched solver call), the noise and solver seeds are the image's own."""
    from invbench.bench import bundled
    from invbench.bench.config.spec import TaskSpec

    if images is None:
        images = bundled.heldout_crops(n, size=32, seed=seed, split="test")
        dataset, stem = (BUNDLED_TEST if dataset is None else dataset), "crop"
    elif dataset is None:
        raise ValueError("make_problem: name the given images (dataset=...): their seeds use it")
    else:
        stem = "image"
    if images.shape[0] < n:
        raise ValueError(f"make_problem: {n} images asked for, {images.shape[0]} given")
    spec = TaskSpec(task, task, float(noise_sigma), dict(params or {}))
    part = seed_part(seed)
    probs = [build_problem(spec, dataset, f"{stem}{i:04d}", images[i], part, part,
                           operator_id=SHARED_OPERATOR, device=device, dtype=torch.float32)
             for i in range(n)]
    x = torch.cat([p.x_model for p in probs])
    y = torch.cat([p.y for p in probs])
    return TimingProblem(x, probs[0].operator, y, probs[0].sigma_y, float(noise_sigma), task,
                         probs)


def generators(seeds: Sequence[int], device: str) -> list[torch.Generator]:
    """One generator per seed on ``device`` (noise drawn where it is used: no host copies)."""
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def solver_seeds(prob: TimingProblem, n: int, seed: int | None = None) -> list[int]:
    """The solver seeds of the first ``n`` images of ``prob``: each image's own
    (:attr:`invbench.bench.problem.Problem.solver_seed`), or with ``seed`` those of solver part
    :func:`seed_part` ``(seed)`` (:meth:`invbench.bench.problem.Problem.seed_for`)."""
    if n > len(prob.problems):
        raise ValueError(f"{n} images asked for, the problem has {len(prob.problems)}")
    return [p.solver_seed if seed is None else p.seed_for("solver", seed_part(seed))
            for p in prob.problems[:n]]


def run_solver(name: str, prob: TimingProblem, prior, *, preset: str = "default",
               overrides: dict | None = None, seed: int | None = None, batch: int | None = None,
               shared_generator: bool = False) -> Tensor:
    """Solve ``prob`` with solver ``name`` (first ``batch`` images) and return x̂ (model units).

    Noise: one generator per image on the problem's device, seeded by :func:`solver_seeds`
    (the image's own solver seed, or that of solver part ``perf/<seed>``); or with
    ``shared_generator`` one generator seeded ``seed`` drawing for the images in turn — the
    stream deepinv's samplers draw from ``rng.manual_seed(seed)``, so the two see the same noise
    (common random numbers)."""
    s = solvers.build(name, preset=preset, **(overrides or {}))
    b = prob.y.shape[0] if batch is None else batch
    y = prob.y[:b]
    dev = str(y.device)
    if shared_generator:
        if seed is None:
            raise ValueError("shared_generator needs the seed of deepinv's rng")
        gen = torch.Generator(device=dev).manual_seed(seed)
    else:
        gen = generators(solver_seeds(prob, b, seed), dev)
    return s.solve(y, prob.A, prior, sigma_y=prob.sigma_y, generator=gen)


def count_costs(name: str, prob: TimingProblem, prior, *, preset: str = "default",
                overrides: dict | None = None, batch: int = 1) -> tuple[int, int]:
    """(NFE, VJP) of one solve, counted by :class:`priors.CountingPrior`."""
    cp = CountingPrior(prior)
    run_solver(name, prob, cp, preset=preset, overrides=overrides, batch=batch)
    return cp.nfe, cp.vjp


def psnr_pixel(x_hat_model: Tensor, x_model: Tensor) -> Tensor:
    """Per-image PSNR (dB, data range 1, images clipped to [0, 1]) of model-space batches."""
    from invbench.bench.metrics.image import psnr

    return psnr(model_to_pixel(x_hat_model), model_to_pixel(x_model))


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], device: str) -> float:
    """Wall-clock seconds of ``fn()`` (CUDA synchronised before and after). As ``timeit``, the
    garbage collector is run before and disabled during the call, so one contender's garbage is
    not collected on the other's clock. With the collector off during each call, everything a call
    allocates stays in the young generations, so collecting those (not the whole heap, which costs
    about 0.1 s per call once torch and deepinv are imported) frees its garbage."""
    gc.collect(1)
    was = gc.isenabled()
    gc.disable()
    try:
        with cost.Timer(device) as t:
            fn()
    finally:
        if was:
            gc.enable()
    return t.seconds


def interleave(contenders: Sequence[tuple[str, Callable[[], object]]], reps: int, device: str,
               warmup: int = 1) -> dict[str, list[float]]:
    """Run the contenders ``reps`` rounds after ``warmup`` untimed rounds, the order reversed every
    other round (A B C, C B A, A B C, …) so no contender always runs first or right after the same
    one; returns name -> list of seconds (index i = round i, so ratios pair round by round)."""
    for _ in range(warmup):
        for _, fn in contenders:
            fn()
    out: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(reps):
        for name, fn in (contenders if r % 2 == 0 else contenders[::-1]):
            out[name].append(timed(fn, device))
    return out


def stats(values: Sequence[float]) -> dict:
    """median, min, max, n and the values (rounded to 6 significant digits)."""
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v),
            "values": [float(f"{x:.6g}") for x in v]}


def pair_ratios(a: Sequence[float], b: Sequence[float]) -> dict:
    """Stats of ``a[i] / b[i]`` (pair by pair)."""
    if len(a) != len(b):
        raise ValueError(f"pairwise ratio needs equal lengths, got {len(a)} and {len(b)}")
    return stats([x / y for x, y in zip(a, b, strict=True)])


def denoiser_calls(prior, batch: int, device: str, calls: int = 3, sigma: float = 1.0):
    """Two closures timing ``calls`` network calls on a ``(batch, *image_shape)`` input:
    forward only (``torch.no_grad``) and forward + backward (one VJP with a random cotangent).
    Each closure returns nothing; divide its time by ``calls``."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn((batch, *prior.image_shape), generator=g).to(device)
    v = torch.randn((batch, *prior.image_shape), generator=g).to(device)
    s = torch.full((batch,), float(sigma), device=device)

    def fwd():
        with torch.no_grad():
            for _ in range(calls):
                prior.denoise(x, s)

    def fwd_bwd():
        for _ in range(calls):
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                d = prior.denoise(xr, s)
                torch.autograd.grad(d, xr, grad_outputs=v)

    return fwd, fwd_bwd


def denoiser_costs(prior, batch: int, device: str, calls: int = 5,
                   reps: int = 3) -> tuple[float, float]:
    """Median seconds per call (forward, forward+backward), interleaved, after one warm-up."""
    f, fb = denoiser_calls(prior, batch, device, calls)
    t = interleave([("f", f), ("fb", fb)], reps, device)
    return statistics.median(t["f"]) / calls, statistics.median(t["fb"]) / calls


def floor_seconds(nfe: int, vjp: int, t_forward: float, t_fwd_bwd: float) -> float:
    """The network-evaluation floor: ``(NFE − VJP)·t_forward + VJP·t_forward+backward`` — every
    evaluation costs a forward, and those that are differentiated a backward too (the VJP's
    forward is the evaluation itself, so it is not counted twice)."""
    return (nfe - vjp) * t_forward + vjp * t_fwd_bwd


# ----------------------------------------------------------------------------- memory


def measure_peak(fn: Callable[[], object], device: str) -> dict:
    """Run ``fn`` once and report its peak memory: CUDA ``max_memory_allocated`` (reset before)
    on GPU; on CPU peak RSS (``VmHWM``, reset before where Linux permits) and its increase over
    the RSS before the run."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        cost.reset_gpu_peak(device)
        fn()
        peak = cost.gpu_peak_bytes(device)
        return {"kind": "cuda max_memory_allocated", "peak_bytes": peak,
                "increase_bytes": peak - base}
    base = cost.current_rss_bytes()
    reset_ok = cost.reset_rss_peak()
    fn()
    peak = cost.peak_rss_bytes()
    return {"kind": "peak RSS (VmHWM)" + ("" if reset_ok else ", not resettable: process peak"),
            "peak_bytes": peak, "increase_bytes": max(0, peak - base)}


# ----------------------------------------------------------------------------- deepinv


class _NullNet(torch.nn.Module):
    """ε(x, t) = 0.1·x: a network that costs almost nothing (one multiply), differentiable."""

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return 0.1 * x


@contextlib.contextmanager
def null_network(prior):
    """Temporarily replace ``prior.net`` (a :class:`invbench.priors.vp.VPPrior`) by
    :class:`_NullNet`, so a timed solve measures what the solver loop (and the adapter) cost
    around the network."""
    net = prior.net
    prior.net = _NullNet()
    try:
        yield prior
    finally:
        prior.net = net


def dinv_denoiser(prior, noise_factor: float = 1.0):
    """Our model-space prior as a ``deepinv.models.Denoiser`` (pixel units in and out), in the
    caller's dtype: ``forward(x_pix, s) = (D(2 x_pix − 1, noise_factor · 2 s) + 1) / 2``.
    ``noise_factor = 1/sqrt(2)`` compensates deepinv DDRM's ``randn / sqrt(2)``
    (docs/solvers-baselines.md). ``.calls`` counts network evaluations."""
    import deepinv

    class _Wrapped(deepinv.models.Denoiser):
        calls = 0

        def forward(self, x, sigma, *args, **kwargs):
            type(self).calls += 1
            s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
            if s.numel() == 1:
                s = s.expand(x.shape[0])
            d = prior.denoise(pixel_to_model(x), noise_sigma_to_model(noise_factor) * s)
            return model_to_pixel(d)

    return _Wrapped()


def dinv_inpainting(prob: TimingProblem, noise_sigma: float | None = None):
    """deepinv ``Inpainting`` physics with our problem's mask (all channels) and a pixel-unit
    noise model ``noise_sigma`` (default the problem's), plus the measurement as deepinv's
    ``mask ⊙ x`` pixel image built from our ``y`` (same noise values on observed pixels)."""
    import deepinv

    A = prob.A
    C, H, W = A.in_shape
    mask = A.mask.to(device=prob.y.device, dtype=prob.y.dtype).reshape(1, H, W)
    mask = mask.expand(C, H, W).clone()
    ns = prob.noise_sigma if noise_sigma is None else noise_sigma
    phys = deepinv.physics.Inpainting(img_size=(C, H, W), mask=mask,
                                      noise_model=deepinv.physics.GaussianNoise(ns),
                                      device=prob.y.device)
    y_pix = model_to_pixel(A.adjoint(prob.y)) * mask  # observed pixels: (y + 1)/2, hole: 0
    return phys, y_pix


def sqrt2() -> float:
    return math.sqrt(2.0)
