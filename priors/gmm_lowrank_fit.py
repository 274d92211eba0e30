"""Maximum-likelihood fit (EM) of a low-rank-plus-isotropic Gaussian mixture
(:class:`~invbench.priors.gmm_lowrank.LowRankGaussianMixturePrior`) to flattened images.

Each M-step is the exact maximiser over the model class ``C_k = Q_k diag(λ_k) Q_kᵀ + τ_k²(I - Q_k
Q_kᵀ)`` (the mixture of probabilistic PCA, Tipping & Bishop 1999): ``Q_k``/``λ_k`` the ``r``
leading eigenpairs of the responsibility-weighted covariance ``S_k`` and ``τ_k²`` the mean of its
remaining eigenvalues, ``(tr S_k - Σ λ_k)/(d - r)``, floored at ``tau2_floor`` (the
regularisation). The leading eigenpairs come from a randomized SVD (``torch.svd_lowrank``,
seeded), so the fit is deterministic for a given machine and thread count; the committed
parameters, not the fit, define the prior. Initialisation: k-means (scikit-learn, seeded).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["fit_lowrank_gmm", "mean_log_likelihood"]


def _log_joint(X: Tensor, w: Tensor, m: Tensor, Q: Tensor, lam: Tensor, t2: Tensor) -> Tensor:
    """``log w_k + log N(x_n; m_k, C_k)``, shape ``(N, K)``."""
    d, r = X.shape[1], Q.shape[2]
    out = []
    for k in range(w.numel()):
        diff = X - m[k]
        z = diff @ Q[k]
        e2 = (diff * diff).sum(1) - (z * z).sum(1)
        ll = -0.5 * ((z * z / lam[k]).sum(1) + e2.clamp_min(0) / t2[k]) \
            - 0.5 * (torch.log(lam[k]).sum() + (d - r) * torch.log(t2[k])) - 0.5 * d * math.log(2 * math.pi)
        out.append(torch.log(w[k]) + ll)
    return torch.stack(out, dim=1)


def mean_log_likelihood(X: Tensor, params: dict) -> float:
    """Mean ``log p(x)`` (nats per image, model space) of rows of ``X`` (N, d) under ``params``."""
    lj = _log_joint(X.to(torch.float64), *(params[k] for k in ("weights", "means", "basis", "eigvals", "tau2")))
    return float(torch.logsumexp(lj, dim=1).mean())


def fit_lowrank_gmm(X: Tensor, K: int, r: int, *, tau2_floor: float = 1e-4, n_iter: int = 30,
                    tol: float = 1e-4, seed: int = 0, log=None) -> dict:
    """EM fit to ``X`` (N, d) model space. Returns ``weights`` (K,), ``means`` (K, d), ``basis``
    (K, d, r), ``eigvals`` (K, r), ``tau2`` (K,) (float64 tensors), ``iterations`` and the
    training ``log_lik`` history (nats per image). Stops when the mean log-likelihood improves by
    less than ``tol`` nats per image. ``λ`` is raised to at least ``1.001 τ²`` (strict ordering)."""
    from sklearn.cluster import KMeans

    X = X.to(torch.float64)
    N, d = X.shape
    labels = KMeans(n_clusters=K, n_init=1, random_state=seed).fit_predict(X.numpy())
    resp = torch.from_numpy(np.eye(K)[labels])
    gen_seed = seed
    hist: list[float] = []
    params: dict = {}
    for it in range(n_iter):
        Nk = resp.sum(0).clamp_min(1e-10)
        w = Nk / N
        m = (resp.T @ X) / Nk[:, None]
        Q = torch.empty(K, d, r, dtype=torch.float64)
        lam = torch.empty(K, r, dtype=torch.float64)
        t2 = torch.empty(K, dtype=torch.float64)
        for k in range(K):
            Xc = (X - m[k]) * torch.sqrt(resp[:, k] / Nk[k])[:, None]
            torch.manual_seed(gen_seed + 1000 * it + k)
            _, S, V = torch.svd_lowrank(Xc, q=min(r + 10, d), niter=4)
            ev = S[:r] ** 2
            tau2 = max(float(((Xc * Xc).sum() - ev.sum()) / (d - r)), tau2_floor)
            Q[k], lam[k], t2[k] = V[:, :r], torch.clamp(ev, min=1.001 * tau2), tau2
        params = {"weights": w, "means": m, "basis": Q, "eigvals": lam, "tau2": t2}
        lj = _log_joint(X, w, m, Q, lam, t2)
        ll = torch.logsumexp(lj, dim=1)
        resp = torch.softmax(lj, dim=1)
        hist.append(float(ll.mean()))
        if log:
            log(f"  iter {it}: train log-lik {hist[-1]:.2f}")
        if it > 0 and hist[-1] - hist[-2] < tol:
            break
    params["iterations"] = len(hist)
    params["log_lik"] = hist
    return params
