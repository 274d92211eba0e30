"""DDRM: cost formula, exactness where it holds, data consistency, branch rules, batching."""

from __future__ import annotations

import pytest
import torch
from invbench.priors import CountingPrior
from invbench.solvers import SolverDiverged, SolverSkip
from invbench.solvers.schedules import geometric_sigmas

from invbench import operators, solvers
from tests.helpers.baselines import DenseSVDOperator, NaNPrior, gaussian_prior, gens

SHAPE = (1, 4, 4)


def _inpaint():
    return operators.build("inpaint_random", SHAPE, torch.Generator().manual_seed(0))


def test_nfe_vjp_formula():
    P, A = CountingPrior(gaussian_prior(SHAPE)), _inpaint()
    y = A.forward(torch.zeros(2, *SHAPE, dtype=torch.float64))
    out = solvers.build("ddrm").solve(y, A, P, sigma_y=0.05, generator=gens(2))
    assert out.shape == (2, *SHAPE)
    assert (P.nfe, P.vjp) == (20, 0)  # NFE = steps, VJP = 0
    P.reset()
    solvers.build("ddrm", steps=50).solve(y, A, P, sigma_y=0.05, generator=gens(2))
    assert (P.nfe, P.vjp) == (50, 0)


def test_exact_mean_independent_pixels_noiseless():
    """Independent pixels, σ_y = 0: the posterior of a missing pixel is its prior marginal and
    an observed pixel equals y; DDRM's null-space branch is unconditional DDIM(η) with the exact
    denoiser, whose mean is exact up to ∏ of contraction factors (≈ 0). MC check, 2000 seeds."""
    P, A = gaussian_prior(SHAPE, diagonal=True, seed=3), _inpaint()
    x = P.sample(1, generator=torch.Generator().manual_seed(1))
    y = A.forward(x)
    R = 2000
    out = solvers.build("ddrm").solve(y.expand(R, -1).clone(), A, P, sigma_y=0.0, generator=gens(R))
    out = out.reshape(R, -1)
    m = P.posterior(A, y, 0.0).mean().reshape(-1)
    miss = A.params["mask"].flatten() == 0
    se = (out.var(0) / R).sqrt()
    z = ((out.mean(0) - m) / se)[miss]
    assert z.abs().max() < 4.5, z
    # observed pixels: DDRM ends with D at the grid's last level σ_{t=0} ≈ 0.01, so y is
    # reproduced to O(σ_{t=0}), not exactly (see test_data_consistency_noiseless_limit)
    sig0 = float(solvers.schedules.ddpm_linear_sigmas()[0])
    assert (out[:, ~miss] - y).abs().max() < 6 * sig0


def test_mean_roughly_right_correlated():
    """Correlated Gaussian: DDRM is a variational approximation (not exact), but its sample
    mean is far closer to the exact posterior mean than the prior mean is, and gets closer
    with more steps (20 → 200)."""
    P, A = gaussian_prior(SHAPE, seed=1), _inpaint()
    x = P.sample(1, generator=torch.Generator().manual_seed(5))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(3))
    m = P.posterior(A, y, 0.05).mean().reshape(-1)
    R = 1000
    errs = []
    for steps in (20, 200):
        out = solvers.build("ddrm", steps=steps).solve(y.expand(R, -1).clone(), A, P, sigma_y=0.05, generator=gens(R))
        errs.append(float((out.reshape(R, -1).mean(0) - m).norm()))
    prior_err = float((P.means[0] - m).norm())
    assert errs[0] < 0.6 * prior_err
    assert errs[1] < errs[0]


def test_data_consistency_noiseless_limit():
    """σ_y = 0 and a schedule whose last level is 1e-5: the observed pixels of an inpainting
    measurement are reproduced to ≤ 1e-4 (the η_b = 1 branch puts y + σ z on them)."""
    P, A = gaussian_prior(SHAPE, seed=2), _inpaint()
    x = P.sample(3, generator=torch.Generator().manual_seed(2))
    y = A.forward(x)
    levels = tuple(float(s) for s in geometric_sigmas(20, 100.0, 1e-5))
    out = solvers.build("ddrm", sigmas=levels).solve(y, A, P, sigma_y=0.0, generator=gens(3))
    assert (A.forward(out) - y).abs().max() <= 1e-4


def test_batch_invariance():
    P, A = gaussian_prior(SHAPE, seed=2), _inpaint()
    x = P.sample(3, generator=torch.Generator().manual_seed(2))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(0))
    S = solvers.build("ddrm")
    full = S.solve(y, A, P, sigma_y=0.05, generator=gens(3))
    for i in range(3):
        one = S.solve(y[i : i + 1], A, P, sigma_y=0.05, generator=gens(1, offset=i))
        torch.testing.assert_close(full[i : i + 1], one, rtol=0, atol=1e-12)


def test_threshold_equals_zeroed_singular_value():
    """op.params['svd_threshold'] acts exactly like the operator having 0 in that slot
    (DDRM zeroes singular values below 3e-2 inside its singulars vector)."""
    P = gaussian_prior(SHAPE, seed=4)
    s = torch.tensor([1.0, 0.5, 0.02, 0.01, 0.3], dtype=torch.float64)
    A_thr = DenseSVDOperator(SHAPE, s, seed=1, params={"svd_threshold": 3e-2})
    A_zero = DenseSVDOperator(SHAPE, torch.where(s < 3e-2, 0.0, s), seed=1)
    x = P.sample(2, generator=torch.Generator().manual_seed(0))
    y = A_thr.measure(x, 0.05, torch.Generator().manual_seed(1))
    S = solvers.build("ddrm")
    a = S.solve(y, A_thr, P, sigma_y=0.05, generator=gens(2))
    b = S.solve(y, A_zero, P, sigma_y=0.05, generator=gens(2))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    c = S.solve(y, DenseSVDOperator(SHAPE, s, seed=1), P, sigma_y=0.05, generator=gens(2))
    assert (a - c).abs().max() > 1e-3  # the threshold does change the result


def test_skip_and_diverged():
    P = gaussian_prior((1, 8, 8))
    A = operators.build("phase_retrieval", (1, 8, 8))
    with pytest.raises(SolverSkip):
        solvers.build("ddrm").solve(torch.zeros(1, *A.out_shape, dtype=torch.float64), A, P, sigma_y=0.0)
    A2 = _inpaint()
    with pytest.raises(SolverDiverged):
        solvers.build("ddrm").solve(torch.zeros(1, *A2.out_shape, dtype=torch.float64), A2, NaNPrior(SHAPE),
                                    sigma_y=0.0)
