"""Independent NumPy/SciPy reference computations shared by the GMM tests (no code from invbench.priors.gmm*;
this module holds helpers only, no tests)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp

from invbench import operators


def small_gmm(d: int, K: int, seed: int, spread: float = 0.8, scale: float = 0.15):
    """Random mixture parameters (numpy float64): weights, means, SPD covariances."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, size=K)
    w /= w.sum()
    m = rng.uniform(-spread, spread, size=(K, d))
    C = np.empty((K, d, d))
    for k in range(K):
        F = rng.normal(0, scale, size=(d, d))
        C[k] = F @ F.T / d + (0.3 * scale) ** 2 * np.eye(d)
    return w, m, C


def mixture_logpdf(x: np.ndarray, w, m, C) -> np.ndarray:
    """log Σ_k w_k N(x; m_k, C_k) for x (N, d), via per-component Cholesky."""
    x = np.atleast_2d(x)
    d = x.shape[1]
    out = []
    for k in range(len(w)):
        L = np.linalg.cholesky(C[k])
        z = np.linalg.solve(L, (x - m[k]).T)
        out.append(np.log(w[k]) - 0.5 * (z * z).sum(0) - np.log(np.diag(L)).sum()
                   - 0.5 * d * np.log(2 * np.pi))
    return logsumexp(np.stack(out, 1), axis=1)


def mixture_objective(w, m, C):
    """``(logpdf, grad)`` of one point x (d,), the same quantities as :func:`mixture_logpdf` and
    :func:`mixture_grad` with the inverses and log-determinants computed once (for optimisers
    that call them thousands of times)."""
    w, m, C = np.asarray(w), np.asarray(m), np.asarray(C)
    Ci = np.linalg.inv(C)
    const = np.log(w) - 0.5 * (np.linalg.slogdet(C)[1] + m.shape[1] * np.log(2 * np.pi))

    def logjoint(x):
        d = x - m
        return const - 0.5 * np.einsum("ki,kij,kj->k", d, Ci, d)

    def logpdf(x):
        return logsumexp(logjoint(x))

    def grad(x):
        lj = logjoint(x)
        return -np.einsum("k,kij,kj->i", np.exp(lj - logsumexp(lj)), Ci, x - m)

    return logpdf, grad


def mixture_grad(x: np.ndarray, w, m, C) -> np.ndarray:
    """∇ log Σ_k w_k N(x; m_k, C_k) for x (N, d)."""
    x = np.atleast_2d(x)
    d = x.shape[1]
    lj, gs = [], []
    for k in range(len(w)):
        Ci = np.linalg.inv(C[k])
        diff = x - m[k]
        _, ld = np.linalg.slogdet(C[k])
        lj.append(np.log(w[k]) - 0.5 * np.einsum("ni,ij,nj->n", diff, Ci, diff) - 0.5 * ld
                  - 0.5 * d * np.log(2 * np.pi))
        gs.append(-diff @ Ci)
    lj = np.stack(lj, 1)
    gam = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    return np.einsum("nk,kni->ni", gam, np.stack(gs))


def mixture_samples(n: int, w, m, C, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(w), size=n, p=w)
    out = np.empty((n, m.shape[1]))
    for k in range(len(w)):
        idx = np.nonzero(comp == k)[0]
        out[idx] = rng.multivariate_normal(m[k], C[k], size=idx.size, method="cholesky")
    return out


class MatrixOperator(operators.LinearOperator):
    """``A x = M vec(x)`` for an explicit matrix ``M`` (m, d); images of shape ``in_shape``."""

    def __init__(self, M, in_shape):
        M = torch.as_tensor(M, dtype=torch.float64)
        super().__init__(in_shape, (M.shape[0],))
        self.M = M

    def forward(self, x):
        return x.reshape(x.shape[0], -1).to(self.M.dtype) @ self.M.T

    def adjoint(self, y):
        return (y @ self.M).reshape(y.shape[0], *self.in_shape)
