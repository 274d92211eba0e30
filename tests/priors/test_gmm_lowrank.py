"""LowRankGaussianMixturePrior and its exact posterior against independent computations (float64):
importance sampling, dense brute-force Bayes (numpy Kalman update per component), sample moments,
random restarts of L-BFGS. The reduced-size copy is a mixture fitted by the same code
(``fit_lowrank_gmm``) to 8×8 RGB crops of the bundled training images (d = 192); the full-size
``gmm-crops32`` checks are marked slow."""

import math

import numpy as np
import pytest
import torch
from invbench.bench import bundled
from invbench.priors import LowRankGaussianMixturePrior, PriorError
from invbench.priors.gmm_lowrank_fit import fit_lowrank_gmm, mean_log_likelihood
from scipy.optimize import minimize
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from invbench import operators, priors

D64 = torch.float64
DEMO_PRESETS = ("inpaint_random", "sr4_avgpool", "deblur_uniform", "denoise")


def random_prior(shape=(1, 4, 4), K=3, r=3, seed=0, spread=1.0) -> LowRankGaussianMixturePrior:
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    Q = torch.randn(K, d, r, generator=g, dtype=D64)
    lam = 0.05 + 0.3 * torch.rand(K, r, generator=g, dtype=D64)
    t2 = 0.005 + 0.01 * torch.rand(K, generator=g, dtype=D64)
    m = spread * 0.5 * torch.randn(K, d, generator=g, dtype=D64)
    w = 0.5 + torch.rand(K, generator=g, dtype=D64)
    return LowRankGaussianMixturePrior(w, m, Q, lam, t2, shape)


def dense_params(p):
    eye = torch.eye(p.d, dtype=D64)
    C = torch.stack([p.apply_cov(k, eye) for k in range(p.K)]).numpy()
    return p.weights.numpy(), p.means.numpy(), 0.5 * (C + C.transpose(0, 2, 1))


def matrix(A, d, shape):
    eye = torch.eye(d, dtype=D64).reshape(d, *shape)
    return A.forward(eye).reshape(d, -1).T.numpy()


@pytest.fixture(scope="module")
def reduced():
    """Same fit code path at d = 192: 1500 8×8 RGB crops of the TRAIN images, K = 3, r = 8."""
    X = (2 * bundled.train_crops(1500, 8, seed=0) - 1).reshape(1500, -1).double()
    par = fit_lowrank_gmm(X, 3, 8, n_iter=8, tol=0.05, seed=0)
    assert all(np.diff(par["log_lik"]) > -1e-6), "EM must not decrease the training log-likelihood"
    p = LowRankGaussianMixturePrior(par["weights"], par["means"], par["basis"], par["eigvals"], par["tau2"], (3, 8, 8))
    return p, X


@pytest.mark.parametrize("sigma", [0.1, 0.4, 1.5])
def test_denoise_matches_importance_sampling(sigma):
    """D(x, σ) against self-normalised importance sampling with 400k prior samples drawn by numpy
    from the dense covariances; 5 standard errors per coordinate."""
    p = random_prior(shape=(1, 2, 3), K=3, r=2, seed=1)
    w, m, C = dense_params(p)
    rng = np.random.default_rng(2)
    comp = rng.choice(len(w), size=400_000, p=w)
    x0 = np.concatenate([rng.multivariate_normal(m[k], C[k], size=int((comp == k).sum())) for k in range(len(w))])
    xs = x0[:3] + sigma * rng.normal(size=(3, 6))
    D = p.denoise(torch.from_numpy(xs).reshape(3, 1, 2, 3), sigma).reshape(3, 6).numpy()
    for i, x in enumerate(xs):
        lw = -0.5 * ((x0 - x) ** 2).sum(1) / sigma**2
        wt = np.exp(lw - lw.max())
        wt /= wt.sum()
        est = wt @ x0
        se = np.sqrt((wt[:, None] ** 2 * (x0 - est) ** 2).sum(0))
        assert 1.0 / (wt**2).sum() > 200, "importance sampler too degenerate to test anything"
        assert np.all(np.abs(D[i] - est) <= 5 * se + 1e-12), (D[i], est, se)


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.5, 3.0])
def test_reduced_copy_matches_dense_mixture(reduced, sigma):
    """Denoiser, score, noised log-density and Tweedie covariance equal the dense-covariance mixture."""
    p, X = reduced
    dense = p.dense()
    x = X[:5].reshape(5, 3, 8, 8) + sigma * torch.randn(5, 3, 8, 8, dtype=D64,
                                                        generator=torch.Generator().manual_seed(0))
    assert torch.allclose(p.denoise(x, sigma), dense.denoise(x, sigma), atol=1e-10)
    assert torch.allclose(p.log_prob(x, sigma), dense.log_prob(x, sigma), rtol=1e-10)
    assert torch.allclose(p.score(x, sigma), dense.score(x, sigma), rtol=1e-8, atol=1e-6)
    if sigma > 0:
        assert torch.allclose(p.covariance(x, sigma), dense.covariance(x, sigma), atol=1e-10)
    lp = torch.from_numpy(np.array([multivariate_normal(dense.means[k].numpy(), dense.covariances[k].numpy()
                                                        + sigma**2 * np.eye(p.d)).logpdf(x.reshape(5, -1).numpy())
                                    for k in range(p.K)])).T
    ref = torch.logsumexp(lp + torch.log(p.weights), dim=1)
    assert torch.allclose(p.log_prob(x, sigma), ref, rtol=1e-9)
    stored = {"weights": p.weights, "means": p.means, "basis": p.basis, "eigvals": p.eigvals, "tau2": p.tau2}
    if sigma == 0:
        assert math.isclose(mean_log_likelihood(X[:5], stored), float(ref.mean()), rel_tol=1e-9)


def test_denoiser_autograd_jacobian_is_tweedie(reduced):
    p, X = reduced
    x = X[:1].reshape(1, 3, 8, 8).clone()
    J = torch.autograd.functional.jacobian(lambda v: p.denoise(v.reshape(1, 3, 8, 8), 0.2).reshape(-1), x.reshape(-1))
    assert torch.allclose(0.04 * J, p.covariance(x, 0.2)[0], atol=1e-10)


def brute_posterior(p, A, y, sigma_y):
    """Dense numpy Bayes: per component Kalman update and evidence N(y; A m, A C Aᵀ + σ²I)."""
    w, m, C = dense_params(p)
    M = matrix(A, p.d, p.image_shape)
    yf = y.reshape(y.shape[0], -1).numpy()
    means, covs, logw = [], [], []
    for k in range(len(w)):
        S = M @ C[k] @ M.T + sigma_y**2 * np.eye(M.shape[0])
        G = np.linalg.solve(S, M @ C[k]).T
        means.append(m[k] + (yf - M @ m[k]) @ G.T)
        covs.append(C[k] - G @ M @ C[k])
        logw.append(np.log(w[k]) + multivariate_normal(M @ m[k], S).logpdf(yf))
    logw = np.array(logw).reshape(len(w), -1).T
    logw -= logsumexp(logw, axis=1, keepdims=True)
    return np.exp(logw), np.stack(means, 1), np.stack(covs)


@pytest.mark.parametrize("preset", DEMO_PRESETS)
def test_reduced_posterior_matches_brute_force(reduced, preset):
    """Weights, component means, posterior mean and covariance, and the normalised log density."""
    p, X = reduced
    A = operators.build(preset, image_shape=(3, 8, 8), generator=torch.Generator().manual_seed(3)).to(dtype=D64)
    x0 = X[100:103].reshape(3, 3, 8, 8)
    sigma_y = 0.1
    y = A.measure(x0, sigma_y, torch.Generator().manual_seed(4))
    post = p.posterior(A, y, sigma_y)
    w, mu_k, covs = brute_posterior(p, A, y, sigma_y)
    assert np.allclose(post.weights.numpy(), w, atol=1e-9)
    assert np.allclose(post.means.numpy(), mu_k, atol=1e-9)
    mean = (w[:, :, None] * mu_k).sum(1)
    assert np.allclose(post.mean().reshape(3, -1).numpy(), mean, atol=1e-9)
    cov = np.einsum("bk,kij->bij", w, covs) + np.einsum("bk,bki,bkj->bij", w, mu_k - mean[:, None],
                                                        mu_k - mean[:, None])
    assert np.allclose(post.covariance().numpy(), cov, atol=1e-9)
    for b in range(3):
        lp = logsumexp([np.log(w[b, k]) + multivariate_normal(mu_k[b, k], covs[k], allow_singular=False).logpdf(
            x0[b].reshape(-1).numpy()) for k in range(p.K)])
        assert math.isclose(float(post.log_prob(x0)[b]), lp, rel_tol=1e-8, abs_tol=1e-7)


def test_posterior_samples_have_exact_moments():
    """20 000 exact samples: mean and covariance within sampling error of the closed form."""
    p = random_prior(shape=(1, 4, 4), K=2, r=3, seed=3, spread=0.3)
    A = operators.build("inpaint_random", image_shape=(1, 4, 4),
                        generator=torch.Generator().manual_seed(1)).to(dtype=D64)
    y = A.measure(p.sample(1, generator=torch.Generator().manual_seed(5)), 0.2, torch.Generator().manual_seed(6))
    post = p.posterior(A, y, 0.2)
    xs = post.sample(20_000, generator=torch.Generator().manual_seed(7)).reshape(20_000, -1)
    cov = post.covariance()[0]
    se = torch.sqrt(torch.diagonal(cov) / 20_000)
    assert ((xs.mean(0) - post.mean().reshape(-1)).abs() <= 5 * se).all()
    emp = torch.cov(xs.T)
    assert (emp - cov).abs().max() <= 0.05 * torch.diagonal(cov).max()


@pytest.mark.parametrize("preset", ["sr4_avgpool", "inpaint_random"])
def test_map_beats_random_restarts(preset):
    """Overlapping mixture: no L-BFGS optimum of 100 random restarts (independent numpy objective)
    is better than ``map()`` or missing from ``modes()``; the gradient vanishes at the MAP."""
    p = random_prior(shape=(1, 4, 4), K=4, r=3, seed=5, spread=0.4)
    w, m, C = dense_params(p)
    A = operators.build(preset, image_shape=(1, 4, 4), generator=torch.Generator().manual_seed(2)).to(dtype=D64)
    M = matrix(A, 16, (1, 4, 4))
    sigma_y = 0.3
    x_true = torch.from_numpy(0.5 * (m[0] + m[1])).reshape(1, 1, 4, 4)
    y = A.measure(x_true, sigma_y, torch.Generator().manual_seed(8))
    yf = y.reshape(-1).numpy()
    post = p.posterior(A, y, sigma_y)
    best, modes = post.map(return_all=True)
    Ci = np.linalg.inv(C)
    # log w_k + log N(x; m_k, C_k), vectorised over k (checked once against scipy below)
    const = np.log(w) - 0.5 * (np.linalg.slogdet(C)[1] + m.shape[1] * np.log(2 * np.pi))

    def logjoint(x):
        d = x - m
        return const - 0.5 * np.einsum("ki,kij,kj->k", d, Ci, d)

    x_check = m[0] + 0.1
    assert np.allclose(logjoint(x_check), [np.log(w[k]) + multivariate_normal(m[k], C[k]).logpdf(x_check)
                                           for k in range(len(w))], rtol=1e-12, atol=1e-12)

    def f(x):
        r = M @ x - yf
        return -logsumexp(logjoint(x)) + 0.5 * r @ r / sigma_y**2

    def g(x):
        lp = logjoint(x)
        gam = np.exp(lp - logsumexp(lp))
        return np.einsum("k,kij,kj->i", gam, Ci, x - m) + M.T @ (M @ x - yf) / sigma_y**2

    xm = best.reshape(-1).numpy()
    assert np.abs(g(xm)).max() < 1e-7
    rng = np.random.default_rng(0)
    found = [minimize(f, x0, jac=g, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15})
             for x0 in rng.uniform(-1.5, 1.5, size=(100, 16))]
    fbest = min(r.fun for r in found)
    assert f(xm) <= fbest + 1e-8
    pts = modes[0].points.reshape(-1, 16).numpy()
    for r in found:
        if r.success and np.abs(g(r.x)).max() < 1e-5:
            assert np.min(np.linalg.norm(pts - r.x, axis=1)) < 1e-4, (r.fun, fbest)
    assert np.all(np.diff(modes[0].log_probs.numpy()) <= 0)
    assert torch.allclose(modes[0].log_probs, post.log_prob(modes[0].points.unsqueeze(0))[0])


def test_errors():
    p = random_prior()
    A = operators.build("denoise", image_shape=(1, 4, 4), generator=torch.Generator()).to(dtype=D64)
    y = torch.zeros(1, 1, 4, 4, dtype=D64)
    with pytest.raises(PriorError, match="sigma_y"):
        p.posterior(A, y, 0.0)
    with pytest.raises(PriorError, match="in_shape"):
        p.posterior(operators.build("denoise", image_shape=(1, 2, 8), generator=torch.Generator()), y, 0.1)
    with pytest.raises(PriorError, match="eigval"):
        LowRankGaussianMixturePrior([1.0], torch.zeros(1, 16), torch.randn(1, 16, 2), [[0.1, 0.001]], [0.01], (1, 4, 4))
    with pytest.raises(PriorError, match="input shape"):
        p.denoise(torch.zeros(2, 3, 4, 4), 0.1)


# ----------------------------------------------------------------------------- full size (slow)


@pytest.mark.slow
@pytest.mark.parametrize("preset", DEMO_PRESETS)
def test_crops32_posterior_matches_dense_bayes(preset):
    """gmm-crops32 (d = 3072): weights and component means against the dense Kalman update for two
    test crops; the MAP is stationary; posterior samples average to the mean."""
    p = priors.build("gmm-crops32")
    A = operators.build(preset, image_shape=(3, 32, 32), generator=torch.Generator().manual_seed(0)).to(dtype=D64)
    x0 = 2 * bundled.heldout_crops(2, 32, seed=0, split="test").double() - 1
    y = A.measure(x0, 0.1, torch.Generator().manual_seed(1))
    post = p.posterior(A, y, 0.1)
    M = torch.from_numpy(matrix(A, p.d, p.image_shape))
    yf = y.reshape(2, -1)
    logw = []
    for k in range(p.K):
        C = p.apply_cov(k, torch.eye(p.d, dtype=D64))
        C = 0.5 * (C + C.T)
        S = M @ C @ M.T + 0.01 * torch.eye(M.shape[0], dtype=D64)
        Ls = torch.linalg.cholesky(S)
        res = yf - M @ p.means[k]
        sol = torch.cholesky_solve(res.T, Ls)
        mu = p.means[k] + (C @ M.T @ sol).T
        assert torch.allclose(post.means[:, k], mu, atol=1e-8)
        logw.append(torch.log(p.weights[k]) - 0.5 * (res.T * sol).sum(0) - torch.log(torch.diagonal(Ls)).sum())
    lw = torch.stack(logw, 1)
    assert torch.allclose(post.weights, torch.softmax(lw, 1), atol=1e-8)
    xm = post.map()
    grad = p.score(xm, 0.0) + (A.adjoint(y - A.forward(xm)) / 0.01)
    assert grad.abs().max() < 1e-6 * (1 + (A.adjoint(y) / 0.01).abs().max())
    xs = post.sample(64, generator=torch.Generator().manual_seed(2))
    assert (xs.mean(1) - post.mean()).pow(2).mean().sqrt() < 0.05
