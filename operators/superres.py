"""Super-resolution presets: ``sr4_avgpool`` (DDRM ``sr4``) and ``sr4_bicubic`` (DPS ``Resizer``,
MATLAB ``imresize(x, 1/4, 'bicubic')`` with antialiasing).

Both map ``(C, H, W)`` to ``(C, H/f, W/f)`` with ``f = 4`` (override ``factor=``); H and W must be
divisible by ``f``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import SVD, LinearOperator
from .common import cast_like, check_image_shape, no_overrides, pad_index
from .kronecker import SeparableOperator
from .registry import register

# ------------------------------------------------------------------ block average


def _householder_basis(k: int) -> Tensor:
    """Symmetric orthogonal ``k × k`` matrix whose first column is ``ones / sqrt(k)``."""
    u = torch.full((k,), 1.0 / math.sqrt(k), dtype=torch.float64)
    v = torch.zeros(k, dtype=torch.float64)
    v[0] = 1.0
    v = v - u
    nv = float(v @ v)
    if nv == 0.0:  # k == 1
        return torch.eye(k, dtype=torch.float64)
    return torch.eye(k, dtype=torch.float64) - 2.0 * torch.outer(v, v) / nv


class _BlockSVD(SVD):
    """Per ``f×f`` block: row ``[1/f², …]`` = ``1 · (1/f) · qᵀ`` with ``q = ones/f`` the first
    column of an orthogonal ``Q``. Spectral layout: the ``C·h·w`` first-coefficients (same order
    as ``y``) first, then the other ``f²-1`` coefficients of every block."""

    def __init__(self, C: int, H: int, W: int, f: int):
        self.C, self.H, self.W, self.f = C, H, W, f
        self.h, self.w = H // f, W // f
        self.Q = _householder_basis(f * f)
        self.singular_values = torch.full((C * self.h * self.w,), 1.0 / f, dtype=torch.float64)

    def _blocks(self, x: Tensor) -> Tensor:
        B, f = x.shape[0], self.f
        b = x.reshape(B, self.C, self.h, f, self.w, f).permute(0, 1, 2, 4, 3, 5)
        return b.reshape(B, self.C, self.h, self.w, f * f)

    def Vt(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        c = self._blocks(x) @ cast_like(self.Q, x)  # Qᵀ b for every block (Q symmetric)
        return torch.cat([c[..., 0].reshape(B, -1), c[..., 1:].reshape(B, -1)], dim=1)

    def V(self, z: Tensor) -> Tensor:
        B, f, m = z.shape[0], self.f, self.singular_values.numel()
        c = torch.cat(
            [z[:, :m].reshape(B, self.C, self.h, self.w, 1), z[:, m:].reshape(B, self.C, self.h, self.w, f * f - 1)],
            dim=-1,
        )
        b = c @ cast_like(self.Q, z).T
        b = b.reshape(B, self.C, self.h, self.w, f, f).permute(0, 1, 2, 4, 3, 5)
        return b.reshape(B, self.C, self.H, self.W)

    def U(self, w: Tensor) -> Tensor:
        return w.reshape(w.shape[0], self.C, self.h, self.w)

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)


class AvgPoolOperator(LinearOperator):
    """``f×f`` block average per channel (DDRM ``SuperResolution``); exact SVD with singular
    value ``1/f`` per block; ``A⁺ y`` = nearest-neighbour upsampling of ``y``."""

    def __init__(self, C: int, H: int, W: int, f: int):
        super().__init__((C, H, W), (C, H // f, W // f))
        self.f = f
        self.svd = _BlockSVD(C, H, W, f)
        self.params = {"factor": f}

    def state(self) -> dict:
        """Shape and pooling factor."""
        return {"in_shape": self.in_shape, "factor": self.f, "params": self.params}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        B, (C, H, W), f = x.shape[0], self.in_shape, self.f
        return x.reshape(B, C, H // f, f, W // f, f).mean(dim=(3, 5))

    def adjoint(self, y: Tensor) -> Tensor:
        f = self.f
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / (f * f)

    def pinv(self, y: Tensor) -> Tensor:
        f = self.f
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


@register("sr4_avgpool", family="super_resolution")
def build_avgpool(image_shape, generator: torch.Generator, *, factor: int = 4, **overrides) -> AvgPoolOperator:
    no_overrides("sr4_avgpool", overrides)
    C, H, W = check_image_shape("sr4_avgpool", image_shape, min_hw=factor, multiple=factor)
    return AvgPoolOperator(C, H, W, int(factor))


# ------------------------------------------------------------------ bicubic (MATLAB imresize)


def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (MATLAB ``imresize`` 'cubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2))
    return near + far


def imresize_matrix(in_len: int, out_len: int, antialiasing: bool = True) -> Tensor:
    """Dense float64 ``(out_len, in_len)`` matrix of MATLAB ``imresize`` bicubic along one axis.

    MATLAB's ``contributions`` (also DPS ``util/resizer.py``): output pixel ``i`` (1-based) maps
    to ``u = i/s + (1 - 1/s)/2`` with ``s = out/in``; when downscaling with antialiasing the kernel
    is stretched, ``h(x) = s·cubic(s·x)`` with width ``4/s``; taps ``left + 0..P-1`` with
    ``left = floor(u - width/2)`` and ``P = ceil(width) + 2``; weights normalised to sum 1;
    out-of-range taps mirror *symmetrically* (edge repeated).
    """
    s = out_len / in_len
    aa = antialiasing and s < 1
    width = 4.0 / s if aa else 4.0
    kern = (lambda t: s * cubic(s * t)) if aa else cubic
    i = np.arange(1, out_len + 1, dtype=np.float64)
    u = i / s + 0.5 * (1.0 - 1.0 / s)
    left = np.floor(u - width / 2.0)
    P = math.ceil(width) + 2
    taps = left[:, None] + np.arange(P)[None, :]  # 1-based input positions
    w = kern(u[:, None] - taps)
    w = w / w.sum(axis=1, keepdims=True)
    idx, _ = pad_index(torch.from_numpy(taps.astype(np.int64) - 1), in_len, "symmetric")
    M = torch.zeros(out_len, in_len, dtype=torch.float64)
    rows = torch.arange(out_len).unsqueeze(1).expand_as(idx)
    M.index_put_((rows.reshape(-1), idx.reshape(-1)), torch.from_numpy(w).reshape(-1), accumulate=True)
    return M


DDRM_SVD_THRESHOLD = 3e-2


@register("sr4_bicubic", family="super_resolution")
def build_bicubic(image_shape, generator: torch.Generator, *, factor: int = 4,
                  svd_threshold: float = DDRM_SVD_THRESHOLD, **overrides) -> SeparableOperator:
    """MATLAB-style antialiased bicubic ``×1/f`` (DPS ``Resizer``), separable, exact SVD.

    ``forward`` (which measures ``y``) is the exact resize; ``svd`` is its exact SVD (all
    singular values kept). ``params["svd_threshold"]`` (3e-2, DDRM ``SRConv``) is what a
    DDRM-faithful solver applies via ``op.svd.thresholded(op.params["svd_threshold"])``."""
    no_overrides("sr4_bicubic", overrides)
    f = int(factor)
    C, H, W = check_image_shape("sr4_bicubic", image_shape, min_hw=f, multiple=f)
    op = SeparableOperator(C, imresize_matrix(H, H // f), imresize_matrix(W, W // f))
    op.params = {"factor": f, "kernel": "cubic a=-0.5, antialiased", "boundary": "symmetric",
                 "svd_threshold": float(svd_threshold)}
    return op
