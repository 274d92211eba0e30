"""Exact posterior of a :class:`~invbench.priors.gmm_lowrank.LowRankGaussianMixturePrior` under
``y = A x0 + σ_y n`` (σ_y > 0, ``A`` linear with an orthonormal SVD ``A = U S Vᵀ``, ``V`` square).

Per component ``k`` the posterior is Gaussian with precision and mean

    Π_k = C_k⁻¹ + AᵀA/σ²,    μ_k = Π_k⁻¹ (C_k⁻¹ m_k + Aᵀy/σ²).

With ``C_k⁻¹ = I/τ_k² - Q_k G_k Q_kᵀ``, ``G_k = diag(1/τ_k² - 1/λ_k)`` and ``AᵀA = V diag(s̄²) Vᵀ``
(``s̄`` the singular values padded with zeros to ``d``), ``Π_k = B_k - (Q_k g_k)(Q_k g_k)ᵀ`` where
``B_k = V diag(1/τ_k² + s̄²/σ²) Vᵀ`` is applied and inverted through the operator's ``V``/``Vt``
and ``g_k = √G_k``. Woodbury, factorised once per operator and component (an ``r × r``
Cholesky):

    R_k = B_k⁻¹ Q_k g_k,   M_k = I - (Q_k g_k)ᵀ R_k = L_k L_kᵀ,   Π_k⁻¹ v = B_k⁻¹ v + R_k M_k⁻¹ R_kᵀ v,
    log det Π_k = Σ log(1/τ_k² + s̄²/σ²) + 2 Σ log diag L_k.

Weights: ``π_k ∝ w_k N(y; A m_k, A C_k Aᵀ + σ²I)`` with (matrix determinant lemma, Woodbury)
``log det(A C_k Aᵀ + σ²I) = m log σ² + log det C_k + log det Π_k`` and quadratic form
``|e|²/σ² - bᵀ Π_k⁻¹ b``, ``e = y - A m_k``, ``b = Aᵀe/σ²``. Exact samples by perturbation:
``x = Π_k⁻¹(C_k⁻¹ x_p + Aᵀ y_p/σ²)`` with ``x_p ~ N(m_k, C_k)``, ``y_p ~ N(y, σ²I)`` (mean μ_k,
covariance Π_k⁻¹). MAP: the mixture fixed point ``x ← (Σ γ_k C_k⁻¹ + AᵀA/σ²)⁻¹ (Σ γ_k C_k⁻¹ m_k +
Aᵀy/σ²)`` (an MM iteration: ``log p(x|y)`` never decreases), solved by Woodbury over the
components with non-negligible responsibility, from multiple starts; see docs/priors-gmm.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import PriorError
from .gmm_posterior import Modes, cached_modes

__all__ = ["LowRankMixturePosterior"]

_LOG2PI = math.log(2 * math.pi)
DT = torch.float64


class LowRankMixturePosterior:
    """Exact ``p(x0 | y) = Σ_k π_k N(μ_k, Π_k⁻¹)`` for a batch of ``B`` measurements sharing ``A``.

    Attributes: ``weights``/``log_weights`` (B, K), ``means`` (B, K, d), ``sigma_y``,
    ``log_evidence`` (B,) = ``log p(y)``. Methods as :class:`invbench.priors.gmm_posterior.GaussianMixturePosterior`:
    ``mean``, ``covariance`` (small d), ``sample``, ``log_prob``, ``map``, ``modes``.
    """

    def __init__(self, prior, A, y: Tensor, sigma_y: float):
        sigma = float(sigma_y)
        if not math.isfinite(sigma) or sigma <= 0:
            raise PriorError(f"sigma_y must be a finite number > 0 for the low-rank mixture posterior, got {sigma_y}")
        if "linear" not in A.capabilities or "svd" not in A.capabilities:
            raise PriorError(f"exact low-rank GMM posterior needs a linear operator with an SVD; {A!r} has "
                             f"capabilities {sorted(A.capabilities)}")
        if tuple(int(s) for s in A.in_shape) != prior.image_shape:
            raise PriorError(f"operator in_shape {tuple(A.in_shape)} does not match the prior's image_shape "
                             f"{prior.image_shape}")
        self.prior, self.operator, self.sigma_y = prior, A.to(dtype=DT), sigma
        self.image_shape, self.d, self.K, self.r = prior.image_shape, prior.d, prior.K, prior.r
        out_shape = tuple(int(s) for s in A.out_shape)
        y = torch.as_tensor(y)
        if tuple(y.shape) == out_shape:
            y = y.unsqueeze(0)
        if tuple(y.shape[1:]) != out_shape:
            raise PriorError(f"measurement shape {tuple(y.shape)} does not match (B, *{out_shape})")
        y = y.to(dtype=DT, device=prior.device)
        if not torch.isfinite(y).all():
            raise PriorError("measurement y contains NaN or Inf")
        self.y, self.B, self.m = y, y.shape[0], math.prod(out_shape)
        self._setup_spectrum()
        self._factorise()
        self._map_cache: dict = {}

    # ------------------------------------------------------------------ construction
    def _Vt(self, v: Tensor) -> Tensor:
        return self.operator.svd.Vt(v.reshape(-1, *self.image_shape)).reshape(v.shape[0], -1)

    def _V(self, c: Tensor) -> Tensor:
        return self.operator.svd.V(c).reshape(c.shape[0], self.d)

    def _setup_spectrum(self) -> None:
        svd, d = self.operator.svd, self.d
        s = svd.singular_values.to(dtype=DT, device=self.prior.device).reshape(-1)
        probe = torch.randn(3, d, dtype=DT, generator=torch.Generator().manual_seed(0)).to(self.prior.device)
        c = self._Vt(probe)
        if c.shape[1] != d or s.numel() > d:
            raise PriorError(f"operator {self.operator!r}: its SVD's V is not square (Vt gives {c.shape[1]} "
                             f"coefficients for d={d}); the low-rank GMM posterior needs an orthonormal V")
        s2 = torch.cat([s * s, torch.zeros(d - s.numel(), dtype=DT, device=s.device)])
        Ax = self.operator.forward(probe.reshape(3, *self.image_shape)).reshape(3, -1)
        ok_norm = torch.allclose(c.norm(dim=1), probe.norm(dim=1), rtol=1e-9)
        ok_inv = torch.allclose(self._V(c), probe, atol=1e-9 * probe.abs().max().item())
        ok_gram = torch.allclose((Ax * Ax).sum(1), (s2 * c * c).sum(1), rtol=1e-8)
        if not (ok_norm and ok_inv and ok_gram):
            raise PriorError(f"operator {self.operator!r}: its SVD is not orthonormal or does not diagonalise AᵀA "
                             f"(checked on random vectors)")
        self._s2 = s2  # (d,) eigenvalues of AᵀA in the V basis

    def _binv(self, v: Tensor, beta: Tensor) -> Tensor:
        """``B⁻¹ v`` with ``B = V diag(beta) Vᵀ``; ``v`` (N, d)."""
        return self._V(self._Vt(v) / beta)

    def _factorise(self) -> None:
        p, sig2 = self.prior, self.sigma_y ** 2
        K, d, r = self.K, self.d, self.r
        self._beta = 1.0 / p.tau2[:, None] + self._s2 / sig2  # (K, d)
        self._g = torch.sqrt(1.0 / p.tau2[:, None] - 1.0 / p.eigvals)  # (K, r)
        self._R = torch.empty(K, d, r, dtype=DT, device=p.device)
        self._L = torch.empty(K, r, r, dtype=DT, device=p.device)
        logdet_pi = torch.empty(K, dtype=DT, device=p.device)
        eye = torch.eye(r, dtype=DT, device=p.device)
        for k in range(K):
            Qg = p.basis[k] * self._g[k]
            R = self._binv(Qg.T.contiguous(), self._beta[k]).T  # (d, r)
            M = eye - Qg.T @ R
            self._R[k], self._L[k] = R, torch.linalg.cholesky(0.5 * (M + M.T))
            logdet_pi[k] = torch.log(self._beta[k]).sum() + 2 * torch.log(torch.diagonal(self._L[k])).sum()
        self._logdet_pi = logdet_pi
        logdet_c = torch.log(p.eigvals).sum(-1) + (d - r) * torch.log(p.tau2)
        yf = self.y.reshape(self.B, -1)
        self._Aty = self.operator.adjoint(self.y).reshape(self.B, d) / sig2  # (B, d)
        Am = self.operator.forward(p.means.reshape(K, *self.image_shape)).reshape(K, -1)
        self.means = torch.empty(self.B, K, d, dtype=DT, device=p.device)
        log_ev = torch.empty(self.B, K, dtype=DT, device=p.device)
        for k in range(K):
            cm = p.apply_cov(k, p.means[k : k + 1], -1.0)  # C_k⁻¹ m_k
            self.means[:, k] = self.pi_inv(k, cm + self._Aty)
            e = yf - Am[k]
            b = self.operator.adjoint(e.reshape(self.y.shape)).reshape(self.B, d) / sig2
            quad = (e * e).sum(1) / sig2 - (b * self.pi_inv(k, b)).sum(1)
            logdet_s = self.m * math.log(sig2) + logdet_c[k] + logdet_pi[k]
            log_ev[:, k] = -0.5 * (quad + logdet_s + self.m * _LOG2PI)
        joint = p.log_weights + log_ev
        self.log_evidence = torch.logsumexp(joint, dim=1)
        self.log_weights = joint - self.log_evidence[:, None]
        self.weights = torch.exp(self.log_weights)

    def pi_inv(self, k: int, v: Tensor) -> Tensor:
        """Component ``k``'s posterior covariance applied to ``v`` (N, d): ``Π_k⁻¹ v``."""
        R = self._R[k]
        c = torch.cholesky_solve((v @ R).T, self._L[k]).T
        return self._binv(v, self._beta[k]) + c @ R.T

    # ------------------------------------------------------------------ densities
    def log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` for ``x`` (B, *image_shape) or (B, n, *image_shape) -> (B,) or (B, n)."""
        xf, lead = self._flat(x)
        n = xf.shape[1]
        Ax = self.operator.forward(xf.reshape(-1, *self.image_shape)).reshape(self.B, n, -1)
        res = self.y.reshape(self.B, 1, -1) - Ax
        out = -0.5 * (res * res).sum(-1) / self.sigma_y ** 2 - 0.5 * self.m * math.log(2 * math.pi * self.sigma_y ** 2)
        return out.reshape(lead)

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised ``log p(x0 = x | y) = log p(x) + log p(y|x) - log p(y)``; (B, ...) -> (B,) or (B, n)."""
        xf, lead = self._flat(x)
        lp = self.prior.log_prob(xf.reshape(-1, self.d)).reshape(self.B, -1)
        out = lp + self.log_likelihood(x).reshape(self.B, -1) - self.log_evidence[:, None]
        return out.reshape(lead)

    def _flat(self, x: Tensor):
        nd = len(self.image_shape)
        if x.ndim < nd + 1 or tuple(x.shape[-nd:]) != self.image_shape or x.shape[0] != self.B:
            raise PriorError(f"posterior: x shape {tuple(x.shape)} must be (B={self.B}, [n,] *{self.image_shape})")
        return x.reshape(self.B, -1, self.d).to(dtype=DT, device=self.prior.device), tuple(x.shape[:-nd])

    # ------------------------------------------------------------------ moments and samples
    def mean(self) -> Tensor:
        """Exact posterior mean ``Σ_k π_k μ_k``, shape ``(B, *image_shape)``."""
        return (self.weights.unsqueeze(-1) * self.means).sum(1).reshape(self.B, *self.image_shape)

    def component_cov(self, k: int) -> Tensor:
        """Dense ``Π_k⁻¹`` (d, d); for tests and small ``d``."""
        return self.pi_inv(k, torch.eye(self.d, dtype=DT, device=self.prior.device))

    def covariance(self) -> Tensor:
        """Exact posterior covariance ``(B, d, d)`` (dense: small ``d`` only)."""
        mu = (self.weights.unsqueeze(-1) * self.means).sum(1)
        covs = torch.stack([self.component_cov(k) for k in range(self.K)])
        cov = torch.einsum("bk,kij->bij", self.weights, covs)
        dm = torch.sqrt(self.weights).unsqueeze(-1) * (self.means - mu.unsqueeze(1))
        return cov + dm.transpose(1, 2) @ dm

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact posterior samples per measurement, ``(B, n, *image_shape)`` float64.

        Draws, from ``generator``: component indices (B, n), then prior noise (B, n, d), then
        measurement noise (B, n, m).
        """
        gdev = generator.device if generator is not None else torch.device("cpu")
        comp = torch.multinomial(self.weights.to(gdev), n, replacement=True, generator=generator)
        e1 = torch.randn(self.B, n, self.d, generator=generator, device=gdev, dtype=DT)
        e2 = torch.randn(self.B, n, self.m, generator=generator, device=gdev, dtype=DT)
        dev = self.prior.device
        comp, e1, e2 = comp.to(dev), e1.to(dev), e2.to(dev)
        out = torch.empty(self.B, n, self.d, dtype=DT, device=dev)
        out_shape = tuple(self.y.shape[1:])
        for k in range(self.K):
            mask = comp == k
            if not mask.any():
                continue
            bi = mask.nonzero(as_tuple=True)[0]
            cm = self.prior.apply_cov(k, self.prior.means[k : k + 1], -1.0)
            xp_term = cm + self.prior.apply_cov(k, e1[mask], -0.5)  # C⁻¹ x_p
            yp = self.y[bi] + self.sigma_y * e2[mask].reshape(-1, *out_shape)
            aty = self.operator.adjoint(yp).reshape(-1, self.d) / self.sigma_y ** 2
            out[mask] = self.pi_inv(k, xp_term + aty)
        return out.reshape(self.B, n, *self.image_shape)

    # ------------------------------------------------------------------ MAP
    def map(self, return_all: bool = False, *, n_random: int = 4, max_iter: int = 500,
            generator: torch.Generator | None = None):
        """``argmax_x log p(x | y)`` ``(B, *image_shape)``; ``return_all=True`` gives ``(best, modes)``.

        Starts: every component mean μ_k, the posterior mean and ``n_random`` posterior samples
        (``generator``, default seed 0). Each start runs the mixture fixed point (module
        docstring) until the step is below 1e-12 (max-norm, model units) or ``max_iter``; a
        converged point is kept as a local maximum when the Hessian of ``-log p`` there is
        positive definite. Points closer than 1e-6 (RMS) are merged; modes sorted by ``log_prob``.
        """
        modes = cached_modes(self, n_random, max_iter, generator)
        best = torch.stack([mo.points[0] for mo in modes])
        return (best, modes) if return_all else best

    def modes(self, **kwargs) -> list[Modes]:
        """All distinct local maxima found by :meth:`map`, per measurement, best first."""
        return self.map(return_all=True, **kwargs)[1]

    def _hp_solver(self, gamma: Tensor, cut: float = 1e-14):
        """For responsibilities ``gamma`` (K,): a function ``v -> H₊⁻¹ v`` with
        ``H₊ = Σ_k γ_k C_k⁻¹ + AᵀA/σ²`` (components with γ_k < cut are dropped)."""
        p = self.prior
        act = (gamma >= cut).nonzero(as_tuple=True)[0].tolist()
        beta = (gamma[:, None] / p.tau2[:, None]).sum(0) + self._s2 / self.sigma_y ** 2
        W = torch.cat([p.basis[k] * (self._g[k] * math.sqrt(float(gamma[k]))) for k in act], dim=1)
        BW = self._binv(W.T.contiguous(), beta).T
        M = torch.eye(W.shape[1], dtype=DT, device=p.device) - W.T @ BW
        L = torch.linalg.cholesky(0.5 * (M + M.T))

        def solve(v: Tensor) -> Tensor:
            c = torch.cholesky_solve((v @ BW).T, L).T
            return self._binv(v, beta) + c @ BW.T

        return solve

    def _run_map(self, n_random: int, max_iter: int, generator: torch.Generator) -> list[Modes]:
        p, B, d = self.prior, self.B, self.d
        starts = [self.means, self.mean().reshape(B, 1, d)]
        if n_random > 0:
            starts.append(self.sample(n_random, generator=generator).reshape(B, n_random, d))
        X = torch.cat(starts, dim=1).clone()  # (B, S, d)
        S = X.shape[1]
        cm = torch.stack([p.apply_cov(k, p.means[k : k + 1], -1.0)[0] for k in range(self.K)])  # C_k⁻¹ m_k
        is_max = torch.zeros(B, S, dtype=torch.bool)
        for b in range(B):
            for j in range(S):
                x = X[b, j : j + 1]
                for _ in range(max_iter):
                    gamma = p.responsibilities(x, 0.0)[0]
                    solve = self._hp_solver(gamma)
                    xn = solve((gamma @ cm).unsqueeze(0) + self._Aty[b : b + 1])
                    step = (xn - x).abs().max().item()
                    x = xn
                    if step < 1e-12:
                        break
                X[b, j] = x[0]
                is_max[b, j] = self._is_local_max(x, b)
        lp = self.log_prob(X.reshape(B, S, *self.image_shape))
        out = []
        for b in range(B):
            cand = [j for j in range(S) if is_max[b, j]] or list(range(S))
            cand.sort(key=lambda j: -float(lp[b, j]))
            keep: list[int] = []
            for j in cand:
                if all(float((X[b, j] - X[b, i]).norm()) / math.sqrt(d) > 1e-6 for i in keep):
                    keep.append(j)
            kt = torch.tensor(keep, dtype=torch.long)
            out.append(Modes(X[b, kt].reshape(len(keep), *self.image_shape), lp[b, kt]))
        return out

    def _is_local_max(self, x: Tensor, b: int) -> bool:
        """Hessian of ``-log p(x|y)`` at ``x`` (1, d) positive definite: ``H = H₊ - Σ_k γ_k (a_k - ā)(a_k - ā)ᵀ``
        with ``a_k = C_k⁻¹(x - m_k)``; PD iff the K×K matrix ``Acᵀ H₊⁻¹ Ac`` has eigenvalues < 1."""
        p = self.prior
        gamma = p.responsibilities(x, 0.0)[0]
        a = torch.stack([p.apply_cov(k, x - p.means[k : k + 1], -1.0)[0] for k in range(self.K)])  # (K, d)
        abar = gamma @ a
        Ac = torch.sqrt(gamma)[:, None] * (a - abar)  # (K, d)
        if float(Ac.abs().max()) == 0.0:
            return True
        solve = self._hp_solver(gamma)
        Mk = Ac @ solve(Ac).T
        return bool(torch.linalg.eigvalsh(0.5 * (Mk + Mk.T)).max() < 1.0)
