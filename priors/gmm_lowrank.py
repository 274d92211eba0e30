"""Gaussian mixture with low-rank-plus-isotropic covariances, for image-sized ``d`` (docs/priors-gmm.md,
"Image-scale mixtures").

Prior (model space, flattened ``d = prod(image_shape)``)::

    p(x0) = Σ_k w_k N(x0; m_k, C_k),
    C_k = Q_k diag(λ_k) Q_kᵀ + τ_k² (I - Q_k Q_kᵀ)        (Q_k: d×r orthonormal, λ_k > τ_k² > 0)

This is a full-rank covariance in eigen-form: ``Q_k`` holds the ``r`` leading eigenvectors, the
other ``d - r`` eigenvalues all equal ``τ_k²`` (the eigenvalue floor of the fit). Every quantity
below costs ``O(K d r)`` per image, never a ``d × d`` matrix:

    C_k + σ²I = Q_k diag(λ_k + σ²) Q_kᵀ + (τ_k² + σ²)(I - Q_k Q_kᵀ)
    z_k = Q_kᵀ(x - m_k),  e_k = (x - m_k) - Q_k z_k
    log N_k = -½[Σ z²/(λ+σ²) + |e|²/(τ²+σ²)] - ½[Σ log(λ+σ²) + (d-r) log(τ²+σ²)] - d/2 log 2π
    μ_k = m_k + Q_k diag(λ/(λ+σ²)) z_k + τ²/(τ²+σ²) e_k          (= E[x0 | x, k])
    D(x, σ) = Σ_k γ_k μ_k,   γ = softmax_k(log w_k + log N_k)

Parameters are float64; inputs of another dtype are cast in and results cast back (autograd flows
through). The exact posterior for a linear operator with an orthonormal SVD is
:class:`invbench.priors.gmm_lowrank_posterior.LowRankMixturePosterior`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Prior, PriorError, as_sigma

__all__ = ["LowRankGaussianMixturePrior"]

_LOG2PI = math.log(2 * math.pi)


class LowRankGaussianMixturePrior(Prior):
    """``Σ_k w_k N(m_k, Q_k diag(λ_k) Q_kᵀ + τ_k²(I - Q_k Q_kᵀ))`` over ``image_shape`` images.

    Parameters
    ----------
    weights: ``(K,)`` non-negative (normalised here).
    means: ``(K, d)`` model space.
    basis: ``(K, d, r)``; re-orthonormalised here in float64 (QR), so a basis stored in reduced
        precision defines an exact mixture after loading.
    eigvals: ``(K, r)`` leading eigenvalues λ (model units²), each > ``tau2``.
    tau2: ``(K,)`` the isotropic remainder τ² (model units²), > 0.
    """

    sigma_min: float = 0.0
    sigma_max: float = 80.0
    sigmas = None

    def __init__(self, weights, means, basis, eigvals, tau2, image_shape: tuple[int, ...], *, device=None):
        self.image_shape = tuple(int(s) for s in image_shape)
        d = math.prod(self.image_shape)
        dt = torch.float64
        w = torch.as_tensor(weights, dtype=dt).reshape(-1)
        K = w.numel()
        m = torch.as_tensor(means, dtype=dt).reshape(K, -1)
        Q = torch.as_tensor(basis, dtype=dt)
        lam = torch.as_tensor(eigvals, dtype=dt)
        t2 = torch.as_tensor(tau2, dtype=dt).reshape(-1)
        if m.shape != (K, d):
            raise PriorError(f"low-rank GMM means: expected ({K}, {d}), got {tuple(m.shape)}")
        if Q.ndim != 3 or Q.shape[:2] != (K, d) or Q.shape[2] >= d:
            raise PriorError(f"low-rank GMM basis: expected ({K}, {d}, r) with r < d, got {tuple(Q.shape)}")
        r = Q.shape[2]
        if lam.shape != (K, r) or t2.shape != (K,):
            raise PriorError(f"low-rank GMM eigvals/tau2: expected ({K}, {r}) and ({K},), "
                             f"got {tuple(lam.shape)} and {tuple(t2.shape)}")
        if (w < 0).any() or w.sum() <= 0 or not all(torch.isfinite(t).all() for t in (w, m, Q, lam, t2)):
            raise PriorError("low-rank GMM parameters must be finite with non-negative weights")
        if (t2 <= 0).any() or (lam <= t2[:, None]).any():
            raise PriorError("low-rank GMM: need tau2 > 0 and every eigval > its component's tau2")
        Q, R = torch.linalg.qr(Q)
        Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
        self.d, self.K, self.r = d, K, r
        self.weights = w / w.sum()
        self.means, self.basis, self.eigvals, self.tau2 = m, Q.contiguous(), lam, t2
        self.meta: dict = {}
        self.to(device=device)

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"analytic"})

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device=None, dtype=None) -> LowRankGaussianMixturePrior:
        """Move the parameters to ``device`` (computation stays float64; ``dtype`` is ignored)."""
        for name in ("weights", "means", "basis", "eigvals", "tau2"):
            setattr(self, name, getattr(self, name).to(device=device))
        self.log_weights = torch.log(self.weights)
        return self

    def __repr__(self) -> str:
        return (f"LowRankGaussianMixturePrior(K={self.K}, r={self.r}, image_shape={self.image_shape}, "
                f"name={self.name!r})")

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.image_shape and not (x.ndim == 2 and x.shape[1] == self.d):
            raise PriorError(f"prior {self.name or 'low-rank GMM'}: input shape {tuple(x.shape)} does not "
                             f"match (B, *{self.image_shape})")
        return x.reshape(x.shape[0], self.d).to(device=self.device, dtype=torch.float64)

    # ------------------------------------------------------------------ core
    def _components(self, xf: Tensor, sigma):
        """``z`` (B,K,r), ``e`` (B,K,d), ``v = λ+σ²`` (B,K,r), ``vt = τ²+σ²`` (B,K), log joint (B,K)."""
        s2 = as_sigma(sigma, xf) ** 2
        diff = xf.unsqueeze(1) - self.means  # (B,K,d)
        z = torch.einsum("kdr,bkd->bkr", self.basis, diff)
        e = diff - torch.einsum("kdr,bkr->bkd", self.basis, z)
        v = self.eigvals + s2[:, None, None]
        vt = self.tau2 + s2[:, None]
        logN = -0.5 * ((z * z / v).sum(-1) + (e * e).sum(-1) / vt) \
            - 0.5 * (torch.log(v).sum(-1) + (self.d - self.r) * torch.log(vt)) - 0.5 * self.d * _LOG2PI
        return z, e, v, vt, self.log_weights + logN

    def responsibilities(self, x: Tensor, sigma) -> Tensor:
        """``γ_k(x) = P(k | x_σ = x)``, shape ``(B, K)``."""
        return torch.softmax(self._components(self._flat(x), sigma)[-1], dim=1)

    def _component_means(self, z, e, v, vt) -> Tensor:
        return self.means + torch.einsum("kdr,bkr->bkd", self.basis, (self.eigvals / v) * z) \
            + (self.tau2 / vt).unsqueeze(-1) * e

    def denoise(self, x: Tensor, sigma) -> Tensor:
        """Exact ``E[x0 | x0 + σ n = x]`` (model space), differentiable; ``sigma`` float or (B,)."""
        xf = self._flat(x)
        z, e, v, vt, lj = self._components(xf, sigma)
        gamma = torch.softmax(lj, dim=1)
        D = (gamma.unsqueeze(-1) * self._component_means(z, e, v, vt)).sum(1)
        return D.reshape(x.shape).to(x.dtype)

    def score(self, x: Tensor, sigma) -> Tensor:
        """``∇_x log p_σ(x) = -Σ_k γ_k (C_k + σ²I)⁻¹(x - m_k)``; valid at σ = 0."""
        xf = self._flat(x)
        z, e, v, vt, lj = self._components(xf, sigma)
        gamma = torch.softmax(lj, dim=1)
        g = torch.einsum("kdr,bkr->bkd", self.basis, z / v) + e / vt.unsqueeze(-1)
        return (-(gamma.unsqueeze(-1) * g).sum(1)).reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma=0.0) -> Tensor:
        """Normalised ``log p_σ(x)``, shape ``(B,)`` (σ = 0: the prior density)."""
        return torch.logsumexp(self._components(self._flat(x), sigma)[-1], dim=1).to(x.dtype)

    def covariance(self, x: Tensor, sigma) -> Tensor:
        """Exact ``Cov[x0 | x0 + σ n = x]`` (= σ² ∂D/∂x), shape ``(B, d, d)``, model units²."""
        xf = self._flat(x)
        z, e, v, vt, lj = self._components(xf, sigma)
        gamma = torch.softmax(lj, dim=1)
        s2 = as_sigma(sigma, xf) ** 2
        mu = self._component_means(z, e, v, vt)
        D = (gamma.unsqueeze(-1) * mu).sum(1)
        a = gamma.unsqueeze(-1) * (self.eigvals * s2[:, None, None] / v
                                   - (self.tau2 * s2[:, None] / vt).unsqueeze(-1))  # (B,K,r)
        iso = (gamma * self.tau2 * s2[:, None] / vt).sum(1)  # (B,)
        cov = torch.einsum("kir,bkr,kjr->bij", self.basis, a, self.basis)
        cov = cov + iso[:, None, None] * torch.eye(self.d, dtype=xf.dtype, device=xf.device)
        dm = mu - D.unsqueeze(1)
        cov = cov + torch.einsum("bk,bki,bkj->bij", gamma, dm, dm)
        return cov.to(x.dtype)

    # ------------------------------------------------------------------ helpers for the posterior
    def apply_cov(self, k: int, v: Tensor, power: float = 1.0) -> Tensor:
        """``C_k^power v`` for ``v`` (..., d) (power ±1 or ±½)."""
        Q, lam, t2 = self.basis[k], self.eigvals[k], self.tau2[k]
        c = v @ Q
        return (t2 ** power) * (v - c @ Q.T) + (c * lam ** power) @ Q.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact prior samples ``(n, *image_shape)`` float64 (indices, then noise, from ``generator``)."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        comp = torch.multinomial(self.weights.to(gdev), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.d, generator=generator, device=gdev, dtype=torch.float64)
        comp, eps = comp.to(self.device), eps.to(self.device)
        out = torch.empty(n, self.d, dtype=torch.float64, device=self.device)
        for k in range(self.K):
            idx = (comp == k).nonzero(as_tuple=True)[0]
            if idx.numel():
                out[idx] = self.means[k] + self.apply_cov(k, eps[idx], 0.5)
        return out.reshape(n, *self.image_shape)

    def dense(self):
        """The same mixture as a dense :class:`invbench.priors.gmm.GaussianMixturePrior` (small ``d`` only:
        used by the tests as the brute-force reference)."""
        from .gmm import GaussianMixturePrior

        if self.d > 1024:
            raise PriorError(f"dense copy of a d={self.d} mixture refused (d <= 1024)")
        eye = torch.eye(self.d, dtype=torch.float64, device=self.device)
        C = torch.stack([self.apply_cov(k, eye) for k in range(self.K)])
        return GaussianMixturePrior(self.weights, self.means, 0.5 * (C + C.transpose(1, 2)), self.image_shape,
                                    eig_floor=0.0)

    def posterior(self, A, y: Tensor, sigma_y: float):
        """Exact posterior ``p(x0 | y)`` for ``y = A x0 + σ_y n``, ``σ_y > 0`` (model units), ``A``
        linear with an orthonormal SVD (all inpainting, super-resolution, blur and denoising presets).
        Returns a :class:`invbench.priors.gmm_lowrank_posterior.LowRankMixturePosterior`."""
        from .gmm_lowrank_posterior import LowRankMixturePosterior

        return LowRankMixturePosterior(self, A, y, sigma_y)
