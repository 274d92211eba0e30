"""Separable linear operators ``A x = A_h X A_wᵀ`` (per channel) and their exact SVD.

The SVD of a Kronecker product is the Kronecker product of the 1-D SVDs (computed once in
float64): with ``A_h = U_h diag(s_h) V_hᵀ`` (``m_h × H``) and ``A_w = U_w diag(s_w) V_wᵀ``
(``m_w × W``), ``A = (U_h ⊗ U_w) diag(s_h ⊗ s_w) (V_h ⊗ V_w)ᵀ`` on every channel. The spectral
coordinates are permuted so that the ``m = C m_h m_w`` singular values are sorted in descending
order (stable sort; DDRM ``Deblurring`` does the same) and the null-space coordinates
(row index ``>= m_h`` or column index ``>= m_w`` of ``V_hᵀ X V_w``) follow in raster order.

Everything is two small matmuls plus one gather per call; no loops over pixels or batch items.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from .base import SVD, LinearOperator, OperatorError, safe_div
from .common import cast_like


def svd_1d(M: Tensor, rank_rtol: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Full float64 SVD ``M = U diag(s) Vᵀ`` of an ``m × n`` matrix (``m <= n``).

    Returns ``U (m, m)``, ``s (m,)`` and ``V (n, n)``. Singular values below
    ``rank_rtol * s.max()`` (default ``max(m, n) * eps64``, numpy's ``matrix_rank`` rule) are
    set to exactly zero: they are round-off of an exactly singular matrix, and keeping them
    would make ``A⁺`` explode.
    """
    M = M.to(torch.float64)
    m, n = M.shape
    if m > n:
        raise OperatorError(f"1-D factor must be wide or square, got {m}x{n}")
    U, s, Vh = torch.linalg.svd(M, full_matrices=True)
    tol = (max(m, n) * torch.finfo(torch.float64).eps if rank_rtol is None else rank_rtol) * (
        float(s.max()) if s.numel() else 0.0
    )
    s = torch.where(s > tol, s, torch.zeros_like(s))
    return U, s, Vh.T.contiguous()


def pinv_1d(U: Tensor, s: Tensor, V: Tensor) -> Tensor:
    """``(n, m)`` pseudo-inverse from a 1-D SVD (zero singular values dropped)."""
    m = s.numel()
    return (V[:, :m] * safe_div(1.0, s)) @ U.T


class KroneckerSVD(SVD):
    """Exact SVD of ``X -> A_h X A_wᵀ`` applied to each of ``C`` channels (see module doc)."""

    def __init__(self, channels: int, Uh: Tensor, sh: Tensor, Vh: Tensor, Uw: Tensor, sw: Tensor, Vw: Tensor):
        self.C = int(channels)
        self.H, self.W = Vh.shape[0], Vw.shape[0]
        self.mh, self.mw = sh.numel(), sw.numel()
        self.Uh, self.Vh, self.Uw, self.Vw = Uh, Vh, Uw, Vw
        s2 = (sh[:, None] * sw[None, :]).reshape(1, -1).expand(self.C, -1).reshape(-1)
        s_sorted, order = torch.sort(s2, descending=True, stable=True)
        self.singular_values = s_sorted
        ih, iw = (order % (self.mh * self.mw)) // self.mw, order % self.mw
        self.factor_h, self.factor_w = sh[ih], sw[iw]  # 1-D factors of each sorted singular value
        c, rest = order // (self.mh * self.mw), order % (self.mh * self.mw)
        i, j = rest // self.mw, rest % self.mw
        head = c * (self.H * self.W) + i * self.W + j  # positions in the (C, H, W) layout of Vhᵀ X Vw
        n = self.C * self.H * self.W
        in_head = torch.zeros(n, dtype=torch.bool)
        in_head[head] = True
        tail = torch.arange(n)[~in_head]
        self.perm_in = torch.cat([head, tail])
        self.perm_out = order  # positions in the (C, m_h, m_w) layout of U_hᵀ Y U_w
        self.inv_perm_in = torch.argsort(self.perm_in)
        self.inv_perm_out = torch.argsort(self.perm_out)

    def thresholded(self, threshold: float) -> SVD:
        """DDRM semantics (``Deblurring``/``SRConv``): the *1-D* singular values below
        ``threshold`` are zeroed before the outer product, so a 2-D value is zeroed when either
        of its factors is ``< threshold``. The copy no longer reproduces ``forward``."""
        new = copy.copy(self)
        keep = (self.factor_h >= threshold) & (self.factor_w >= threshold)
        new.singular_values = torch.where(keep, self.singular_values, torch.zeros_like(self.singular_values))
        return new

    def Vt(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        Z = cast_like(self.Vh, x).T @ x @ cast_like(self.Vw, x)
        return Z.reshape(B, -1)[:, self.perm_in.to(x.device)]

    def V(self, z: Tensor) -> Tensor:
        B = z.shape[0]
        Z = z[:, self.inv_perm_in.to(z.device)].reshape(B, self.C, self.H, self.W)
        return cast_like(self.Vh, z) @ Z @ cast_like(self.Vw, z).T

    def Ut(self, y: Tensor) -> Tensor:
        B = y.shape[0]
        Wm = cast_like(self.Uh, y).T @ y @ cast_like(self.Uw, y)
        return Wm.reshape(B, -1)[:, self.perm_out.to(y.device)]

    def U(self, w: Tensor) -> Tensor:
        B = w.shape[0]
        Wm = w[:, self.inv_perm_out.to(w.device)].reshape(B, self.C, self.mh, self.mw)
        return cast_like(self.Uh, w) @ Wm @ cast_like(self.Uw, w).T


class SeparableOperator(LinearOperator):
    """``A x = A_h X A_wᵀ`` per channel with exact adjoint, ``A⁺ = A_h⁺ ⊗ A_w⁺`` and a
    :class:`KroneckerSVD`.

    ``Ah`` (``m_h × H``) and ``Aw`` (``m_w × W``) are float64 matrices; inputs of any float dtype
    and device are accepted (the matrices are cast on use; ``op.to(device)`` avoids repeated
    transfers).
    """

    def __init__(self, C: int, Ah: Tensor, Aw: Tensor, name: str = ""):
        mh, H = Ah.shape
        mw, W = Aw.shape
        super().__init__((C, H, W), (C, mh, mw), name=name)
        self.Ah, self.Aw = Ah.to(torch.float64), Aw.to(torch.float64)
        Uh, sh, Vh = svd_1d(self.Ah)
        Uw, sw, Vw = svd_1d(self.Aw)
        self.Ah_pinv, self.Aw_pinv = pinv_1d(Uh, sh, Vh), pinv_1d(Uw, sw, Vw)
        self.svd = KroneckerSVD(C, Uh, sh, Vh, Uw, sw, Vw)

    def state(self) -> dict:
        """Shape, the two 1-D factors ``A_h``, ``A_w`` and the parameters (the SVD and the
        pseudo-inverses are derived from the factors)."""
        return {"in_shape": self.in_shape, "Ah": self.Ah, "Aw": self.Aw, "params": self.params}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return cast_like(self.Ah, x) @ x @ cast_like(self.Aw, x).T

    def adjoint(self, y: Tensor) -> Tensor:
        return cast_like(self.Ah, y).T @ y @ cast_like(self.Aw, y)

    def pinv(self, y: Tensor) -> Tensor:
        return cast_like(self.Ah_pinv, y) @ y @ cast_like(self.Aw_pinv, y).T
