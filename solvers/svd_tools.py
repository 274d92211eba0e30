"""Spectral helpers for linear operators with an exact SVD ``A = U diag(s) Vᵀ``
(docs/design.md §3, §9).

Coordinates: ``op.svd.Vt(x)`` maps an image batch ``(B, *in_shape)`` to ``(B, n)`` spectral
coefficients, ``n = prod(in_shape)``; ``op.svd.singular_values`` has shape ``(m,)``, ``m <= n``,
and belongs to the first ``m`` coordinates. The remaining ``n - m`` coordinates (and any
coordinate whose singular value is 0) span the null space of ``A``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["padded_singular_values", "spectral_norm_sq"]


def padded_singular_values(op, like: Tensor | None = None) -> Tensor:
    """Singular values zero-padded to all ``n`` input coordinates: shape ``(n,)``.

    Cast to ``like``'s dtype/device when given.
    """
    s = op.svd.singular_values
    n = 1
    for k in op.in_shape:
        n *= int(k)
    if like is not None:
        s = s.to(device=like.device, dtype=like.dtype)
    out = torch.zeros(n, dtype=s.dtype, device=s.device)
    out[: s.numel()] = s
    return out


def spectral_norm_sq(op, *, like: Tensor, iters: int = 50,
                     generator: torch.Generator | None = None) -> float:
    """``‖A‖₂²`` (largest eigenvalue of AᵀA): exact from the SVD when present, else by power
    iteration on ``AᵀA`` (``iters`` steps from a seeded random start; a slight under-estimate
    is possible, so callers that need a bound should add a safety margin).

    ``like`` fixes dtype/device of the probe; the result is a Python float.
    """
    if op.svd is not None:
        s = op.svd.singular_values
        return float(s.max() ** 2) if s.numel() else 0.0
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v = torch.randn((1, *op.in_shape), generator=g, dtype=like.dtype).to(like.device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        w = op.adjoint(op.forward(v))
        lam = float((v * w).sum())
        nw = w.norm()
        if nw == 0:
            return 0.0
        v = w / nw
    return lam
