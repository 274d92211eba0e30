"""LMAPS (reconstructed; see the docstring of solvers/lmaps.py). No code of the paper is public,
so there is no reference loop to agree with. These tests check the properties the reconstruction
claims: under an isotropic Gaussian prior its local MAP is the exact argmax of
``p(x0 | x_t, y)``; the gradient steps reach the closed form; at ``σ_y = 0`` the estimate is
data-consistent; and the cost is one NFE per level with no network VJP."""

from __future__ import annotations

import math

import pytest
import torch
from invbench.priors.gmm import GaussianMixturePrior
from invbench.solvers.lmaps import local_map, local_map_exact, local_variance, operator_norm_sq

from invbench import operators, priors, solvers
from tests.helpers.baselines import gaussian_prior, gens

SHAPE = (1, 8, 8)
D = math.prod(SHAPE)


def _isotropic_prior(s: float, seed: int = 3) -> GaussianMixturePrior:
    g = torch.Generator().manual_seed(seed)
    mu = 0.2 * torch.randn(D, generator=g, dtype=torch.float64)
    return GaussianMixturePrior([1.0], mu[None], (s * s * torch.eye(D, dtype=torch.float64))[None], SHAPE)


def _dense(A) -> torch.Tensor:
    """The matrix of a linear operator, ``(m, d)``."""
    eye = torch.eye(D, dtype=torch.float64).reshape(D, *SHAPE)
    return A.forward(eye).reshape(D, -1).T


def _operator(task: str):
    return operators.build(task, SHAPE, torch.Generator().manual_seed(0)).to(dtype=torch.float64)


@pytest.mark.parametrize("task", ["inpaint_random", "sr4_avgpool", "deblur_gauss"])
def test_local_map_is_the_exact_posterior_argmax_under_an_isotropic_gaussian_prior(task):
    """Prior ``N(μ, s² I)``, ``k = 1/s²``: ``p(x0 | x_t) = N(D(x_t), r² I)`` exactly, so the local MAP
    equals the mean of the Gaussian ``p(x0 | x_t, y)``, computed here from dense matrices."""
    s, sigma, sigma_y = 0.3, 0.5, 0.05
    P, A = _isotropic_prior(s), _operator(task)
    x = P.sample(2, generator=torch.Generator().manual_seed(1))
    y = A.measure(x, sigma_y, torch.Generator().manual_seed(2))
    x_t = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)

    M = _dense(A)
    mu = P.means[0]
    prec = (1 / s**2 + 1 / sigma**2) * torch.eye(D, dtype=torch.float64) + M.T @ M / sigma_y**2
    rhs = mu / s**2 + x_t.reshape(2, -1) / sigma**2 + y.reshape(2, -1) @ M / sigma_y**2
    exact = torch.linalg.solve(prec, rhs.T).T.reshape(x.shape)

    x0hat = P.denoise(x_t, torch.full((2,), sigma, dtype=x.dtype))
    weight = sigma_y**2 / local_variance(sigma, 1 / s**2)
    torch.testing.assert_close(local_map_exact(A, y, x0hat, weight), exact, rtol=0, atol=1e-10)
    norm_sq, _ = operator_norm_sq(A, x0hat, 200)
    grad = local_map(A, y, x0hat, weight, norm_sq, steps=4000, lr=1.0)
    torch.testing.assert_close(grad, exact, rtol=0, atol=1e-8)


def test_power_iteration_finds_the_largest_singular_value():
    A = _operator("deblur_gauss")
    lam, _ = operator_norm_sq(A, torch.zeros(2, *SHAPE, dtype=torch.float64), 300)
    s_max = float(A.svd.singular_values.max())
    torch.testing.assert_close(lam, torch.full((2,), s_max**2, dtype=torch.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("task", ["inpaint_random", "sr4_avgpool"])
def test_noiseless_local_map_is_the_nearest_data_consistent_point(task):
    """``σ_y = 0``: the objective is ½‖y − A u‖² from ``u = x̂0``; its limit ``x̂0 + A⁺(y − A x̂0)``
    is the closest point to ``x̂0`` with ``A u = y``."""
    A = _operator(task)
    g = torch.Generator().manual_seed(5)
    x0hat = torch.randn(2, *SHAPE, generator=g, dtype=torch.float64)
    y = A.forward(torch.randn(2, *SHAPE, generator=g, dtype=torch.float64))
    M = _dense(A)
    proj = x0hat + (torch.linalg.pinv(M) @ (y - A.forward(x0hat)).reshape(2, -1).T).T.reshape(x0hat.shape)
    torch.testing.assert_close(local_map_exact(A, y, x0hat, 0.0), proj, rtol=0, atol=1e-10)
    norm_sq, _ = operator_norm_sq(A, x0hat, 100)
    torch.testing.assert_close(local_map(A, y, x0hat, 0.0, norm_sq, steps=200, lr=1.0), proj, rtol=0, atol=1e-9)


def test_cost_data_consistency_and_inner_solvers_agree():
    """NFE = N and no network VJP; at σ_y = 0 the returned local MAP satisfies ``A x = y``; with
    enough gradient steps the whole loop matches the closed-form loop under shared noise."""
    P = priors.CountingPrior(gaussian_prior(SHAPE, seed=4, scale=0.1))
    A = _operator("sr4_avgpool")
    x = P.sample(2, generator=torch.Generator().manual_seed(1))
    y = A.measure(x, 0.0, torch.Generator().manual_seed(2))
    kw = {"steps": 6, "sigma_max": 10.0, "sigma_min": 0.05}
    P.reset()
    exact = solvers.build("lmaps", inner="exact", **kw).solve(y, A, P, sigma_y=0.0, generator=gens(2))
    assert (P.nfe, P.vjp) == (6, 0)
    assert solvers.build("lmaps", **kw).nfe_estimate() == 6
    assert (A.forward(exact) - y).abs().max() < 1e-10
    grad = solvers.build("lmaps", inner_steps=300, **kw).solve(y, A, P, sigma_y=0.0, generator=gens(2))
    torch.testing.assert_close(grad, exact, rtol=0, atol=1e-9)


def test_noisy_inner_solvers_agree_and_differ_from_the_denoiser():
    """σ_y > 0 on a correlated Gaussian: gradient and closed-form loops agree; the measurement
    moves the estimate away from the unconditional denoiser path (k and σ_y matter)."""
    P = gaussian_prior(SHAPE, seed=4, scale=0.1)
    A = _operator("inpaint_random")
    x = P.sample(1, generator=torch.Generator().manual_seed(1))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(2))
    kw = {"steps": 5, "sigma_max": 10.0, "sigma_min": 0.05, "k": 10.0}
    exact = solvers.build("lmaps", inner="exact", **kw).solve(y, A, P, sigma_y=0.05, generator=gens(1))
    grad = solvers.build("lmaps", inner_steps=400, **kw).solve(y, A, P, sigma_y=0.05, generator=gens(1))
    torch.testing.assert_close(grad, exact, rtol=0, atol=1e-9)
    other_k = solvers.build("lmaps", inner="exact", **{**kw, "k": 0.0}).solve(y, A, P, sigma_y=0.05, generator=gens(1))
    assert (other_k - exact).abs().max() > 1e-4


def test_exact_inner_needs_an_svd_and_bad_parameters_raise():
    P = gaussian_prior(SHAPE, seed=4, scale=0.1)
    A = operators.build("phase_retrieval", SHAPE, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    y = A.forward(P.sample(1, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(solvers.SolverSkip, match="svd"):
        solvers.build("lmaps", inner="exact", steps=2).solve(y, A, P, sigma_y=0.0, generator=gens(1))
    out = solvers.build("lmaps", steps=3, inner_steps=3).solve(y, A, P, sigma_y=0.0, generator=gens(1))
    assert out.shape == (1, *SHAPE) and torch.isfinite(out).all()   # non-linear A: per-level ‖J‖²
    for bad, field in (({"lr": 2.0}, "lr"), ({"k": -1.0}, "k"), ({"zeta": 1.5}, "zeta"),
                       ({"inner": "adam"}, "inner"), ({"inner_steps": 0}, "inner_steps")):
        with pytest.raises(solvers.SolverError, match=field):
            solvers.build("lmaps", **bad)
