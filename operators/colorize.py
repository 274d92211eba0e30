"""``colorize``: grey-scale measurement ``y = mean over channels`` (DDRM ``Colorization``).

DDRM uses the row ``[0.3333, 0.3334, 0.3333]``; we use the exact mean ``1/C`` (difference
1e-4 in one weight). ``out_shape = (1, H, W)``. Exact per-pixel SVD: ``row = 1 · (1/√C) · qᵀ``
with ``q = ones/√C`` the first column of an orthogonal ``C × C`` matrix; one singular value
``1/√C`` per pixel; ``A⁺ y`` copies ``y`` to every channel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import SVD, LinearOperator
from .common import cast_like, check_image_shape, no_overrides
from .registry import register
from .superres import _householder_basis


class _PixelSVD(SVD):
    """Spectral layout: the ``H·W`` first coefficients (one per pixel, raster order = ``y``),
    then the other ``C-1`` coefficients of every pixel."""

    def __init__(self, C: int, H: int, W: int):
        self.C, self.H, self.W = C, H, W
        self.Q = _householder_basis(C)
        self.singular_values = torch.full((H * W,), 1.0 / math.sqrt(C), dtype=torch.float64)

    def Vt(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        c = cast_like(self.Q, x).T @ x.reshape(B, self.C, -1)  # (B, C, HW)
        return torch.cat([c[:, 0], c[:, 1:].reshape(B, -1)], dim=1)

    def V(self, z: Tensor) -> Tensor:
        B, n = z.shape[0], self.H * self.W
        c = torch.cat([z[:, :n].reshape(B, 1, n), z[:, n:].reshape(B, self.C - 1, n)], dim=1)
        return (cast_like(self.Q, z) @ c).reshape(B, self.C, self.H, self.W)

    def U(self, w: Tensor) -> Tensor:
        return w.reshape(w.shape[0], 1, self.H, self.W)

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)


class ColorizeOperator(LinearOperator):
    def __init__(self, C: int, H: int, W: int):
        super().__init__((C, H, W), (1, H, W))
        self.svd = _PixelSVD(C, H, W)
        self.params = {"weights": [1.0 / C] * C}

    def state(self) -> dict:
        """Shape and the channel weights (in the parameters)."""
        return {"in_shape": self.in_shape, "params": self.params}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x.mean(dim=1, keepdim=True)

    def adjoint(self, y: Tensor) -> Tensor:
        return y.expand(-1, self.in_shape[0], -1, -1) / self.in_shape[0]

    def pinv(self, y: Tensor) -> Tensor:
        return y.expand(-1, self.in_shape[0], -1, -1).clone()


@register("colorize", family="colorization")
def build_colorize(image_shape, generator: torch.Generator, **overrides) -> ColorizeOperator:
    no_overrides("colorize", overrides)
    C, H, W = check_image_shape("colorize", image_shape)
    return ColorizeOperator(C, H, W)
