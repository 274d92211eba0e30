"""Oracles against closed forms computed here by dense linear algebra (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from invbench.operators import LinearOperator
from invbench.priors import CountingPrior, Prior
from invbench.priors.gmm import GaussianMixturePrior
from invbench.solvers import SolverSkip

from invbench import operators, solvers

DT = torch.float64


def _ops(shape):
    out = []
    for name in ("inpaint_random", "sr4_avgpool", "deblur_uniform", "colorize"):
        if name not in operators.PRESETS or (name == "colorize") != (shape[0] == 3):
            continue
        out.append(operators.build(name, image_shape=shape, generator=torch.Generator().manual_seed(2)).to(dtype=DT))
    return out


def _dense(op):
    d = math.prod(op.in_shape)
    eye = torch.eye(d, dtype=DT).reshape(d, *op.in_shape)
    return op.forward(eye).reshape(d, -1).T


def _mixture(shape, K, seed):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    Ms = torch.randn(K, d, d, generator=g, dtype=DT) / d**0.5
    C = Ms @ Ms.transpose(1, 2) * 0.2 + 0.01 * torch.eye(d, dtype=DT)
    means = 0.6 * torch.randn(K, d, generator=g, dtype=DT)
    w = torch.rand(K, generator=g, dtype=DT) + 0.5
    return GaussianMixturePrior(w, means, C, shape), w / w.sum(), means, C


def _closed_form(w, means, C, A, y, sy):
    """Posterior mixture: π_k ∝ w_k N(y; A m_k, A C_k Aᵀ + σ_y² I), μ_k, Σ_k (dense)."""
    logs, mus, covs = [], [], []
    m = A.shape[0]
    for k in range(len(w)):
        S = A @ C[k] @ A.T + sy**2 * torch.eye(m, dtype=DT)
        r = y - A @ means[k]
        G = C[k] @ A.T @ torch.linalg.inv(S)
        mus.append(means[k] + G @ r)
        covs.append(C[k] - G @ A @ C[k])
        logs.append(torch.log(w[k]) + torch.distributions.MultivariateNormal(A @ means[k], S).log_prob(y))
    pi = torch.softmax(torch.stack(logs), 0)
    return pi, torch.stack(mus), torch.stack(covs)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 4)])
@pytest.mark.parametrize("sigma_y", [1e-3, 0.01, 0.1])
def test_oracles_equal_closed_forms(shape, sigma_y):
    ops = _ops(shape)
    assert ops, "operator presets not registered"
    for K in (1, 3):
        prior, w, means, C = _mixture(shape, K, seed=K)
        for op in ops:
            x0 = prior.sample(2, generator=torch.Generator().manual_seed(5)).to(DT)
            y = op.measure(x0, sigma_y, torch.Generator().manual_seed(6))
            A = _dense(op)
            cp = CountingPrior(prior)
            xm = solvers.build("oracle_mean").solve(y, op, cp, sigma_y=sigma_y)
            xmap = solvers.build("oracle_map").solve(y, op, cp, sigma_y=sigma_y)
            assert (cp.nfe, cp.vjp) == (0, 0)
            for b in range(2):
                pi, mus, covs = _closed_form(w, means, C, A, y[b].reshape(-1), sigma_y)
                ref_mean = (pi[:, None] * mus).sum(0)
                assert torch.allclose(xm[b].reshape(-1), ref_mean, atol=1e-8, rtol=1e-6), (op.name, K)
                if K == 1:  # Gaussian: MAP = mean
                    assert torch.allclose(xmap[b].reshape(-1), ref_mean, atol=1e-8, rtol=1e-6), op.name
                else:  # stationary point of the dense log posterior, at least as good as every μ_k
                    mix = torch.distributions.MixtureSameFamily(
                        torch.distributions.Categorical(pi),
                        torch.distributions.MultivariateNormal(mus, covs + 1e-12 * torch.eye(mus.shape[1], dtype=DT)))
                    xr = xmap[b].reshape(-1).clone().requires_grad_(True)
                    lp = mix.log_prob(xr)
                    (gr,) = torch.autograd.grad(lp, xr)
                    scale = torch.linalg.eigvalsh(covs).max()
                    assert (gr.norm() * scale).item() < 1e-5, (op.name, gr.norm().item())
                    assert lp.item() >= mix.log_prob(mus).max().item() - 1e-8


def test_oracle_sample_distribution_and_batch_invariance():
    shape = (1, 2, 2)
    prior, w, means, C = _mixture(shape, 1, seed=7)
    A = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], dtype=DT)
    op = _Mat(A, shape)
    n, sy = 1500, 0.3
    y = torch.tensor([[0.4, -0.2]], dtype=DT).expand(n, 2).contiguous()
    gens = [torch.Generator().manual_seed(1000 + i) for i in range(n)]
    xs = solvers.build("oracle_sample").solve(y, op, prior, sigma_y=sy, generator=gens).reshape(n, -1)
    _, mus, covs = _closed_form(w, means, C, A, y[0], sy)
    L = torch.linalg.cholesky(covs[0])
    z = torch.linalg.solve_triangular(L, (xs - mus[0]).T, upper=False).T  # should be N(0, I)
    assert z.mean(0).abs().max() < 5 / n**0.5
    assert (torch.cov(z.T) - torch.eye(4, dtype=DT)).abs().max() < 6 / n**0.5
    # image i depends only on its own generator
    x3 = solvers.build("oracle_sample").solve(y[3:4], op, prior, sigma_y=sy,
                                              generator=torch.Generator().manual_seed(1003))
    assert torch.equal(x3.reshape(-1), xs[3])


class _Mat(LinearOperator):
    """Dense matrix operator (no SVD; the oracles need only "linear")."""

    def __init__(self, A, in_shape):
        super().__init__(in_shape, (A.shape[0],), "mat")
        self.A = A

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.A.T

    def adjoint(self, y):
        return (y @ self.A).reshape(y.shape[0], *self.in_shape)


class _NotAnalytic(Prior):
    image_shape, sigma_min, sigma_max = (1, 2, 2), 0.0, 1.0

    def denoise(self, x, sigma):
        return x


@pytest.mark.parametrize("name", ["oracle_map", "oracle_mean", "oracle_sample"])
def test_oracles_skip_without_analytic_prior(name):
    op = operators.build("denoise", image_shape=(1, 2, 2)) if "denoise" in operators.PRESETS else None
    if op is None:
        pytest.skip("denoise preset not registered")
    with pytest.raises(SolverSkip, match="analytic"):
        solvers.build(name).solve(torch.zeros(1, *op.out_shape), op, _NotAnalytic(), sigma_y=0.1)
