"""Inpainting presets: ``inpaint_box`` (DPS), ``inpaint_random`` (DPS / DDRM), ``inpaint_half``.

Measurement layout (DDRM ``Inpainting`` convention): ``y`` holds only the *observed* values,
``out_shape = (C·K,)`` with ``K`` kept pixels, ordered channel-major then raster order over the
kept pixels. Every channel of a dropped pixel is dropped. ``adjoint(y)`` scatters ``y`` back
into an image with zeros in the hole, i.e. ``adjoint(forward(x)) == mask * x`` — the DPS/deepinv
``y = mask ⊙ x`` image. The SVD is exact: ``U = I`` (``m = C·K``), all singular values 1,
``Vᵀ`` a permutation putting the kept coordinates first (same order as ``y``) and the missing
ones after. ``pinv == adjoint``.

Difference from DPS: DPS adds noise to the full ``mask ⊙ x`` image, hole included; here noise is
only drawn for observed values (the hole's noise carries no information about ``x``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SVD, LinearOperator, OperatorError
from .common import check_image_shape, no_overrides
from .registry import register


class _PermutationSVD(SVD):
    def __init__(self, C: int, H: int, W: int, kept: Tensor, missing: Tensor):
        self.C, self.H, self.W, self.HW = C, H, W, H * W
        self.kept, self.missing = kept, missing
        self.singular_values = torch.ones(C * kept.numel(), dtype=torch.float64)

    def Vt(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        flat = x.reshape(B, self.C, self.HW)
        a = flat[:, :, self.kept.to(x.device)].reshape(B, -1)
        b = flat[:, :, self.missing.to(x.device)].reshape(B, -1)
        return torch.cat([a, b], dim=1)

    def V(self, z: Tensor) -> Tensor:
        B = z.shape[0]
        K = self.kept.numel()
        out = z.new_zeros(B, self.C, self.HW)
        out[:, :, self.kept.to(z.device)] = z[:, : self.C * K].reshape(B, self.C, K)
        out[:, :, self.missing.to(z.device)] = z[:, self.C * K :].reshape(B, self.C, -1)
        return out.reshape(B, self.C, self.H, self.W)

    def U(self, w: Tensor) -> Tensor:
        return w.reshape(w.shape[0], -1)

    def Ut(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], -1)


class MaskOperator(LinearOperator):
    """``y = x[:, :, kept pixels]`` flattened; ``mask`` is an ``(H, W)`` 0/1 tensor (1 = observed)."""

    def __init__(self, image_shape: tuple[int, int, int], mask: Tensor, name: str = ""):
        C, H, W = image_shape
        mask = mask.reshape(H, W).to(torch.bool)
        self.kept = torch.nonzero(mask.flatten()).flatten()
        self.missing = torch.nonzero(~mask.flatten()).flatten()
        super().__init__(image_shape, (C * self.kept.numel(),), name=name)
        self.mask = mask.to(torch.float64)
        self.svd = _PermutationSVD(C, H, W, self.kept, self.missing)
        self.params = {"mask": self.mask.clone(), "observed_fraction": float(self.mask.mean())}

    def state(self) -> dict:
        """Shape, the 0/1 mask and the parameters (see :meth:`Operator.state`)."""
        return {"in_shape": self.in_shape, "mask": self.mask, "params": self.params}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        B, C = x.shape[0], self.in_shape[0]
        return x.reshape(B, C, -1)[:, :, self.kept.to(x.device)].reshape(B, -1)

    def adjoint(self, y: Tensor) -> Tensor:
        B = y.shape[0]
        C, H, W = self.in_shape
        out = y.new_zeros(B, C, H * W)
        out[:, :, self.kept.to(y.device)] = y.reshape(B, C, -1)
        return out.reshape(B, C, H, W)

    def pinv(self, y: Tensor) -> Tensor:
        """``A⁺ = Aᵀ`` (rows of ``A`` are orthonormal)."""
        return self.adjoint(y)

    def mask_image(self, like: Tensor | None = None) -> Tensor:
        """``(1, 1, H, W)`` 0/1 mask (1 = observed) for display and for DPS-style ``mask ⊙ x``."""
        m = self.mask[None, None]
        return m if like is None else m.to(device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------- presets


@register("inpaint_box", family="inpainting")
def build_box(image_shape, generator: torch.Generator, *, hole: tuple[int, int] | None = None,
              margin: tuple[int, int] | None = None, **overrides) -> MaskOperator:
    """DPS box inpainting: a ``hole`` (default ``H/2 × W/2``, i.e. 128×128 at 256×256,
    DPS ``mask_len_range=(128, 129)``) at a uniformly random position keeping a ``margin``
    (default ``16·H/256`` px, i.e. 16 px at 256, DPS ``margin=(16, 16)``) from the top/left
    border. As DPS (``util/img_utils.py: random_sq_bbox``), the top row ``t`` is uniform on
    ``[margin, H - margin - h)`` (numpy ``randint`` excludes the upper end) and likewise the left
    column. Drawn with ``torch.randint`` from ``generator``."""
    no_overrides("inpaint_box", overrides)
    C, H, W = check_image_shape("inpaint_box", image_shape, min_hw=2)
    h, w = hole if hole is not None else (H // 2, W // 2)
    mh, mw = margin if margin is not None else ((16 * H) // 256, (16 * W) // 256)
    if not (0 < h <= H and 0 < w <= W) or mh < 0 or mw < 0:
        raise OperatorError(f"inpaint_box: hole {(h, w)} / margin {(mh, mw)} invalid for image shape "
                            f"{tuple(image_shape)}")

    def draw(lo: int, hi: int, limit: int) -> int:
        if hi > lo:
            return int(torch.randint(lo, hi, (1,), generator=generator))
        return max(0, min(lo, limit))  # no room for a random placement (custom hole/margin)

    t = draw(mh, H - mh - h, H - h)
    left = draw(mw, W - mw - w, W - w)
    mask = torch.ones(H, W)
    mask[t : t + h, left : left + w] = 0
    op = MaskOperator((C, H, W), mask)
    op.params.update({"box": (t, t + h, left, left + w), "hole": (h, w), "margin": (mh, mw)})
    return op


@register("inpaint_random", family="inpainting")
def build_random(image_shape, generator: torch.Generator, *, ratio: float | None = None,
                 ratio_range: tuple[float, float] = (0.3, 0.7), **overrides) -> MaskOperator:
    """Random pixel dropping in all channels. The drop fraction ``p`` is ``ratio`` when given
    (DDRM ``inp`` uses 0.5) or else ``p ~ U(ratio_range)`` (DPS ``mask_prob_range=(0.3, 0.7)``),
    drawn once; then exactly ``int(H·W·p)`` distinct pixels are dropped (as DPS:
    ``np.random.choice(total, int(total * prob), replace=False)``), here via ``torch.randperm``."""
    no_overrides("inpaint_random", overrides)
    C, H, W = check_image_shape("inpaint_random", image_shape)
    if ratio is None:
        lo, hi = (float(v) for v in ratio_range)
        if not 0.0 <= lo <= hi < 1.0:
            raise OperatorError(f"inpaint_random: ratio_range must satisfy 0 <= lo <= hi < 1, got {ratio_range}")
        p = lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
    else:
        p = float(ratio)
        if not 0.0 <= p < 1.0:
            raise OperatorError(f"inpaint_random: ratio must be in [0, 1), got {ratio}")
    n_drop = int(H * W * p)
    drop = torch.randperm(H * W, generator=generator)[:n_drop]
    mask = torch.ones(H * W)
    mask[drop] = 0
    op = MaskOperator((C, H, W), mask.reshape(H, W))
    op.params.update({"drop_ratio": p, "n_dropped": n_drop})
    return op


_SIDES = ("lower", "upper", "left", "right")


@register("inpaint_half", family="inpainting")
def build_half(image_shape, generator: torch.Generator, *, side: str = "lower", **overrides) -> MaskOperator:
    """Half-image inpainting (CelebA-HQ half-face): the ``side`` half is missing — ``"lower"``
    (default: rows ``H//2 ..``), ``"upper"``, ``"left"`` or ``"right"``. The missing half has
    ``ceil(H/2)`` rows (or ``ceil(W/2)`` columns). Deterministic; ``generator`` is unused."""
    no_overrides("inpaint_half", overrides)
    C, H, W = check_image_shape("inpaint_half", image_shape, min_hw=2)
    if side not in _SIDES:
        raise OperatorError(f"inpaint_half: side must be one of {', '.join(_SIDES)}, got {side!r}")
    mask = torch.ones(H, W)
    if side == "lower":
        mask[H // 2 :, :] = 0
    elif side == "upper":
        mask[: H - H // 2, :] = 0
    elif side == "left":
        mask[:, : W - W // 2] = 0
    else:
        mask[:, W // 2 :] = 0
    op = MaskOperator((C, H, W), mask)
    op.params.update({"side": side})
    return op
