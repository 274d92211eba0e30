"""``denoise``: ``A = I`` with the trivial SVD (``U = V = I``, all singular values 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SVD, LinearOperator
from .common import check_image_shape, no_overrides
from .registry import register


class _IdentitySVD(SVD):
    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape
        n = 1
        for s in shape:
            n *= s
        self.singular_values = torch.ones(n, dtype=torch.float64)

    def Vt(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def V(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], *self.shape)

    Ut = Vt
    U = V


class IdentityOperator(LinearOperator):
    def __init__(self, shape: tuple[int, int, int]):
        super().__init__(shape, shape)
        self.svd = _IdentitySVD(self.in_shape)

    def state(self) -> dict:
        """Shape only (``A = I``)."""
        return {"in_shape": self.in_shape, "params": self.params}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def pinv(self, y: Tensor) -> Tensor:
        return y


@register("denoise", family="denoising")
def build_denoise(image_shape, generator: torch.Generator, **overrides) -> IdentityOperator:
    no_overrides("denoise", overrides)
    return IdentityOperator(check_image_shape("denoise", image_shape))
