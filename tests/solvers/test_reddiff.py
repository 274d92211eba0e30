"""RED-diff against a short port of the reference loop (``NVlabs/RED-diff`` 66482f2,
``algos/reddiff.py`` ``REDDIFF.sample`` with the released ``_configs/algo/reddiff.yaml``: awd,
sigma_x0 = 0, eta = 0, linear denoise-term weight), written here in the code's VP form with an
ε-network built from our denoiser, under shared noise."""

from __future__ import annotations

import math

import pytest
import torch
from invbench.operators.base import svd_pinv
from invbench.solvers.ddpm import sampling_sigmas, thresholded_singular_values

from invbench import operators, priors, solvers
from tests.helpers.baselines import gaussian_prior, gens


def reference_reddiff(y, H, prior, sigmas, *, lam, lr, generator):
    """The released loop for one image (batch 1), line by line in VP form: ``alpha_t`` = ᾱ_t,
    ``model(xt, t)`` = ε̂ of the VP state, ``H.H`` = A, ``H.H_pinv`` = A⁺ (thresholded). The
    code's ``noise_x0`` is multiplied by ``sigma_x0 = 0`` and is not drawn here."""
    s_thr = thresholded_singular_values(H, None, y)
    mu = svd_pinv(H.svd, y, H.in_shape, s_thr).detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    x0_pred = mu
    for sigma in sigmas:
        alpha_t = 1.0 / (1.0 + sigma**2)
        noise_xt = torch.randn(mu.shape[1:], generator=generator, dtype=mu.dtype)[None]
        x0_pred = mu + 0.0
        xt = math.sqrt(alpha_t) * x0_pred + math.sqrt(1 - alpha_t) * noise_xt
        with torch.no_grad():  # ε-network of the VP state from the VE denoiser
            x_ve = xt / math.sqrt(alpha_t)
            et = (x_ve - prior.denoise(x_ve, torch.full((1,), sigma, dtype=mu.dtype))) / sigma
        e_obs = y - H.forward(x0_pred)
        loss_obs = (e_obs**2).mean() / 2
        loss_noise = torch.mul((et - noise_xt).detach(), x0_pred).mean()
        snr_inv = math.sqrt(1 - alpha_t) / math.sqrt(alpha_t)
        loss = lam * snr_inv * loss_noise + 1.0 * loss_obs
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return x0_pred.detach()


@pytest.mark.parametrize("task", ["inpaint_random", "sr4_avgpool", "deblur_uniform"])
def test_matches_the_reference_loop_under_shared_noise(task):
    P = gaussian_prior((1, 8, 8), seed=4, scale=0.1)
    A = operators.build(task, (1, 8, 8), torch.Generator().manual_seed(0))
    x = P.sample(2, generator=torch.Generator().manual_seed(1))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(2))
    ours = solvers.build("reddiff", steps=25, lr=0.05).solve(y, A, P, sigma_y=0.05, generator=gens(2))
    sig = sampling_sigmas(P, 25)
    ref = torch.cat([reference_reddiff(y[i:i + 1], A, P, sig, lam=0.25, lr=0.05, generator=gens(1, offset=i)[0])
                     for i in range(2)])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    # the loop moved μ away from its start (the comparison is not vacuous)
    start = svd_pinv(A.svd, y, A.in_shape, thresholded_singular_values(A, None, y))
    assert (ours - start).abs().max() > 1e-2


def test_cost_and_noiseless_consistency():
    """NFE = N, VJP = 0; on noiseless inpainting of a Gaussian the data term keeps the kept pixels
    close to y (Adam's steps shrink with the data residual)."""
    P = priors.CountingPrior(gaussian_prior((1, 8, 8), seed=4, scale=0.1))
    A = operators.build("inpaint_random", (1, 8, 8), torch.Generator().manual_seed(0))
    x = P.sample(1, generator=torch.Generator().manual_seed(1))
    y = A.measure(x, 0.0, torch.Generator().manual_seed(2))
    P.reset()
    out = solvers.build("reddiff", steps=50).solve(y, A, P, sigma_y=0.0, generator=gens(1))
    assert (P.nfe, P.vjp) == (50, 0)
    assert (A.forward(out) - y).abs().max() < 0.05
    for bad in ({"lr": 0.0}, {"lambda_": -1.0}):
        with pytest.raises(solvers.SolverError):
            solvers.build("reddiff", **bad)
