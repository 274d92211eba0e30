"""Exact posterior of a Gaussian-mixture prior under a linear operator and Gaussian noise
(docs/design.md §4.1): ``y = A x0 + σ_y n``  =>  ``p(x0 | y) = Σ_k π_k(y) N(x0; μ_k(y), Σ_k)``.

Construction (all float64, see docs/priors-gmm.md):

1. The dense matrix ``M`` (m×d) of ``A`` is built by applying ``A.forward`` to the identity
   basis (d <= 1024). Its SVD ``M = P S Vᵀ`` gives the numerical rank ``r`` (singular values
   above ``max(m, d)·eps·s_max``); the measurement is reduced to ``ỹ = P_rᵀ y`` with the
   full-row-rank operator ``Ã = diag(s_r) V_rᵀ``. The discarded part of ``y`` is the same for
   every component, so the posterior is unchanged (for σ_y = 0 it amounts to projecting ``y``
   onto the range of ``A``).
2. Per component, with ``L_k = U_k diag(√λ_k)`` (``C_k = L_k L_kᵀ``) and the SVD
   ``Ã L_k = P_k diag(b_k) Q_kᵀ`` (``b_k > 0``, full ``Q_k``):

       μ_k = m_k + L_k Q_k[:, :r] diag(b_k / (b_k² + σ_y²)) P_kᵀ (ỹ - Ã m_k)
       Σ_k = F_k F_kᵀ,  F_k = L_k Q_k diag(t_k),  t_k = (σ_y / √(b_k² + σ_y²), 1, ..., 1)
       log π_k = log w_k + log N(ỹ; Ã m_k, P_k diag(b_k² + σ_y²) P_kᵀ) - log Σ(...)

   These forms contain no inverse of ``A C_k Aᵀ + σ_y² I`` and stay finite at σ_y = 0
   (then ``b/(b²) = 1/b``: the pseudo-inverse, and Σ_k is supported on the null space of A).
3. MAP: multi-start damped Newton / fixed-point iterations on ``-log p(x0|y)`` in the
   coordinates ``u = Vᵀ x`` (where the data term is diagonal), Jacobi-scaled, with Armijo
   backtracking; see :meth:`GaussianMixturePosterior.map`.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import Tensor

from .base import PriorError

__all__ = ["MAX_DIM", "GaussianMixturePosterior", "Modes", "operator_matrix"]

MAX_DIM = 1024
_LOG2PI = math.log(2 * math.pi)


def operator_matrix(A, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Dense matrix ``(m, d)`` of a linear operator, built with ``A.forward`` on the identity basis.

    Only ``A.forward``, ``A.in_shape`` and ``A.capabilities`` are used. If ``A`` cannot take
    ``dtype`` inputs (e.g. float32 parameters in a convolution), a deep copy of ``A`` is moved
    to ``dtype``/``device`` and used instead; ``A`` itself is never modified.
    """
    if "linear" not in A.capabilities:
        raise PriorError(f"exact GMM posterior needs a linear operator; {A!r} is not linear")
    in_shape = tuple(int(s) for s in A.in_shape)
    d = 1
    for s in in_shape:
        d *= s
    if d > MAX_DIM:
        raise PriorError(f"exact GMM posterior builds a dense {d}x{d} problem; d={d} exceeds {MAX_DIM}")
    eye = torch.eye(d, dtype=dtype, device=device)

    def apply(op) -> Tensor:
        rows = [op.forward(chunk.reshape(-1, *in_shape)).reshape(chunk.shape[0], -1)
                for chunk in eye.split(256)]
        return torch.cat(rows).to(dtype=dtype, device=device).T.contiguous()

    try:
        return apply(A)
    except (RuntimeError, TypeError):
        return apply(copy.deepcopy(A).to(device=device, dtype=dtype))


class Modes(NamedTuple):
    """Local maxima of ``log p(x0|y)`` for one measurement, best first."""

    points: Tensor  # (M, *image_shape)
    log_probs: Tensor  # (M,) values of GaussianMixturePosterior.log_prob


def cached_modes(post, n_random: int, max_iter: int, generator: torch.Generator | None) -> list[Modes]:
    """``post._run_map(n_random, max_iter, generator)`` computed once per ``(n_random, max_iter)``
    and kept in ``post._map_cache`` (default generator: seed 0); shared by the exact posteriors."""
    key = (n_random, max_iter)
    if key not in post._map_cache:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        post._map_cache[key] = post._run_map(n_random, max_iter, generator)
    return post._map_cache[key]


class GaussianMixturePosterior:
    """Exact ``p(x0 | y)`` of a :class:`priors.GaussianMixturePrior` (a Gaussian mixture again).

    Attributes (batch ``B`` of measurements, ``K`` components, ``d`` pixels, float64):
    ``weights`` (B, K) posterior component probabilities π_k(y); ``log_weights`` (B, K);
    ``means`` (B, K, d) component means μ_k(y) (flattened images); ``covs`` (B, K, d, d)
    component covariances Σ_k (independent of ``y``: an expanded view of ``(K, d, d)``);
    ``cov_factors`` (K, d, d) with ``Σ_k = F_k F_kᵀ``; ``rank`` numerical rank of ``A``;
    ``sigma_y`` (model units); ``matrix`` the dense ``A`` (m, d).
    """

    def __init__(self, prior, A, y: Tensor, sigma_y: float):
        sigma = float(sigma_y)
        if not math.isfinite(sigma) or sigma < 0:
            raise PriorError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
        if tuple(int(s) for s in A.in_shape) != tuple(prior.image_shape):
            raise PriorError(f"operator in_shape {tuple(A.in_shape)} does not match the prior's "
                             f"image_shape {tuple(prior.image_shape)}")
        self.prior = prior
        self.operator = A
        self.image_shape = tuple(prior.image_shape)
        self.sigma_y = sigma
        self.d, self.K = prior.d, prior.K
        self.matrix = operator_matrix(A, dtype=torch.float64, device=prior.device)
        yf = self._flat_measurement(y, tuple(int(s) for s in A.out_shape))
        self.B = yf.shape[0]
        self._reduce_to_range(yf)           # 1. reduce to the range of A
        Qkh, LQ = self._component_posteriors()  # 2. per-component posterior
        self._density_helpers(Qkh, LQ)          # log-density helpers
        self._map_cache: dict = {}

    def _flat_measurement(self, y: Tensor, out_shape: tuple[int, ...]) -> Tensor:
        """``y`` ((B,) + out_shape, or out_shape alone) checked and flattened: (B, m) float64."""
        y = torch.as_tensor(y)
        if tuple(y.shape) == out_shape:
            y = y.unsqueeze(0)
        if tuple(y.shape[1:]) != out_shape:
            raise PriorError(f"measurement shape {tuple(y.shape)} does not match (B, *{out_shape})")
        yf = y.reshape(y.shape[0], -1).to(dtype=torch.float64, device=self.prior.device)
        if not torch.isfinite(yf).all():
            raise PriorError("measurement y contains NaN or Inf")
        return yf

    def _reduce_to_range(self, yf: Tensor) -> None:
        """``A = P S Vᵀ``: numerical rank ``r``, ``V``, the range's singular values, ``ỹ = P_rᵀ y``
        and ``Ã = S_r V_rᵀ`` (r, d)."""
        M, dt = self.matrix, torch.float64
        P, S, Vh = torch.linalg.svd(M, full_matrices=True)
        tol = max(M.shape) * torch.finfo(dt).eps * (S.max().item() if S.numel() else 0.0)
        r = int((S > tol).sum().item())
        self.rank = r
        self._V = Vh.T.contiguous()  # (d, d): [V_r | V_n]
        self._s = S[:r].contiguous()
        self._yt = yf @ P[:, :r]  # (B, r)
        self._At = self._s[:, None] * Vh[:r]  # (r, d)

    def _component_posteriors(self) -> tuple[Tensor, Tensor]:
        """Each component's posterior factor ``F_k``, mean ``μ_k(y)``, weight ``π_k(y)`` and the
        range evidence, through the SVD of ``Ã L_k = P_k B_k Q_kᵀ`` (``Σ_k = L_k L_kᵀ`` of the
        prior); returns ``(Q_kᵀ, L_k Q_k)``."""
        prior, At, r, d, K = self.prior, self._At, self.rank, self.d, self.K
        dt, dev, sigma = torch.float64, prior.device, self.sigma_y
        lam, U, m = prior.eigvals.to(dt), prior.eigvecs.to(dt), prior.means.to(dt)
        self._lam, self._U, self._m = lam, U, m
        L = U * torch.sqrt(lam).unsqueeze(-2)  # (K, d, d)
        Pk, bk, Qkh = torch.linalg.svd(At @ L, full_matrices=True)  # (K,r,r) (K,r) (K,d,d)
        LQ = L @ Qkh.transpose(-1, -2)  # (K, d, d)
        s2 = sigma * sigma
        vk = bk * bk + s2  # (K, r)
        t = torch.cat([sigma / torch.sqrt(vk), torch.ones(K, d - r, dtype=dt, device=dev)], dim=1)
        self._t = t
        self.cov_factors = LQ * t.unsqueeze(-2)  # F_k
        res = self._yt.unsqueeze(1) - (m @ At.T).unsqueeze(0)  # (B, K, r)
        proj = torch.einsum("kji,bkj->bki", Pk, res)  # P_kᵀ res
        self.means = m + torch.einsum("kij,bkj->bki", LQ[:, :, :r], (bk / vk) * proj)
        log_ev = (-0.5 * (proj * proj / vk).sum(-1) - 0.5 * torch.log(vk).sum(-1)
                  - 0.5 * r * _LOG2PI)
        self.log_evidence_range = torch.logsumexp(prior.log_weights.to(dt) + log_ev, dim=1)
        self.log_weights = torch.log_softmax(prior.log_weights.to(dt) + log_ev, dim=1)
        self.weights = torch.exp(self.log_weights)
        cov = self.cov_factors @ self.cov_factors.transpose(-1, -2)
        self.covs = cov.unsqueeze(0).expand(self.B, K, d, d)
        return Qkh, LQ

    def _density_helpers(self, Qkh: Tensor, LQ: Tensor) -> None:
        """Whitening of each component (``sigma_y > 0``: full-dimensional; ``sigma_y = 0``: on
        the null space of ``A``, where the posterior lives) and its log-determinant."""
        lam, U, t, r = self._lam, self._U, self._t, self.rank
        if self.sigma_y > 0:
            # Σ_k^{-1/2}-type whitening: w = diag(1/t) Q_kᵀ diag(1/√λ) U_kᵀ (x - μ_k)
            self._G = (U / torch.sqrt(lam).unsqueeze(-2)) @ Qkh.transpose(-1, -2)
            self._G = self._G.transpose(-1, -2) / t.unsqueeze(-1)  # (K, d, d)
            self._logdet_half = 0.5 * torch.log(lam).sum(-1) + torch.log(t).sum(-1)
            self._ldim = self.d
        else:
            Vn = self._V[:, r:]
            H = Vn.T @ LQ[:, :, r:]  # (K, d-r, d-r): Σ_k restricted = H Hᵀ
            self._Hlu = torch.linalg.lu_factor(H)
            self._logdet_half = torch.linalg.slogdet(H)[1]
            self._ldim = self.d - r

    # ------------------------------------------------------------------ helpers
    def _flat(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """``x`` (B, *image_shape) or (B, n, *image_shape) -> (B, n, d) float64 and the lead shape."""
        nd = len(self.image_shape)
        if x.ndim < nd + 1 or tuple(x.shape[-nd:]) != self.image_shape or x.shape[0] != self.B:
            raise PriorError(f"posterior: x shape {tuple(x.shape)} must be (B={self.B}, [n,] "
                             f"*{self.image_shape})")
        lead = tuple(x.shape[:-nd])
        xf = x.reshape(self.B, -1, self.d).to(dtype=torch.float64, device=self._V.device)
        return xf, lead

    def component_log_probs(self, x: Tensor) -> Tensor:
        """``log π_k + log N(x; μ_k, Σ_k)``, shape ``(*lead, K)`` for ``x`` (B, [n,] *image_shape)."""
        xf, lead = self._flat(x)
        if self.sigma_y > 0:
            w = torch.einsum("kij,bnj->bnki", self._G, xf) - torch.einsum(
                "kij,bkj->bki", self._G, self.means).unsqueeze(1)
        else:
            Vn = self._V[:, self.rank:]
            c = (xf @ Vn).unsqueeze(2) - (self.means @ Vn).unsqueeze(1)  # (B, n, K, d-r)
            rhs = c.permute(2, 3, 0, 1).reshape(self.K, self._ldim, -1)
            sol = torch.linalg.lu_solve(*self._Hlu, rhs)
            w = sol.reshape(self.K, self._ldim, self.B, -1).permute(2, 3, 0, 1)
        logN = -0.5 * (w * w).sum(-1) - self._logdet_half - 0.5 * self._ldim * _LOG2PI
        out = self.log_weights.unsqueeze(1) + logN  # (B, n, K)
        return out.reshape(*lead, self.K)

    # ------------------------------------------------------------------ public API
    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised ``log p(x0 = x | y)``; ``x`` (B, *image_shape) -> (B,), or (B, n, ...) -> (B, n).

        For σ_y = 0 the posterior lives on the affine subspace ``{x : A x = P_range y}``; the
        value is the density with respect to Lebesgue measure on that subspace (orthonormal
        null-space coordinates), evaluated at the projection of ``x`` onto it.
        """
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def grad_log_prob(self, x: Tensor) -> Tensor:
        """``∇_x log p(x | y)`` (same shape as ``x``): prior score + ``Ãᵀ(ỹ - Ãx)/σ_y²``;
        for σ_y = 0 the prior score projected onto the null space of ``A``."""
        xf, _lead = self._flat(x)
        flat = xf.reshape(-1, self.d)
        g = self.prior.score(flat.reshape(-1, *self.image_shape), 0.0).reshape(self.B, -1, self.d)
        g = g.to(torch.float64)
        if self.sigma_y > 0:
            r = self._yt.unsqueeze(1) - xf @ self._At.T  # (B, n, r)
            g = g + (r @ self._At) / self.sigma_y**2
        else:
            Vn = self._V[:, self.rank:]
            g = (g @ Vn) @ Vn.T
        return g.reshape(x.shape)

    def mean(self) -> Tensor:
        """Exact posterior mean ``Σ_k π_k μ_k``, shape ``(B, *image_shape)``."""
        return (self.weights.unsqueeze(-1) * self.means).sum(1).reshape(self.B, *self.image_shape)

    def covariance(self) -> Tensor:
        """Exact posterior covariance, shape ``(B, d, d)``."""
        mean = (self.weights.unsqueeze(-1) * self.means).sum(1)
        cov = torch.einsum("bk,kij->bij", self.weights, self.covs[0])
        dm = torch.sqrt(self.weights).unsqueeze(-1) * (self.means - mean.unsqueeze(1))
        return cov + dm.transpose(1, 2) @ dm

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact posterior samples per measurement, shape ``(B, n, *image_shape)``.

        Component indices, then ``N(0, I)`` noise, are drawn from ``generator`` on its device.
        """
        gdev = generator.device if generator is not None else torch.device("cpu")
        comp = torch.multinomial(self.weights.to(gdev), n, replacement=True, generator=generator)
        eps = torch.randn(self.B, n, self.d, generator=generator, device=gdev, dtype=torch.float64)
        comp, eps = comp.to(self.means.device), eps.to(self.means.device)
        out = torch.gather(self.means, 1, comp.unsqueeze(-1).expand(self.B, n, self.d)).clone()
        for k in range(self.K):
            mask = comp == k
            if mask.any():
                out[mask] += eps[mask] @ self.cov_factors[k].T
        return out.reshape(self.B, n, *self.image_shape)

    # ------------------------------------------------------------------ MAP
    def map(self, return_all: bool = False, *, n_random: int = 4, max_iter: int = 200,
            generator: torch.Generator | None = None):
        """Maximum a posteriori estimate ``argmax_x log p(x | y)``, shape ``(B, *image_shape)``.

        Multi-start: every component mean ``μ_k``, the posterior mean and ``n_random``
        posterior samples (from ``generator``, default seed 0). Each start runs damped Newton
        iterations on ``f = -log p(x|y)`` in ``u = Vᵀx`` coordinates (Jacobi-scaled); where the
        Hessian of ``f`` is not positive definite the step falls back to the fixed-point (EM)
        direction ``-(Σ_k γ_k C_k⁻¹ + AᵀA/σ_y²)⁻¹ ∇f``; Armijo backtracking on every step.
        Converged points whose Hessian is positive definite are local maxima; they are merged
        (distance < 1e-3 in Hessian-scaled units) into :class:`Modes`. ``return_all=True``
        returns ``(best, modes)`` with ``modes`` a list (length B) of :class:`Modes`.
        """
        modes = cached_modes(self, n_random, max_iter, generator)
        best = torch.stack([mo.points[0] for mo in modes])
        return (best, modes) if return_all else best

    def modes(self, **kwargs) -> list[Modes]:
        """All distinct local maxima found by :meth:`map`, per measurement, best first."""
        return self.map(return_all=True, **kwargs)[1]

    def _map_setup(self) -> None:
        V, lam, U, m = self._V, self._lam, self._U, self._m
        W = (U / torch.sqrt(lam).unsqueeze(-2)).transpose(-1, -2) @ V  # (K, d, d): z = W(u - m̃)
        self._W = W
        self._Wm = torch.einsum("kij,kj->ki", W, m @ V)  # W_k m̃_k
        self._Lam = W.transpose(-1, -2) @ W  # C̃_k⁻¹
        self._cst = self.prior.log_weights.to(torch.float64) - 0.5 * torch.log(lam).sum(-1)

    def _f(self, u: Tensor, b: Tensor) -> Tensor:
        """``-log p(x|y)`` up to a constant, for points ``u`` (N, d) of measurements ``b`` (N,)."""
        z = torch.einsum("kij,nj->nki", self._W, u) - self._Wm
        f = -torch.logsumexp(self._cst - 0.5 * (z * z).sum(-1), dim=1)
        if self.sigma_y > 0:
            r = self.rank
            res = self._s * u[:, :r] - self._yt[b]
            f = f + 0.5 * (res * res).sum(-1) / self.sigma_y**2
        return f

    def _derivs(self, u: Tensor, b: Tensor):
        """Gradient, Hessian and the fixed-point matrix ``H₊`` of ``_f`` (full coordinates)."""
        z = torch.einsum("kij,nj->nki", self._W, u) - self._Wm
        lj = self._cst - 0.5 * (z * z).sum(-1)
        gam = torch.softmax(lj, dim=1)  # (N, K)
        a = torch.einsum("kji,nkj->nki", self._W, z)  # C̃_k⁻¹ (u - m̃_k)
        g = (gam.unsqueeze(-1) * a).sum(1)
        Hp = torch.einsum("nk,kij->nij", gam, self._Lam)
        sa = torch.sqrt(gam).unsqueeze(-1) * a
        H = Hp - sa.transpose(1, 2) @ sa + g.unsqueeze(-1) * g.unsqueeze(-2)
        if self.sigma_y > 0:
            r = self.rank
            s2 = self.sigma_y**2
            g[:, :r] += self._s * (self._s * u[:, :r] - self._yt[b]) / s2
            dd = torch.arange(r, device=u.device)
            H[:, dd, dd] += self._s**2 / s2
            Hp[:, dd, dd] += self._s**2 / s2
        return g, H, Hp

    def _run_map(self, n_random: int, max_iter: int, generator: torch.Generator) -> list[Modes]:
        """Damped (scaled) Newton iterations on ``−log p(x0|y)`` from every start of
        :meth:`_map_starts`, in the ``V`` coordinates of ``A`` (for ``sigma_y = 0`` only the null
        space moves), with Armijo backtracking; the local maxima found, per measurement."""
        self._map_setup()
        u, bidx, free, S = self._map_starts(n_random, generator)
        N, dev = u.shape[0], u.device
        active = torch.ones(N, dtype=torch.bool, device=dev)
        is_max = torch.zeros(N, dtype=torch.bool, device=dev)
        scale = torch.ones(N, free.numel(), dtype=u.dtype, device=dev)
        fval = self._f(u, bidx)
        for _ in range(max_iter):
            idx = active.nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                break
            ua, ba = u[idx], bidx[idx]
            step_s, dec, sc, newton_ok = self._newton_direction(ua, ba, free)
            scale[idx], is_max[idx] = sc, newton_ok
            step = torch.zeros_like(ua)
            step[:, free] = step_s * sc
            conv = (step_s.abs().amax(-1) < 1e-10) | (dec < 1e-22) | (
                step.abs().amax(-1) <= 1e-13 * (1.0 + ua.abs().amax(-1)))
            f0 = fval[idx]
            unew, fnew, accepted = self._armijo(ua, ba, step, dec, f0, conv)
            # no decrease possible at machine precision: stationary to working accuracy
            stalled = ~accepted | (fnew >= f0)
            u[idx], fval[idx] = unew, fnew
            active[idx[conv | stalled]] = False
        return self._collect_modes(u, bidx, is_max, scale, S)

    def _map_starts(self, n_random: int, generator: torch.Generator):
        """Starting points in ``V`` coordinates: every component mean, the posterior mean and
        ``n_random`` posterior samples per measurement. Returns ``(u (B·S, d), the measurement of
        each row, the free coordinates, S)``; for ``sigma_y = 0`` the range part is fixed to
        ``A⁺y``."""
        B, d, r, dev = self.B, self.d, self.rank, self._V.device
        starts = [self.means, (self.weights.unsqueeze(-1) * self.means).sum(1, keepdim=True)]
        if n_random > 0:
            starts.append(self.sample(n_random, generator=generator).reshape(B, n_random, d))
        X0 = torch.cat(starts, dim=1)  # (B, S, d)
        S = X0.shape[1]
        u = (X0 @ self._V).reshape(B * S, d).clone()
        bidx = torch.arange(B, device=dev).repeat_interleave(S)
        free = torch.arange(d, device=dev) if self.sigma_y > 0 else torch.arange(r, d, device=dev)
        if self.sigma_y == 0:
            u[:, :r] = self._yt[bidx] / self._s  # exactly on the constraint set
        return u, bidx, free, S

    def _newton_direction(self, ua: Tensor, ba: Tensor, free: Tensor):
        """The diagonally scaled Newton step on the free coordinates (the positive-definite
        surrogate ``Hp`` where the Hessian is not). Returns ``(scaled step, decrement, scale,
        whether the Hessian was positive definite)``."""
        g, H, Hp = self._derivs(ua, ba)
        g, H, Hp = g[:, free], H[:, free][:, :, free], Hp[:, free][:, :, free]
        sc = 1.0 / torch.sqrt(torch.diagonal(Hp, dim1=1, dim2=2))
        gs = g * sc
        Hs = H * sc.unsqueeze(-1) * sc.unsqueeze(-2)
        Lc, info = torch.linalg.cholesky_ex(Hs)
        newton_ok = info == 0
        if not newton_ok.all():
            bad = ~newton_ok
            Hps = Hp[bad] * sc[bad].unsqueeze(-1) * sc[bad].unsqueeze(-2)
            eye = torch.eye(Hps.shape[-1], dtype=ua.dtype, device=ua.device)
            Lb, info_b = torch.linalg.cholesky_ex(Hps)
            if (info_b != 0).any():
                Lb = torch.linalg.cholesky(Hps + 1e-10 * eye)
            Lc = Lc.clone()
            Lc[bad] = Lb
        step_s = -torch.cholesky_solve(gs.unsqueeze(-1), Lc).squeeze(-1)
        dec = -(gs * step_s).sum(-1)  # (scaled) Newton/fixed-point decrement, >= 0
        return step_s, dec, sc, newton_ok

    def _armijo(self, ua: Tensor, ba: Tensor, step: Tensor, dec: Tensor, f0: Tensor,
                conv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Armijo backtracking along ``step`` (halving, at most 50 times; rows in ``conv`` stay
        put). Returns ``(new points, their objective, accepted)``."""
        alpha = torch.ones(ua.shape[0], dtype=ua.dtype, device=ua.device)
        accepted = conv.clone()
        unew = ua.clone()
        fnew = f0.clone()
        for _ls in range(50):
            todo = (~accepted).nonzero(as_tuple=True)[0]
            if todo.numel() == 0:
                break
            cand = ua[todo] + alpha[todo, None] * step[todo]
            fc = self._f(cand, ba[todo])
            ok = fc <= f0[todo] - 1e-4 * alpha[todo] * dec[todo]
            ok = ok & torch.isfinite(fc)
            okk = todo[ok]
            unew[okk], fnew[okk] = cand[ok], fc[ok]
            accepted[okk] = True
            alpha[todo[~ok]] *= 0.5
        return unew, fnew, accepted

    def _collect_modes(self, u, bidx, is_max, scale, S) -> list[Modes]:
        X = (u @ self._V.T).reshape(self.B, S, self.d)
        lp = self.log_prob(X.reshape(self.B, S, *self.image_shape))  # (B, S)
        out = []
        for b in range(self.B):
            rows = torch.arange(b * S, (b + 1) * S)
            cand = is_max[rows]
            if not cand.any():
                cand = torch.ones_like(cand)
            order = torch.argsort(lp[b], descending=True)
            keep: list[int] = []
            for j in order.tolist():
                if not cand[j]:
                    continue
                uj, sj = u[rows[j]], scale[rows[j]]
                free = u.shape[1] - sj.numel()
                if all(((uj - u[rows[i]])[free:] / sj).abs().max() > 1e-3 for i in keep):
                    keep.append(j)
            kt = torch.tensor(keep, dtype=torch.long)
            out.append(Modes(X[b, kt].reshape(len(keep), *self.image_shape), lp[b, kt]))
        return out
