"""Small shared helpers for the operator presets: dtype/device casting, 1-D padding index maps
and shape checks. No operator lives here."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import OperatorError

PADDING_MODES = ("reflect", "symmetric", "circular", "zero")


def cast_like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` on ``like``'s device with ``like``'s (real) dtype; a no-op when they already match."""
    dtype = {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(like.dtype, like.dtype)
    if t.is_floating_point() and t.dtype != dtype:
        t = t.to(dtype=dtype)
    if t.device != like.device:
        t = t.to(device=like.device)
    return t


def pad_index(positions: Tensor, n: int, mode: str) -> tuple[Tensor, Tensor]:
    """Map (possibly out-of-range) 1-D positions to valid indices in ``[0, n)``.

    Returns ``(index, valid)``; ``valid`` is False where ``mode == "zero"`` and the position is
    outside the signal. Modes (``torch.nn.functional.pad`` names where they exist):

    * ``reflect``  — mirror without repeating the edge (``d c b | a b c d | c b a``), extended
      periodically with period ``2(n-1)`` so any pad width is defined; equal to torch's
      ``"reflect"`` whenever the pad is smaller than ``n``.
    * ``symmetric`` — mirror repeating the edge (``c b a | a b c d | d c b``), period ``2n``
      (MATLAB ``imresize`` boundary, DPS ``Resizer``).
    * ``circular`` — periodic, period ``n``.
    * ``zero``     — zero outside.
    """
    if mode not in PADDING_MODES:
        raise OperatorError(f"unknown padding {mode!r}; valid: {', '.join(PADDING_MODES)}")
    p = positions.long()
    valid = torch.ones_like(p, dtype=torch.bool)
    if mode == "circular":
        idx = torch.remainder(p, n)
    elif mode == "zero":
        valid = (p >= 0) & (p < n)
        idx = torch.where(valid, p, torch.zeros_like(p))
    elif mode == "symmetric":
        t = torch.remainder(p, 2 * n)
        idx = torch.where(t < n, t, 2 * n - 1 - t)
    else:  # reflect
        if n == 1:
            idx = torch.zeros_like(p)
        else:
            period = 2 * (n - 1)
            t = torch.remainder(p, period)
            idx = torch.where(t < n, t, period - t)
    return idx, valid


def pad_matrix(n: int, before: int, after: int, mode: str) -> Tensor:
    """Dense float64 ``(n + before + after, n)`` matrix ``P`` with ``P @ x`` the padded signal."""
    pos = torch.arange(-before, n + after)
    idx, valid = pad_index(pos, n, mode)
    P = torch.zeros(pos.numel(), n, dtype=torch.float64)
    rows = torch.arange(pos.numel())
    P.index_put_((rows[valid], idx[valid]), torch.ones(int(valid.sum()), dtype=torch.float64), accumulate=True)
    return P


def correlation_matrix(kernel: Tensor, n: int, mode: str) -> Tensor:
    """Dense float64 ``(n, n)`` matrix of 1-D 'same' cross-correlation with an odd-length
    ``kernel`` (``y[i] = sum_a k[a] x_pad[i + a]``, centre tap ``k[len//2]`` on ``x[i]``), the
    signal padded by ``len//2`` on each side with ``mode`` (see :func:`pad_index`).

    This is exactly what ``torch.nn.functional.conv1d`` computes after ``F.pad(x, (r, r), mode)``.
    """
    k = kernel.to(torch.float64).flatten()
    if k.numel() % 2 != 1:
        raise OperatorError(f"blur kernel length must be odd, got {k.numel()}")
    r = k.numel() // 2
    i = torch.arange(n).unsqueeze(1)
    a = torch.arange(k.numel()).unsqueeze(0)
    idx, valid = pad_index(i + a - r, n, mode)
    rows = i.expand_as(idx)
    vals = k.unsqueeze(0).expand_as(idx)
    M = torch.zeros(n, n, dtype=torch.float64)
    M.index_put_((rows[valid], idx[valid]), vals[valid], accumulate=True)
    return M


def check_image_shape(name: str, image_shape: tuple[int, ...], *, min_hw: int = 1,
                      multiple: int = 1) -> tuple[int, int, int]:
    """Validate ``(C, H, W)``; raise :class:`OperatorError` naming the shape otherwise."""
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise OperatorError(f"{name}: image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    C, H, W = (int(s) for s in image_shape)
    if H < min_hw or W < min_hw:
        raise OperatorError(f"{name}: image shape {tuple(image_shape)} too small (H and W must be >= {min_hw})")
    if H % multiple or W % multiple:
        raise OperatorError(
            f"{name}: image shape {tuple(image_shape)} not supported: H and W must be divisible by {multiple}"
        )
    return C, H, W


def no_overrides(name: str, overrides: dict) -> None:
    if overrides:
        raise OperatorError(f"{name}: unknown parameter(s) {', '.join(sorted(overrides))}")
