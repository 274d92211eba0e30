"""DAPS against a short port of the reference loop (``zhangbingliang2019/DAPS`` 098df6b:
``sampler.py`` ``DAPS.sample``, ``cores/mcmc.py`` ``MCMCSampler.sample`` (langevin, gaussian
prior solver), ``cores/scheduler.py`` ``EDMScheduler`` + ``DiffusionPFODE`` (Euler)), written in
the code's own terms (EDM scaling 1, so its units are ours) under shared noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invbench import operators, priors, solvers
from tests.helpers.baselines import gaussian_prior, gens


def _edm_time_steps(sigma_max, sigma_min, n, p=7):
    steps = np.linspace(0, 1, n)
    return [float((sigma_max ** (1 / p) + s * (sigma_min ** (1 / p) - sigma_max ** (1 / p))) ** p) for s in steps]


def reference_daps(y, H, prior, *, num_steps, ode_steps, mc_steps, lr, tau, lr_min_ratio,
                   sigma_max, sigma_min, ode_sigma_min, generator):
    """One image (batch 1). ``model.score(x, s)`` = (D − x)/s²; the scheduler's ``num_steps`` is
    the config's + 1; ``sigma_steps`` = the first ``num_steps`` times, then 0. Levels are clipped
    to the prior's range as our solver does (the test priors cover the used range)."""
    clip = lambda s: min(max(s, prior.sigma_min), prior.sigma_max)
    n_sched = num_steps + 1
    sigma_steps = [clip(s) for s in _edm_time_steps(sigma_max, sigma_min, n_sched)[:-1]] + [0.0]
    shape = (1, *H.in_shape)
    xt = torch.randn(shape[1:], generator=generator, dtype=y.dtype)[None] * sigma_steps[0]
    for step in range(n_sched - 1):
        sigma = sigma_steps[step]
        ts = [clip(s) for s in _edm_time_steps(sigma, ode_sigma_min, ode_steps + 1)]
        x = xt
        with torch.no_grad():
            for k in range(len(ts) - 1):  # torchdiffeq Euler on the grid: dx/dt = −t · score(x, t)
                score = (prior.denoise(x, torch.full((1,), ts[k], dtype=x.dtype)) - x) / ts[k] ** 2
                x = x + (ts[k + 1] - ts[k]) * (-ts[k] * score)
        x0hat = x
        ratio = step / n_sched
        mc_lr = (1 + ratio * (lr_min_ratio - 1)) * lr
        prior_score = (x0hat - xt) / sigma**2
        x = x0hat.clone()
        for _ in range(mc_steps):
            x_tmp = x.clone().requires_grad_(True)
            loss = ((H.forward(x_tmp) - y) ** 2).flatten(1).sum(-1).sum()
            grad = torch.autograd.grad(loss, x_tmp)[0]
            cur = -grad / tau**2 + (xt - x) / sigma**2 + prior_score
            eps = torch.randn(shape[1:], generator=generator, dtype=x.dtype)[None]
            x = x + mc_lr * cur + np.sqrt(2 * mc_lr) * eps
        xt = x + torch.randn(shape[1:], generator=generator, dtype=x.dtype)[None] * sigma_steps[step + 1]
    return xt


def _compare(P, A, x, sigma_y, kw, atol):
    y = A.measure(x, sigma_y, torch.Generator().manual_seed(2))
    B = x.shape[0]
    ours = solvers.build("daps", **kw).solve(y, A, P, sigma_y=sigma_y, generator=gens(B))
    ref = torch.cat([reference_daps(y[i:i + 1], A, P, num_steps=kw["anneal_steps"], ode_steps=kw["ode_steps"],
                                    mc_steps=kw["mcmc_steps"], lr=kw["lr"], tau=kw["tau"],
                                    lr_min_ratio=kw.get("lr_min_ratio", 0.01), sigma_max=kw["sigma_max"],
                                    sigma_min=kw["sigma_min"], ode_sigma_min=kw.get("ode_sigma_min", 0.01),
                                    generator=gens(1, offset=i)[0]) for i in range(B)])
    torch.testing.assert_close(ours, ref, rtol=0, atol=atol)
    return ours, y


@pytest.mark.parametrize("task", ["inpaint_random", "sr4_avgpool"])
def test_matches_the_reference_loop_on_a_gmm(task):
    P = gaussian_prior((1, 8, 8), seed=4, scale=0.1)
    A = operators.build(task, (1, 8, 8), torch.Generator().manual_seed(0))
    x = P.sample(2, generator=torch.Generator().manual_seed(1))
    kw = {"anneal_steps": 8, "ode_steps": 3, "mcmc_steps": 5, "lr": 2e-3, "tau": 0.1, "sigma_max": 10.0,
          "sigma_min": 0.05}
    ours, _y = _compare(P, A, x, 0.05, kw, 1e-10)
    assert ours.std() > 0.05 and torch.isfinite(ours).all()  # not a constant / degenerate output


@pytest.mark.slow
def test_matches_the_reference_loop_on_the_small_cpu_prior():
    """Same loop on the network prior (float32; the GMM tests above are the fast path)."""
    P = priors.build("small-cpu")
    A = operators.build("inpaint_random", (3, 32, 32), torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    kw = {"anneal_steps": 3, "ode_steps": 2, "mcmc_steps": 3, "lr": 1e-4, "tau": 0.05, "sigma_max": 20.0,
          "sigma_min": 0.1}
    _compare(P, A, x, 0.05, kw, 1e-4)


def test_cost_presets_and_bad_params():
    """NFE = N·K, VJP = 0; presets build; invalid parameters name the field."""
    P = priors.CountingPrior(gaussian_prior((1, 8, 8), seed=4, scale=0.1))
    A = operators.build("inpaint_random", (1, 8, 8), torch.Generator().manual_seed(0))
    y = A.measure(P.sample(1, generator=torch.Generator().manual_seed(1)), 0.05, torch.Generator().manual_seed(2))
    P.reset()
    solvers.build("daps", anneal_steps=4, ode_steps=3, mcmc_steps=2).solve(y, A, P, sigma_y=0.05, generator=gens(1))
    assert (P.nfe, P.vjp) == (12, 0)
    for preset in ("default", "inpainting", "cpu"):
        assert solvers.build("daps", preset=preset).params.tau == 0.01
    for bad in ({"lr": 0.0}, {"mcmc_steps": 0}, {"sigma_min": 200.0}):
        with pytest.raises(solvers.SolverError, match="daps"):
            solvers.build("daps", **bad)
    assert math.isclose(solvers.get("daps").PRESETS["inpainting"].params["lr"], 5e-5)
