"""The contenders of ``invbench perf``'s ``vs_deepinv`` case: for DPS, DDRM and DiffPIR, a pair of
closures that run ours (configured to run deepinv's algorithm, docs/solvers-baselines.md) and
deepinv's sampler on the same denoiser, operator and steps. Each ``*_pair`` returns
``(ours, theirs, denoiser, our_overrides)``; ``deepinv`` is imported only when a pair is built."""

from __future__ import annotations

import torch
from invbench.bench.studies import perf_timing as pc


def dps_pair(ctx: dict, prob, steps: int, weight: float, seed: int = 3):
    """(ours, deepinv) closures running DPS with deepinv's algorithm on ``prob`` (all images)."""
    import deepinv

    prior, dev = ctx["prior"], ctx["device"]
    den = pc.dinv_denoiser(prior)
    phys, y_pix = pc.dinv_inpainting(prob)
    rng = torch.Generator(device=dev).manual_seed(seed)
    dps = deepinv.sampling.DPS(
        den, num_steps=steps + 1, weight=weight, dtype=torch.float32, device=dev, rng=rng
    )
    sig = [float(dps.sde.sigma_t(t)) for t in dps.solver.timesteps]
    ov = {
        "sigmas": tuple(sig[:-1]),
        "zeta": weight / 2,
        "zeta_schedule": "deepinv",
        "clip_x0": True,
        "clip_range": (-3.0, 1.0),
        "variance": "fixed",
    }

    # the same noise as deepinv's (common random numbers; seed must be non-zero for deepinv)
    def ours():
        return pc.run_solver("dps", prob, prior, overrides=ov, seed=seed, shared_generator=True)

    def theirs():
        return pc.pixel_to_model(dps(y_pix, phys, seed=seed))

    return ours, theirs, den, ov


def ddrm_pair(ctx: dict, prob, steps: int, seed: int = 3):
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


def diffpir_pair(ctx: dict, prob, steps: int, seed: int = 3):
    """(ours, deepinv) closures running DiffPIR (ζ = 0.3, deepinv's λ = 3.5, which is our λ = 7:
    deepinv weighs the prior term of its proximal step by 2ρ, docs/solvers-baselines.md) on
    deepinv's own level schedule for ``steps`` iterations, each from its own start (different
    noise; the loops agree to float32 round-off under shared noise,
    tests/solvers/test_diffpir.py)."""
    import deepinv

    prior = ctx["prior"]
    den = pc.dinv_denoiser(prior)
    phys, y_pix = pc.dinv_inpainting(prob)
    model = deepinv.sampling.DiffPIR(
        den,
        deepinv.optim.data_fidelity.L2(),
        sigma=prob.noise_sigma,
        max_iter=steps,
        zeta=0.3,
        lambda_=3.5,
        device=prob.y.device,
    )
    ov = {"sigmas": tuple(float(s) for s in model.sigmas[model.seq]), "lambda_": 7.0, "zeta": 0.3}

    def ours():
        return pc.run_solver("diffpir", prob, prior, overrides=ov, seed=seed)

    def theirs():
        with torch.no_grad():
            return pc.pixel_to_model(model(y_pix, phys, seed=seed + 1))

    return ours, theirs, den, ov
