"""Analytic Gaussian-mixture prior (docs/design.md §4.1): exact denoiser, Tweedie covariance, score,
noised log-density and sampling.

Prior (model space, flattened ``d = prod(image_shape)``):

    p(x0) = Σ_k w_k N(x0; m_k, C_k),        C_k = U_k diag(λ_k) U_kᵀ  (eigendecomposed once)

Noised marginal (variance exploding, ``x = x0 + σ n``): ``p_σ(x) = Σ_k w_k N(x; m_k, C_k + σ² I)``.
Everything below is computed in the eigenbasis of each ``C_k``, so one pre-computed ``eigh``
serves every noise level:

    z_k   = U_kᵀ (x - m_k),          v_k = λ_k + σ²
    γ_k   ∝ w_k N(x; m_k, C_k + σ² I)           (log-sum-exp)
    μ_k   = m_k + U_k diag(λ_k / v_k) z_k      (= E[x0 | x, k])
    D     = Σ_k γ_k μ_k
    Cov   = Σ_k γ_k [U_k diag(λ_k σ² / v_k) U_kᵀ + (μ_k - D)(μ_k - D)ᵀ]   (= σ² ∂D/∂x)

See docs/priors-gmm.md. Parameters are stored and computed in float64 by default; inputs of
another dtype are cast in and the result cast back (autograd flows through the casts).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Prior, PriorError, as_sigma

__all__ = ["GaussianMixturePrior"]


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class GaussianMixturePrior(Prior):
    """Gaussian mixture ``Σ_k w_k N(m_k, C_k)`` over images of shape ``image_shape``.

    Parameters
    ----------
    weights: ``(K,)`` non-negative (normalised here).
    means: ``(K, d)`` (or ``(K, *image_shape)``) in model space [-1, 1].
    covariances: ``(K, d, d)`` symmetric positive definite, model units squared. Eigenvalues
        below ``eig_floor`` (absolute, default 1e-10) are raised to it so that ``σ = 0`` is
        well defined; a clearly non-PSD input (eigenvalue < -1e-8·max) is an error.
    image_shape: ``(C, H, W)``; ``d = C·H·W`` must match.
    dtype: compute/storage dtype (float64 by default; outputs of ``denoise``/``score``/
        ``covariance`` take the input's dtype).
    """

    sigma_min: float = 0.0
    sigma_max: float = 80.0
    sigmas = None

    def __init__(
        self,
        weights,
        means,
        covariances,
        image_shape: tuple[int, ...],
        *,
        dtype: torch.dtype = torch.float64,
        device=None,
        eig_floor: float = 1e-10,
    ):
        self.image_shape = tuple(int(s) for s in image_shape)
        d = _prod(self.image_shape)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        K = w.numel()
        m = torch.as_tensor(means, dtype=torch.float64).reshape(K, -1)
        C = torch.as_tensor(covariances, dtype=torch.float64)
        if m.shape != (K, d):
            raise PriorError(f"GMM means: expected shape ({K}, {d}) for image_shape "
                             f"{self.image_shape}, got {tuple(m.shape)}")
        if C.shape != (K, d, d):
            raise PriorError(f"GMM covariances: expected shape ({K}, {d}, {d}), got {tuple(C.shape)}")
        if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
            raise PriorError("GMM weights must be finite, non-negative and not all zero")
        if not (torch.isfinite(m).all() and torch.isfinite(C).all()):
            raise PriorError("GMM means/covariances contain NaN or Inf")
        C = 0.5 * (C + C.transpose(-1, -2))
        lam, U = torch.linalg.eigh(C)
        scale = lam.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)
        if (lam < -1e-8 * scale).any():
            raise PriorError("GMM covariances must be positive semi-definite "
                             f"(min eigenvalue {lam.min().item():.3g})")
        lam = lam.clamp_min(eig_floor)
        self.eig_floor = float(eig_floor)
        self.d, self.K = d, K
        self._dtype = dtype
        self.weights = w / w.sum()
        self.means = m
        self.eigvals = lam
        self.eigvecs = U
        self.covariances = (U * lam.unsqueeze(-2)) @ U.transpose(-1, -2)
        self.meta: dict = {}
        self.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ housekeeping
    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"analytic"})

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device=None, dtype=None) -> GaussianMixturePrior:
        """Move parameters to ``device`` and set the compute dtype (float64 recommended)."""
        if dtype is not None:
            self._dtype = dtype
        kw = {"dtype": self._dtype}
        if device is not None:
            kw["device"] = device
        for name in ("weights", "means", "eigvals", "eigvecs", "covariances"):
            setattr(self, name, getattr(self, name).to(**kw))
        self.log_weights = torch.log(self.weights)
        self._Utm = torch.einsum("kji,kj->ki", self.eigvecs, self.means)  # U_kᵀ m_k
        self._logdet = torch.log(self.eigvals).sum(-1)  # log det C_k
        return self

    def __repr__(self) -> str:
        return f"GaussianMixturePrior(K={self.K}, image_shape={self.image_shape}, name={self.name!r})"

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.image_shape and not (x.ndim == 2 and x.shape[1] == self.d):
            raise PriorError(f"GMM prior {self.name or ''}: input shape {tuple(x.shape)} does not "
                             f"match (B, *{self.image_shape})")
        return x.reshape(x.shape[0], self.d).to(device=self.device, dtype=self._dtype)

    # ------------------------------------------------------------------ core quantities
    def _components(self, xf: Tensor, sigma) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-component quantities for flattened ``xf`` (B, d): ``z`` (B,K,d) eigen-coordinates
        of ``x - m_k``, ``v = λ + σ²`` (B,K,d), log joint ``log w_k + log N`` (B,K), ``σ²`` (B,)."""
        s2 = as_sigma(sigma, xf) ** 2
        z = torch.einsum("kji,bj->bki", self.eigvecs, xf) - self._Utm
        v = self.eigvals + s2[:, None, None]
        logN = -0.5 * ((z * z) / v).sum(-1) - 0.5 * torch.log(v).sum(-1) \
            - 0.5 * self.d * math.log(2 * math.pi)
        return z, v, self.log_weights + logN, s2

    def responsibilities(self, x: Tensor, sigma) -> Tensor:
        """``γ_k(x) = P(k | x_σ = x)``, shape ``(B, K)``."""
        _, _, logj, _ = self._components(self._flat(x), sigma)
        return torch.softmax(logj, dim=1)

    def _component_means(self, z: Tensor, v: Tensor) -> Tensor:
        """``μ_k = m_k + U_k diag(λ/v) z_k``: (B, K, d)."""
        return self.means + torch.einsum("kij,bkj->bki", self.eigvecs, (self.eigvals / v) * z)

    def denoise(self, x: Tensor, sigma) -> Tensor:
        """Exact ``E[x0 | x0 + σ n = x]`` (model space); ``sigma`` float or ``(B,)``, >= 0.

        Differentiable in ``x`` (and ``sigma``).
        """
        xf = self._flat(x)
        z, v, logj, _ = self._components(xf, sigma)
        gamma = torch.softmax(logj, dim=1)
        D = (gamma.unsqueeze(-1) * self._component_means(z, v)).sum(1)
        return D.reshape(x.shape).to(x.dtype)

    def covariance(self, x: Tensor, sigma) -> Tensor:
        """Exact ``Cov[x0 | x0 + σ n = x]`` (= ``σ² ∂D/∂x``), shape ``(B, d, d)``, model units²."""
        xf = self._flat(x)
        z, v, logj, s2 = self._components(xf, sigma)
        gamma = torch.softmax(logj, dim=1)
        mu = self._component_means(z, v)
        D = (gamma.unsqueeze(-1) * mu).sum(1)
        a = gamma.unsqueeze(-1) * self.eigvals * s2[:, None, None] / v  # (B,K,d)
        cov = torch.zeros(xf.shape[0], self.d, self.d, dtype=xf.dtype, device=xf.device)
        for k in range(self.K):
            Uk = self.eigvecs[k]
            cov = cov + (Uk * a[:, k, None, :]) @ Uk.T
        # between-component spread Σ_k γ_k (μ_k − D)(μ_k − D)ᵀ; written without sqrt(γ_k) so its
        # gradient stays finite when a responsibility underflows to 0
        dm = mu - D.unsqueeze(1)  # (B,K,d)
        cov = cov + torch.einsum("bk,bki,bkj->bij", gamma, dm, dm)
        return cov.to(x.dtype)

    def score(self, x: Tensor, sigma) -> Tensor:
        """``∇_x log p_σ(x) = -Σ_k γ_k (C_k + σ²I)⁻¹ (x - m_k)``; valid at ``σ = 0`` too."""
        xf = self._flat(x)
        z, v, logj, _ = self._components(xf, sigma)
        gamma = torch.softmax(logj, dim=1)
        g = -torch.einsum("kij,bkj->bi", self.eigvecs, gamma.unsqueeze(-1) * z / v)
        return g.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: Tensor, sigma=0.0) -> Tensor:
        """Normalised ``log p_σ(x)`` of the noised marginal, shape ``(B,)`` (σ = 0: the prior)."""
        _, _, logj, _ = self._components(self._flat(x), sigma)
        return torch.logsumexp(logj, dim=1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact prior samples, shape ``(n, *image_shape)``, compute dtype.

        Draws the component indices, then ``N(0, I)`` noise, from ``generator`` (on the
        generator's device; moved to the prior's device).
        """
        gdev = generator.device if generator is not None else torch.device("cpu")
        comp = torch.multinomial(self.weights.to(gdev), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.d, generator=generator, device=gdev, dtype=self._dtype)
        comp, eps = comp.to(self.device), eps.to(self.device)
        out = torch.empty(n, self.d, dtype=self._dtype, device=self.device)
        for k in range(self.K):
            idx = (comp == k).nonzero(as_tuple=True)[0]
            if idx.numel():
                e = eps[idx] * torch.sqrt(self.eigvals[k])
                out[idx] = self.means[k] + e @ self.eigvecs[k].T
        return out.reshape(n, *self.image_shape)

    def posterior(self, A, y: Tensor, sigma_y: float):
        """Exact posterior ``p(x0 | y)`` for ``y = A x0 + σ_y n`` (``A`` linear, d <= 1024).

        Returns a :class:`invbench.priors.gmm_posterior.GaussianMixturePosterior`; ``sigma_y`` in model
        units, ``>= 0`` (0 = noiseless: the posterior lives on ``{x : A x = P_range y}``).
        """
        from .gmm_posterior import GaussianMixturePosterior

        return GaussianMixturePosterior(self, A, y, sigma_y)
