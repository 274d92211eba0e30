"""DiffPIR: the closed-form data step is the proximal solution, the schedule is the code's
quadratic one, and the whole loop agrees with ``deepinv.sampling.DiffPIR`` (0.5.0) under shared
noise. Unit map to deepinv: pixel x ↔ model 2x − 1, deepinv σ ↔ model 2σ, deepinv ``lambda_`` ↔
our ``λ/2`` (its proximal step weighs the prior term by 2ρ, see solvers/diffpir.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from invbench.bench import bundled
from invbench.operators import conventions as cv
from invbench.operators.base import svd_pinv
from invbench.solvers import diffpir as D
from invbench.solvers.ddpm import quad_timesteps
from invbench.solvers.schedules import ddpm_linear_sigmas

from invbench import operators, priors, solvers
from tests.helpers.baselines import (
    DenseSVDOperator,
    dense_matrix,
    gaussian_prior,
    gens,
    make_dinv_denoiser,
)


def test_quadratic_schedule_is_the_codes():
    # main_ddpir.py: seq = int(sqrt(linspace(0, T², N))), seq[-1] -= 1; levels sigmas[seq[i]]
    # with sigmas[k] = grid[T-1-k]
    assert quad_timesteps(1000, 20)[:5] == [0, 229, 324, 397, 458]
    assert quad_timesteps(1000, 20)[-1] == 999
    P = gaussian_prior((1, 4, 4))
    lv = solvers.build("diffpir", steps=20).levels(P)
    grid = ddpm_linear_sigmas()
    assert len(lv) == 20 and lv[0] == float(grid[999]) and lv[-1] == float(grid[0])
    assert all(a > b for a, b in itertools.pairwise(lv))
    with pytest.raises(solvers.SolverError):
        quad_timesteps(1000, 1)


def test_data_step_is_the_proximal_solution():
    """The data step equals argmin_u ‖y − A u‖² + ρ‖u − x̂₀‖² = (AᵀA + ρI)⁻¹(Aᵀy + ρ x̂₀),
    solved densely, for a random operator with a null space."""
    shape = (1, 3, 4)
    s = torch.tensor([2.0, 1.0, 0.5, 0.1, 1e-3], dtype=torch.float64)
    A = DenseSVDOperator(shape, s, seed=3)
    M = dense_matrix(A)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    y = torch.randn(2, s.numel(), generator=g, dtype=torch.float64)
    for rho in (1e-4, 0.3, 50.0):
        got = D.proximal_data_step(A, x0, y, rho).reshape(2, -1)
        want = torch.linalg.solve(M.T @ M + rho * torch.eye(M.shape[1], dtype=torch.float64),
                                  (y @ M + rho * x0.reshape(2, -1)).T).T
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _shared_problem():
    """Inpainting on a Gaussian prior with σ_y on the DDPM grid, so that our initialisation
    (weights from the grid level nearest σ_y) and deepinv's (from σ_y) coincide exactly."""
    deepinv = pytest.importorskip("deepinv")
    shape = (1, 4, 4)
    P = gaussian_prior(shape, seed=1, scale=0.15)
    A = operators.build("inpaint_random", shape, torch.Generator().manual_seed(0))
    mask = A.params["mask"].reshape(1, *shape).to(torch.float64)
    x = P.sample(1, generator=torch.Generator().manual_seed(5)).clamp(-0.9, 0.9)
    sigma_y = float(ddpm_linear_sigmas()[30])  # model units; deepinv's pixel σ is half of it
    phys = deepinv.physics.Inpainting(img_size=shape, mask=mask,
                                      noise_model=deepinv.physics.GaussianNoise(sigma_y / 2))
    torch.manual_seed(7)
    y_pix = phys((x + 1) / 2) * mask
    y_model = (2 * y_pix - 1).reshape(1, -1)[:, mask.flatten() > 0]
    return deepinv, P, A, phys, y_pix, y_model, sigma_y


@pytest.mark.parametrize(("zeta", "lam"), [(0.3, 3.5), (1.0, 0.5), (0.0, 3.5)])
def test_agrees_with_deepinv_under_shared_noise(zeta, lam):
    """Same denoiser, operator, levels and noise stream (one image, seed k: deepinv's global RNG
    and our generator give the same draws in the same order): the outputs agree to the float32
    round-off of deepinv's ᾱ table (~1e-7), for pure re-noising (ζ = 1), the default mix and the
    deterministic ζ = 0."""
    torch.set_default_dtype(torch.float64)
    try:
        deepinv, P, A, phys, y_pix, y_model, sigma_y = _shared_problem()
        model = deepinv.sampling.DiffPIR(make_dinv_denoiser(P), deepinv.optim.data_fidelity.L2(),
                                         sigma=sigma_y / 2, max_iter=20, zeta=zeta, lambda_=lam)
        levels = tuple(model.sigmas[model.seq].tolist())
        # deepinv starts from x_init (pixel units); give it our start A⁺y / sqrt(ᾱ_y)
        start = svd_pinv(A.svd, y_model, A.in_shape) * math.sqrt(1 + sigma_y**2)
        out_d = 2 * model(y_pix, phys, seed=11, x_init=(start + 1) / 2) - 1
    finally:
        torch.set_default_dtype(torch.float32)
    ours = solvers.build("diffpir", sigmas=levels, lambda_=2 * lam, zeta=zeta)
    out_o = ours.solve(y_model, A, P, sigma_y=sigma_y, generator=[torch.Generator().manual_seed(11)])
    assert (out_o - out_d).abs().max().item() < 1e-6
    # and a λ that does not follow the map disagrees (the test can fail)
    other = solvers.build("diffpir", sigmas=levels, lambda_=lam, zeta=zeta)
    out_x = other.solve(y_model, A, P, sigma_y=sigma_y, generator=[torch.Generator().manual_seed(11)])
    assert (out_x - out_d).abs().max().item() > 1e-3


def test_batch_invariance_and_cost():
    """One generator per image: a batch of two equals two single solves; NFE = N, VJP = 0."""
    P = priors.CountingPrior(gaussian_prior((1, 4, 4), seed=2))
    A = operators.build("sr4_avgpool", (1, 4, 4), torch.Generator().manual_seed(0))
    x = P.sample(2, generator=torch.Generator().manual_seed(1))
    y = A.measure(x, 0.1, torch.Generator().manual_seed(2))
    s = solvers.build("diffpir", steps=12)
    P.reset()
    both = s.solve(y, A, P, sigma_y=0.1, generator=gens(2))
    assert (P.nfe, P.vjp) == (12, 0)  # one network call per level for the whole batch
    one = torch.cat([s.solve(y[i:i + 1], A, P, sigma_y=0.1, generator=gens(1, offset=i)) for i in range(2)])
    torch.testing.assert_close(both, one, rtol=0, atol=1e-12)


def test_presets_follow_the_released_configs():
    assert D.DiffPIR.preset_for_task("inpaint_random") == "paper-inpaint"
    assert D.DiffPIR.preset_for_task("sr4_bicubic") == "paper-sr"
    assert D.DiffPIR.preset_for_task("deblur_gauss") == "default"
    p = D.DiffPIR.from_preset("paper-inpaint").params
    assert (p.steps, p.lambda_, p.zeta) == (20, 1.0, 1.0)
    p = D.DiffPIR.from_preset("default").params
    assert (p.steps, p.lambda_, p.zeta) == (100, 7.0, 0.3)
    for bad in ({"zeta": 1.5}, {"lambda_": 0.0}, {"init": "zeros"}):
        with pytest.raises(solvers.SolverError):
            solvers.build("diffpir", **bad)


@pytest.mark.slow
def test_psnr_matches_deepinv_on_small_cpu_crops():
    """Acceptance: on 16 test crops (small-cpu prior, float32, 50 % inpainting, pixel σ ≈ 0.05,
    20 steps, the default ζ), ours and deepinv's DiffPIR run with the same noise per image give
    the same PSNR: mean Δ within ±0.2 dB (measured: ~1e-3 dB; the outputs differ by float32
    round-off only)."""
    deepinv = pytest.importorskip("deepinv")
    from invbench.bench.metrics.image import psnr

    P = priors.build("small-cpu")
    n = 16
    xp = bundled.heldout_crops(n, 32, seed=0, split="test")
    x = cv.pixel_to_model(xp)
    A = operators.build("inpaint_random", (3, 32, 32), torch.Generator().manual_seed(0))
    mask = A.params["mask"].reshape(1, 32, 32).expand(3, 32, 32).to(torch.float32)
    sigma_y = float(ddpm_linear_sigmas()[26])  # ≈ 0.0987 model units, a grid level (see _shared_problem)
    phys = deepinv.physics.Inpainting(img_size=(3, 32, 32), mask=mask,
                                      noise_model=deepinv.physics.GaussianNoise(sigma_y / 2))
    y = A.measure(x, sigma_y, torch.Generator().manual_seed(1))
    y_pix = torch.zeros(n, 3 * 32 * 32)
    y_pix[:, mask.flatten() > 0] = (y + 1) / 2
    y_pix = y_pix.reshape(n, 3, 32, 32)
    model = deepinv.sampling.DiffPIR(make_dinv_denoiser(P), deepinv.optim.data_fidelity.L2(),
                                     sigma=sigma_y / 2, max_iter=20, zeta=0.3, lambda_=3.5)
    levels = tuple(model.sigmas[model.seq].tolist())
    start = svd_pinv(A.svd, y, A.in_shape) * math.sqrt(1 + sigma_y**2)
    with torch.no_grad():
        out_d = torch.cat([model(y_pix[i:i + 1], phys, seed=100 + i, x_init=(start[i:i + 1] + 1) / 2)
                           for i in range(n)])
    ours = solvers.build("diffpir", sigmas=levels, lambda_=7.0, zeta=0.3)
    out_o = cv.model_to_pixel(ours.solve(y, A, P, sigma_y=sigma_y, generator=gens(n, offset=100)))
    d = psnr(out_o.clamp(0, 1), xp) - psnr(out_d.clamp(0, 1), xp)
    assert abs(float(d.mean())) <= 0.2, f"ΔPSNR {float(d.mean()):+.3f} dB"
    assert float(d.abs().max()) < 0.05 and float((out_o - out_d).abs().max()) < 1e-3
