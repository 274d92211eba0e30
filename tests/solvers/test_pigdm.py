"""ΠGDM: cost formula, exact SVD guidance vector, approximate posterior mean, noiseless
consistency, batching."""

from __future__ import annotations

import pytest
import torch
from invbench.priors import CountingPrior
from invbench.solvers import SolverDiverged, SolverSkip
from invbench.solvers.pigdm import pigdm_guidance_vector

from invbench import operators, solvers
from tests.helpers.baselines import DenseSVDOperator, NaNPrior, dense_matrix, gaussian_prior, gens

SHAPE = (1, 4, 4)


def _inpaint():
    return operators.build("inpaint_random", SHAPE, torch.Generator().manual_seed(0))


def test_nfe_vjp_formula():
    P, A = CountingPrior(gaussian_prior(SHAPE)), _inpaint()
    y = A.forward(torch.zeros(2, *SHAPE, dtype=torch.float64))
    solvers.build("pigdm").solve(y, A, P, sigma_y=0.05, generator=gens(2))
    assert (P.nfe, P.vjp) == (100, 100)  # NFE = VJP = steps
    P.reset()
    solvers.build("pigdm", steps=25, eta=0.5).solve(y, A, P, sigma_y=0.0, generator=gens(2))
    assert (P.nfe, P.vjp) == (25, 25)


@pytest.mark.parametrize("name", ["sr4_avgpool", "deblur_uniform", "colorize"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.1])
def test_guidance_vector_matches_dense(name, sigma_y):
    """Aᵀ(r² AAᵀ + σ_y² I)⁻¹ r via the SVD equals the dense formula (σ_y = 0: Aᵀ(r² AAᵀ)⁺ r)."""
    shape = (3, 8, 8) if name == "colorize" else (1, 8, 8)
    A = operators.build(name, shape, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    M = dense_matrix(A)
    r = torch.randn(2, *A.out_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r2 = 0.3
    K = r2 * M @ M.T + sigma_y**2 * torch.eye(M.shape[0], dtype=torch.float64)
    Kinv = torch.linalg.pinv(K, hermitian=True, rtol=1e-10) if sigma_y == 0 else torch.linalg.inv(K)
    want = (r.reshape(2, -1) @ Kinv.T) @ M
    if sigma_y == 0:  # only the range of A is informative: project r onto it first
        P_range = M @ torch.linalg.pinv(M, rtol=1e-10)
        want = (r.reshape(2, -1) @ P_range.T @ Kinv.T) @ M
    got = pigdm_guidance_vector(A, r, r2, sigma_y).reshape(2, -1)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_guidance_zero_singular_value_noiseless():
    s = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    A = DenseSVDOperator(SHAPE, s, seed=0)
    r = torch.randn(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = pigdm_guidance_vector(A, r, 0.2, 0.0)
    assert torch.isfinite(v).all()
    want = A.adjoint(r @ torch.linalg.pinv(0.2 * A.matrix @ A.matrix.T).T)
    torch.testing.assert_close(v, want, rtol=1e-9, atol=1e-9)


def test_mean_roughly_right():
    """ΠGDM's isotropic p(x0|x_t) is an approximation: its sample mean is not exact, but it is
    much closer to the exact posterior mean than the prior mean is."""
    P, A = gaussian_prior(SHAPE, seed=1), _inpaint()
    x = P.sample(1, generator=torch.Generator().manual_seed(5))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(3))
    m = P.posterior(A, y, 0.05).mean().reshape(-1)
    R = 200
    out = solvers.build("pigdm", eta=1.0).solve(y.expand(R, -1).clone(), A, P, sigma_y=0.05, generator=gens(R))
    err = float((out.reshape(R, -1).mean(0) - m).norm())
    assert err < 0.35 * float((P.means[0] - m).norm())


def test_noiseless_data_consistency():
    """σ_y = 0: the last step adds A⁺(y − A x̂₀) through Jᵀ with J ≈ I at σ_{t=0} ≈ 0.01, so the
    observed pixels match y up to the denoiser's shrinkage O(σ²/λ_min)."""
    P, A = gaussian_prior(SHAPE, seed=2), _inpaint()
    x = P.sample(2, generator=torch.Generator().manual_seed(2))
    y = A.forward(x)
    out = solvers.build("pigdm").solve(y, A, P, sigma_y=0.0, generator=gens(2))
    assert (A.forward(out) - y).abs().max() < 1e-2


def test_batch_invariance_and_gaussian_init():
    P, A = gaussian_prior(SHAPE, seed=2), _inpaint()
    y = A.measure(P.sample(3, generator=torch.Generator().manual_seed(2)), 0.05, torch.Generator().manual_seed(0))
    for init in ("pinv", "gaussian"):
        S = solvers.build("pigdm", steps=20, eta=0.5, init=init)
        full = S.solve(y, A, P, sigma_y=0.05, generator=gens(3))
        one = S.solve(y[1:2], A, P, sigma_y=0.05, generator=gens(1, offset=1))
        torch.testing.assert_close(full[1:2], one, rtol=0, atol=1e-10)


def test_skip_and_diverged():
    P = gaussian_prior((1, 8, 8))
    A = operators.build("phase_retrieval", (1, 8, 8))
    with pytest.raises(SolverSkip):
        solvers.build("pigdm").solve(torch.zeros(1, *A.out_shape, dtype=torch.float64), A, P, sigma_y=0.0)
    A2 = _inpaint()
    with pytest.raises(SolverDiverged):
        solvers.build("pigdm").solve(torch.zeros(1, *A2.out_shape, dtype=torch.float64), A2, NaNPrior(SHAPE),
                                     sigma_y=0.0)


def test_svd_threshold_keeps_pinv_init_bounded():
    """deblur_gauss has singular values down to ~1e-11; with DDRM's threshold (op.params, 3e-2,
    as RED-diff's operators) A⁺y stays bounded; without it, the A⁺y initialisation explodes."""
    shape = (1, 16, 16)
    A = operators.build("deblur_gauss", shape).to(dtype=torch.float64)
    assert A.params.get("svd_threshold") == 0.03
    P = gaussian_prior(shape, diagonal=True)
    x = P.sample(1, generator=torch.Generator().manual_seed(0))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(0))
    out = solvers.build("pigdm", steps=20).solve(y, A, P, sigma_y=0.05, generator=gens(1))
    assert ((out - x) ** 2).mean() < 0.5
    raw = solvers.build("pigdm", steps=20, svd_threshold=0.0).solve(y, A, P, sigma_y=0.05, generator=gens(1))
    assert ((raw - x) ** 2).mean() > 100
