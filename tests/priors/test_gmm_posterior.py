"""Exact GMM posterior p(x0 | y) against brute-force Bayes (grids in d = 2, importance sampling in
d = 4, closed forms for K = 1) and the MAP against many random restarts of a plain optimiser;
noisy (σ_y = 0.1) and noiseless (σ_y = 1e-6 and 0) measurements. float64 throughout."""

import numpy as np
import pytest
import torch
from invbench.priors import GaussianMixturePrior, PriorError
from scipy.optimize import minimize
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from test_gmm_reference import (
    MatrixOperator,
    mixture_grad,
    mixture_logpdf,
    mixture_objective,
    mixture_samples,
    small_gmm,
)

from invbench import operators, priors

D64 = torch.float64


def params(p):
    return p.weights.numpy(), p.means.numpy(), p.covariances.numpy()


# --------------------------------------------------------------------------- d = 2 on a grid
A2 = np.array([[1.0, 0.6]])
X_TRUE2 = np.array([0.05, -0.1])


@pytest.fixture(scope="module")
def prior2():
    return priors.build("gmm-synthetic-2")


def measurement2(sigma_y):
    return A2 @ X_TRUE2 + (0.02 if sigma_y > 0 else 0.0)


@pytest.fixture(scope="module")
def grid2(prior2):
    w, m, C = params(prior2)
    h = 0.004  # component std >= 0.02: the midpoint rule on Gaussians is spectrally accurate
    t = np.arange(-1.3, 1.3, h) + h / 2
    X = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    y = measurement2(0.1)
    lp = mixture_logpdf(X, w, m, C) - 0.5 * ((X @ A2.T - y) ** 2).sum(1) / 0.1**2
    logZ = logsumexp(lp) + 2 * np.log(h)
    P = np.exp(lp - logsumexp(lp))
    return {"t": t, "h": h, "X": X, "P": P, "logZ": logZ, "lp": lp}


def test_posterior_noisy_d2_matches_grid(prior2, grid2):
    post = prior2.posterior(MatrixOperator(A2, (1, 1, 2)), torch.tensor(measurement2(0.1))[None], 0.1)
    X, P = grid2["X"], grid2["P"]
    mean = P @ X
    cov = (X - mean).T @ ((X - mean) * P[:, None])
    assert np.allclose(post.mean().reshape(2).numpy(), mean, atol=1e-7)
    assert np.allclose(post.covariance()[0].numpy(), cov, atol=1e-7)
    # normalised log density
    pts = torch.tensor(X[np.argsort(-P)[[0, 500, 5000]]]).reshape(1, 3, 1, 1, 2)
    ref = (grid2["lp"][np.argsort(-P)[[0, 500, 5000]]] - grid2["logZ"])
    assert np.allclose(post.log_prob(pts)[0].numpy(), ref, atol=1e-7)
    # component weights: posterior mass of each component
    w, m, C = params(prior2)
    lj = np.stack([np.log(w[k]) + multivariate_normal(m[k], C[k]).logpdf(X) for k in range(len(w))], 1)
    lj += (grid2["lp"] - mixture_logpdf(X, w, m, C))[:, None]
    mass = np.exp(logsumexp(lj, axis=0) - logsumexp(lj))
    assert np.allclose(post.weights[0].numpy(), mass, atol=1e-7)
    assert (mass > 0.05).sum() >= 2, "test problem should be multimodal"


def _ks_against_grid(samples, t, h, pmf_edges_cdf):
    """Kolmogorov–Smirnov distance between samples and a CDF known at cell edges."""
    edges = np.concatenate([[t[0] - h / 2], t + h / 2])
    s = np.sort(samples)
    F = np.interp(s, edges, pmf_edges_cdf)
    n = len(s)
    return max(np.max(np.arange(1, n + 1) / n - F), np.max(F - np.arange(n) / n))


def test_posterior_samples_noisy_d2(prior2, grid2):
    post = prior2.posterior(MatrixOperator(A2, (1, 1, 2)), torch.tensor(measurement2(0.1))[None], 0.1)
    n = 20_000
    xs = post.sample(n, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (1, n, 1, 1, 2)
    xs = xs.reshape(n, 2).numpy()
    P = grid2["P"].reshape(len(grid2["t"]), len(grid2["t"]))
    for axis in (0, 1):
        marg = P.sum(1 - axis)
        ks = _ks_against_grid(xs[:, axis], grid2["t"], grid2["h"], np.concatenate([[0], np.cumsum(marg)]))
        assert ks < 1.95 / np.sqrt(n), ks  # KS critical value at level 1e-3
    X = grid2["X"]
    mean = grid2["P"] @ X
    sd = np.sqrt(grid2["P"] @ (X - mean) ** 2)
    assert np.all(np.abs(xs.mean(0) - mean) < 5 * sd / np.sqrt(n))


@pytest.mark.parametrize("sigma_y", [1e-6, 0.0])
def test_posterior_noiseless_d2_matches_line_integral(prior2, sigma_y):
    """σ_y -> 0: the posterior lives on {A x = y}; brute force on a fine 1-D grid along that line."""
    w, m, C = params(prior2)
    y = measurement2(0.0)
    xp = A2.T @ np.linalg.solve(A2 @ A2.T, y)
    nvec = np.array([-0.6, 1.0]) / np.hypot(0.6, 1.0)
    h = 1e-4
    c = np.arange(-2.0, 2.0, h)
    lp = mixture_logpdf(xp + c[:, None] * nvec, w, m, C)
    P = np.exp(lp - logsumexp(lp))
    mean_c = P @ c
    post = prior2.posterior(MatrixOperator(A2, (1, 1, 2)), torch.tensor(y)[None], sigma_y)
    mean = post.mean().reshape(2).numpy()
    assert np.allclose(mean, xp + mean_c * nvec, atol=1e-6)
    n = 20_000
    xs = post.sample(n, generator=torch.Generator().manual_seed(1)).reshape(n, 2).numpy()
    assert np.abs(xs @ A2.T - y).max() < 1e-4
    ks = _ks_against_grid((xs - xp) @ nvec, c + h / 2, h, np.concatenate([[0], np.cumsum(P)]))
    assert ks < 1.95 / np.sqrt(n), ks
    if sigma_y == 0:  # density on the line (w.r.t. arc length), normalised
        idx = np.argsort(-P)[[0, 300, 3000]]
        pts = torch.tensor(xp + c[idx, None] * nvec).reshape(1, 3, 1, 1, 2)
        ref = lp[idx] - (logsumexp(lp) + np.log(h))
        assert np.allclose(post.log_prob(pts)[0].numpy(), ref, atol=1e-6)
    # MAP: the best point on the line (grid search then 1-D refinement)
    best, modes = post.map(return_all=True)
    i = np.argmax(lp)
    res = minimize(lambda s: -mixture_logpdf(xp + s * nvec, w, m, C)[0], x0=[c[i]], method="Nelder-Mead",
                   options={"xatol": 1e-12, "fatol": 1e-14})
    cmap = (best.reshape(2).numpy() - xp) @ nvec
    assert abs(cmap - res.x[0]) < 1e-6
    assert len(modes[0].points) >= 2  # bimodal along this line
    # every local maximum of the grid profile is among the reported modes
    loc = np.nonzero((lp[1:-1] > lp[:-2]) & (lp[1:-1] > lp[2:]))[0] + 1
    found = (modes[0].points.reshape(-1, 2).numpy() - xp) @ nvec
    for j in loc:
        assert np.min(np.abs(found - c[j])) < 2 * h


# --------------------------------------------------------------------------- d = 4
@pytest.fixture(scope="module")
def setup4():
    p = priors.build("gmm-synthetic-4")
    A = np.array([[1.0, -0.5, 0.3, 0.0], [0.2, 0.8, 0.0, -0.6]])
    _w, m, _C = params(p)
    x_true = 0.5 * (m[0] + m[3])  # between two components: a multimodal posterior
    return p, A, x_true


def _y4(A, x_true, sigma_y):
    return A @ x_true + (np.array([0.05, -0.03]) if sigma_y > 0 else 0.0)


def test_posterior_d4_matches_importance_sampling(setup4):
    p, A, x_true = setup4
    w, m, C = params(p)
    sigma_y = 0.1
    y = _y4(A, x_true, sigma_y)
    x0 = mixture_samples(400_000, w, m, C, seed=5)
    lw = -0.5 * ((x0 @ A.T - y) ** 2).sum(1) / sigma_y**2
    wt = np.exp(lw - lw.max())
    wt /= wt.sum()
    assert 1 / (wt**2).sum() > 500
    est = wt @ x0
    se = np.sqrt((wt[:, None] ** 2 * (x0 - est) ** 2).sum(0))
    post = p.posterior(MatrixOperator(A, (1, 2, 2)), torch.tensor(y)[None], sigma_y)
    assert np.all(np.abs(post.mean().reshape(4).numpy() - est) <= 5 * se)
    second = np.einsum("n,ni,nj->ij", wt, x0, x0)
    cov_is = second - np.outer(est, est)
    assert np.allclose(post.covariance()[0].numpy(), cov_is, atol=20 * se.max())
    n = 40_000
    xs = post.sample(n, generator=torch.Generator().manual_seed(2)).reshape(n, 4).numpy()
    sd = np.sqrt(np.diag(cov_is))
    assert np.all(np.abs(xs.mean(0) - est) <= 5 * np.sqrt(sd**2 / n + se**2))


def _stationary(post, x, A, sigma_y):
    g = post.grad_log_prob(x).reshape(-1).numpy()
    _U, s, Vt = np.linalg.svd(A)
    Vr, Vn = Vt[: len(s)].T, Vt[len(s):].T
    assert np.linalg.norm(Vn.T @ g) < 1e-6
    if sigma_y > 0:  # range part scaled by σ_y² (the data term's curvature is s²/σ_y²)
        assert np.linalg.norm(Vr.T @ g) * sigma_y**2 < 1e-6 * max(sigma_y, 1e-3)


@pytest.fixture(scope="module")
def overlap4():
    """Strongly overlapping components: the MAP is not at any component's posterior mean."""
    w, m, C = small_gmm(4, 5, seed=5, spread=0.8, scale=0.3)
    A = np.array([[1.0, -0.5, 0.3, 0.0], [0.2, 0.8, 0.0, -0.6]])
    return GaussianMixturePrior(w, m, C, (1, 2, 2)), A, 0.5 * (m[0] + m[1])


@pytest.mark.parametrize("sigma_y", [0.1, 1e-6])
@pytest.mark.parametrize("case", ["separated", "overlapping"])
def test_map_d4_beats_random_restarts(setup4, overlap4, case, sigma_y):
    p, A, x_true = setup4 if case == "separated" else overlap4
    w, m, C = params(p)
    y = _y4(A, x_true, sigma_y)
    post = p.posterior(MatrixOperator(A, (1, 2, 2)), torch.tensor(y)[None], sigma_y)
    best, modes = post.map(return_all=True)
    xm = best.reshape(4).numpy()
    if case == "overlapping":  # a non-trivial optimisation problem
        assert np.min(np.linalg.norm(post.means[0].numpy() - xm, axis=1)) > 0.05
    _stationary(post, best, A, sigma_y)
    assert np.allclose(A @ xm, y, atol=5 * sigma_y + 1e-9)
    rng = np.random.default_rng(0)
    found = []
    logpdf, grad = mixture_objective(w, m, C)
    xc = rng.normal(size=4)
    assert np.isclose(logpdf(xc), mixture_logpdf(xc, w, m, C)[0], rtol=1e-12)
    assert np.allclose(grad(xc), mixture_grad(xc, w, m, C)[0], rtol=1e-10, atol=1e-12)
    if sigma_y > 0.01:
        def f(x):
            r = A @ x - y
            return -logpdf(x) + 0.5 * r @ r / sigma_y**2

        def g(x):
            return -grad(x) + A.T @ (A @ x - y) / sigma_y**2

        for x0 in rng.uniform(-1, 1, size=(150, 4)):
            r = minimize(f, x0, jac=g, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15})
            found.append((r.fun, r.x))
        fmap = f(xm)
    else:  # noiseless: optimise over the null space of A (the likelihood pins the range part)
        xp = np.linalg.pinv(A) @ y
        Vn = np.linalg.svd(A)[2][2:].T

        def f(c):
            return -logpdf(xp + Vn @ c)

        def g(c):
            return -Vn.T @ grad(xp + Vn @ c)

        for c0 in rng.uniform(-1.5, 1.5, size=(150, 2)):
            r = minimize(f, c0, jac=g, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15})
            found.append((r.fun, xp + Vn @ r.x))
        fmap = f(Vn.T @ (xm - xp))
    fbest = min(fv for fv, _ in found)
    assert fmap <= fbest + 1e-8, (fmap, fbest)
    # every restart optimum (a local maximum found by the plain optimiser) is a reported mode
    pts = modes[0].points.reshape(-1, 4).numpy()
    assert len(pts) >= 2
    for fv, x in found:
        if fv < fbest + 20:
            assert np.min(np.linalg.norm(pts - x, axis=1)) < 1e-4, (x, pts)
    # mode log-posteriors are the posterior's log_prob, sorted best first
    lp = modes[0].log_probs.numpy()
    assert np.all(np.diff(lp) <= 0)


def test_map_d2_noisy(prior2, grid2):
    post = prior2.posterior(MatrixOperator(A2, (1, 1, 2)), torch.tensor(measurement2(0.1))[None], 0.1)
    best, modes = post.map(return_all=True)
    g = post.grad_log_prob(best)
    assert g.abs().max() < 1e-6
    i = np.argmax(grid2["P"])
    assert np.linalg.norm(best.reshape(2).numpy() - grid2["X"][i]) < 2 * grid2["h"]
    assert torch.allclose(modes[0].log_probs[:1], post.log_prob(best))


@pytest.mark.parametrize("sigma_y", [0.1, 1e-6, 0.0])
def test_grad_log_prob_is_gradient_of_log_prob(setup4, sigma_y):
    p, A, x_true = setup4
    y = _y4(A, x_true, sigma_y)
    post = p.posterior(MatrixOperator(A, (1, 2, 2)), torch.tensor(y)[None], sigma_y)
    x = post.sample(3, generator=torch.Generator().manual_seed(0))[0]  # 3 points near the support
    x = x.reshape(1, 3, 1, 2, 2).clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(post.log_prob(x).sum(), x)
    gb = post.grad_log_prob(x.detach())
    rel = (ga - gb).norm() / gb.norm()
    assert rel < 1e-7, rel


# --------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("sigma_y", [0.3, 1e-6, 0.0])
def test_single_gaussian_posterior_closed_form(sigma_y):
    rng = np.random.default_rng(4)
    F = rng.normal(size=(3, 3))
    C = F @ F.T + 0.2 * np.eye(3)
    m = rng.normal(size=3)
    A = rng.normal(size=(2, 3))
    y = rng.normal(size=(2, 2))  # B = 2 measurements
    S = A @ C @ A.T + sigma_y**2 * np.eye(2)
    G = C @ A.T @ np.linalg.inv(S)
    mean = m + (y - A @ m) @ G.T
    cov = C - G @ A @ C
    p = GaussianMixturePrior([1.0], m[None], C[None], (1, 1, 3))
    post = p.posterior(MatrixOperator(A, (1, 1, 3)), torch.tensor(y), sigma_y)
    assert np.allclose(post.mean().reshape(2, 3).numpy(), mean, atol=1e-9)
    assert np.allclose(post.covs[0, 0].numpy(), cov, atol=1e-9)
    assert np.allclose(post.map().reshape(2, 3).numpy(), mean, atol=1e-8)
    if sigma_y > 1e-3:
        x = rng.normal(size=(2, 3))
        ref = [multivariate_normal(mean[b], cov).logpdf(x[b]) for b in range(2)]
        assert np.allclose(post.log_prob(torch.tensor(x).reshape(2, 1, 1, 3)).numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("sigma_y", [0.1, 1e-6, 0.0])
def test_rank_deficient_operator_equals_reduced_problem(setup4, sigma_y):
    """Duplicated rows: A = [a1; a2; a1] with y = [y1, y2, y3] carries the same information as
    [a1; a2] with (y1 + y3)/2 observed with noise σ_y/√2."""
    p, A, x_true = setup4
    A3 = np.vstack([A, A[:1]])
    y3 = A3 @ x_true + (np.array([0.04, -0.02, 0.1]) if sigma_y > 0 else 0.0)
    post3 = p.posterior(MatrixOperator(A3, (1, 2, 2)), torch.tensor(y3)[None], sigma_y)
    assert post3.rank == 2
    # reduced problem with whitened noise: scale row 1 by √2
    Ar = np.vstack([np.sqrt(2) * A[0], A[1]])
    yr = np.array([np.sqrt(2) * (y3[0] + y3[2]) / 2, y3[1]])
    postr = p.posterior(MatrixOperator(Ar, (1, 2, 2)), torch.tensor(yr)[None], sigma_y)
    assert torch.allclose(post3.weights, postr.weights, atol=1e-9)
    assert torch.allclose(post3.mean(), postr.mean(), atol=1e-9)
    assert torch.allclose(post3.covs[0], postr.covs[0], atol=1e-12)
    assert torch.isfinite(post3.map()).all()


def test_works_with_operator_presets_and_float32_operators():
    p = priors.build("gmm-digits")
    g = torch.Generator().manual_seed(0)
    A = operators.build("inpaint_random", image_shape=(1, 8, 8), generator=g)
    x = p.sample(2, generator=g)
    y = A.forward(x)
    post = p.posterior(A, y, 1e-6)
    M = post.matrix
    post_m = p.posterior(MatrixOperator(M, (1, 8, 8)), y.reshape(2, -1), 1e-6)
    assert torch.allclose(post.mean(), post_m.mean(), atol=1e-10)
    # noiseless: the posterior mean reproduces the measurement
    assert torch.allclose(A.forward(post.mean()).double(), y.double(), atol=1e-5)
    A32 = operators.build("sr4_avgpool", image_shape=(1, 8, 8)).to(dtype=torch.float32)
    post32 = p.posterior(A32, A32.forward(x.float()), 0.05)
    assert post32.matrix.dtype == D64 and torch.isfinite(post32.mean()).all()


def test_errors():
    p = priors.build("gmm-synthetic-4")

    class Square(operators.Operator):
        def forward(self, x):
            return x**2

    with pytest.raises(PriorError):
        p.posterior(Square((1, 2, 2), (1, 2, 2)), torch.zeros(1, 1, 2, 2), 0.1)
    A = MatrixOperator(np.eye(4), (1, 2, 2))
    with pytest.raises(PriorError):
        p.posterior(A, torch.zeros(1, 4), -0.1)
    with pytest.raises(PriorError):
        p.posterior(MatrixOperator(np.eye(4), (1, 1, 4)), torch.zeros(1, 4), 0.1)
    with pytest.raises(PriorError):
        p.posterior(A, torch.zeros(1, 3), 0.1)
    big = GaussianMixturePrior([1.0], np.zeros((1, 1089)), np.eye(1089)[None], (1, 33, 33))
    with pytest.raises(PriorError, match="1024"):
        big.posterior(MatrixOperator(np.eye(1089)[:2], (1, 33, 33)), torch.zeros(1, 2), 0.1)
