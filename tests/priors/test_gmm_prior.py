"""GaussianMixturePrior against independent computations (float64): importance-sampled
posterior means, autograd Jacobians, closed forms for K = 1, sample moments."""

import numpy as np
import pytest
import torch
from invbench.priors import GaussianMixturePrior, PriorError
from scipy.stats import multivariate_normal
from test_gmm_reference import mixture_logpdf, mixture_samples, small_gmm

from invbench import priors

D64 = torch.float64


def make_prior(d=4, K=3, seed=0, shape=None, **kw):
    w, m, C = small_gmm(d, K, seed, **kw)
    return GaussianMixturePrior(w, m, C, shape or (1, 1, d)), (w, m, C)


@pytest.mark.parametrize("sigma", [0.1, 0.4, 1.5])
def test_denoise_matches_importance_sampling(sigma):
    """D(x, σ) = E[x0 | x] estimated from 400k independent prior samples weighted by N(x; x0, σ²I);
    tolerance: 5 self-normalised-IS standard errors per coordinate."""
    p, (w, m, C) = make_prior(d=4, K=3, seed=1)
    x0 = mixture_samples(400_000, w, m, C, seed=2)
    rng = np.random.default_rng(3)
    xs = mixture_samples(3, w, m, C, seed=4) + sigma * rng.normal(size=(3, 4))
    D = p.denoise(torch.from_numpy(xs).reshape(3, 1, 1, 4), sigma).reshape(3, 4).numpy()
    for i, x in enumerate(xs):
        lw = -0.5 * ((x0 - x) ** 2).sum(1) / sigma**2
        wt = np.exp(lw - lw.max())
        wt /= wt.sum()
        est = wt @ x0
        se = np.sqrt((wt[:, None] ** 2 * (x0 - est) ** 2).sum(0))
        ess = 1.0 / (wt**2).sum()
        assert ess > 200, "importance sampler too degenerate to test anything"
        assert np.all(np.abs(D[i] - est) <= 5 * se + 1e-12), (D[i], est, se)


@pytest.mark.parametrize("sigma", [0.02, 0.3, 5.0])
def test_covariance_equals_tweedie_jacobian(sigma):
    p, _ = make_prior(d=16, K=4, seed=5, shape=(1, 4, 4))
    x = p.sample(3, generator=torch.Generator().manual_seed(0)) + sigma * torch.randn(
        3, 1, 4, 4, dtype=D64, generator=torch.Generator().manual_seed(1))
    cov = p.covariance(x, sigma)
    for b in range(3):
        J = torch.autograd.functional.jacobian(
            lambda z: p.denoise(z.reshape(1, 1, 4, 4), sigma).reshape(-1), x[b].reshape(-1))
        ref = sigma**2 * J
        rel = (cov[b] - ref).norm() / ref.norm()
        assert rel <= 1e-8, rel
        assert torch.allclose(cov[b], cov[b].T, atol=1e-14)
        assert torch.linalg.eigvalsh(cov[b]).min() > 0


def test_covariance_tweedie_on_fitted_digits():
    p = priors.build("gmm-digits")
    g = torch.Generator().manual_seed(0)
    x = p.sample(2, generator=g) + 0.2 * torch.randn(2, 1, 8, 8, dtype=D64, generator=g)
    cov = p.covariance(x, 0.2)
    J = torch.autograd.functional.jacobian(lambda z: p.denoise(z.reshape(1, 1, 8, 8), 0.2).reshape(-1),
                                           x[0].reshape(-1))
    assert (cov[0] - 0.04 * J).norm() / cov[0].norm() <= 1e-8


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.7])
def test_score_is_gradient_of_log_prob_and_log_prob_is_exact(sigma):
    p, (w, m, C) = make_prior(d=5, K=4, seed=7)
    x = torch.randn(6, 1, 1, 5, dtype=D64, generator=torch.Generator().manual_seed(2)) * 0.6
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.log_prob(xr, sigma).sum(), xr)
    assert torch.allclose(p.score(x, sigma), g, rtol=1e-10, atol=1e-10)
    ref = mixture_logpdf(x.reshape(6, 5).numpy(), w, m, C + sigma**2 * np.eye(5))
    assert np.allclose(p.log_prob(x, sigma).numpy(), ref, rtol=1e-12, atol=1e-10)
    if sigma > 0:  # docs/design.md §2: score = (D - x) / σ²
        assert torch.allclose(p.score(x, sigma), (p.denoise(x, sigma) - x) / sigma**2, atol=1e-9)


@pytest.mark.parametrize("sigma", [0.0, 0.3, 3.0])
def test_single_gaussian_closed_form(sigma):
    rng = np.random.default_rng(0)
    F = rng.normal(size=(3, 3))
    C = F @ F.T + 0.1 * np.eye(3)
    m = rng.normal(size=3)
    p = GaussianMixturePrior([1.0], m[None], C[None], (1, 1, 3))
    x = rng.normal(size=(4, 3))
    Cn = C + sigma**2 * np.eye(3)
    D_ref = m + (x - m) @ np.linalg.solve(Cn, C)  # C (C+σ²I)^{-1} (x - m), C symmetric
    cov_ref = C - C @ np.linalg.solve(Cn, C)
    xt = torch.from_numpy(x).reshape(4, 1, 1, 3)
    assert np.allclose(p.denoise(xt, sigma).reshape(4, 3).numpy(), D_ref, atol=1e-12)
    assert np.allclose(p.covariance(xt, sigma)[0].numpy(), cov_ref, atol=1e-12)
    assert np.allclose(p.log_prob(xt, sigma).numpy(), multivariate_normal(m, Cn).logpdf(x), atol=1e-11)


def test_sigma_forms_dtype_and_autograd():
    p, _ = make_prior(d=4, K=3, seed=9, shape=(1, 2, 2))
    x = torch.randn(3, 1, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor([0.1, 0.5, 2.0], dtype=D64)
    batched = p.denoise(x, sig)
    for i in range(3):
        assert torch.allclose(batched[i], p.denoise(x[i : i + 1], float(sig[i]))[0], atol=1e-14)
    out32 = p.denoise(x.float(), sig.float())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), batched, atol=1e-6)
    # solvers back-propagate through denoise: the VJP equals Jᵀv from the covariance
    xr = x.clone().requires_grad_(True)
    v = torch.randn_like(x)
    (g,) = torch.autograd.grad((p.denoise(xr, sig) * v).sum(), xr)
    cov = p.covariance(x, sig)
    ref = torch.einsum("bij,bi->bj", cov, v.reshape(3, 4)) / sig[:, None] ** 2
    assert torch.allclose(g.reshape(3, 4), ref, atol=1e-10)


def test_sample_moments():
    p, (w, m, C) = make_prior(d=3, K=3, seed=11)
    n = 200_000
    xs = p.sample(n, generator=torch.Generator().manual_seed(0)).reshape(n, 3).numpy()
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, C + np.einsum("ki,kj->kij", m - mean, m - mean))
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(xs.mean(0) - mean) < 5 * se)
    assert np.allclose(np.cov(xs.T), cov, atol=6 * np.sqrt(2 / n) * np.diag(cov).max())
    # same generator seed -> same samples
    a = p.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, p.sample(5, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, p.sample(5, generator=torch.Generator().manual_seed(2)))


def test_contract_attributes_and_errors():
    p, _ = make_prior(d=4, K=2, seed=0)
    assert p.capabilities == frozenset({"analytic"})
    assert p.sigma_min == 0.0 and p.sigma_max >= 80 and p.sigmas is None
    assert isinstance(p, priors.Prior)
    with pytest.raises(PriorError):
        p.denoise(torch.zeros(2, 1, 2, 2, dtype=D64), 0.1)
    with pytest.raises(PriorError):
        GaussianMixturePrior([1.0], np.zeros((1, 4)), -np.eye(4)[None], (1, 1, 4))
    with pytest.raises(PriorError):
        GaussianMixturePrior([1.0, 1.0], np.zeros((2, 4)), np.eye(4)[None], (1, 1, 4))
    counted = priors.CountingPrior(p)
    counted.denoise(torch.zeros(1, 1, 1, 4, dtype=D64), 0.3)
    assert counted.nfe == 1 and counted.capabilities == frozenset({"analytic"})
