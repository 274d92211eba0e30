"""``phase_retrieval``: ``y = |F(pad(x))|`` (DPS ``PhaseRetrievalOperator``, nonlinear).

DPS (``guided_diffusion/measurements.py``): ``pad = int((oversample / 8) * 256)`` on every side
(64 px for oversample 2 at 256×256, padded size 384), zero padding, then ``fft2_m`` =
fastMRI's centred orthonormal FFT (``fftshift(fftn(ifftshift(x), norm="ortho"))``), and the
modulus. We follow it, with the pad scaled to the image: ``int(oversample / 8 * H)`` rows and
``int(oversample / 8 * W)`` columns per side. ``out_shape = (C, H + 2 p_h, W + 2 p_w)``.
Differentiable (autograd through ``torch.fft``); no adjoint, no SVD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Operator, OperatorError
from .common import check_image_shape, no_overrides
from .registry import register


class PhaseRetrievalOperator(Operator):
    def __init__(self, C: int, H: int, W: int, oversample: float):
        self.pad_h, self.pad_w = int((oversample / 8.0) * H), int((oversample / 8.0) * W)
        super().__init__((C, H, W), (C, H + 2 * self.pad_h, W + 2 * self.pad_w))
        self.params = {"oversample": float(oversample), "pad": (self.pad_h, self.pad_w)}

    def state(self) -> dict:
        """Shape, zero-padding widths and the parameters."""
        return {"in_shape": self.in_shape, "pad": (self.pad_h, self.pad_w), "params": self.params}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        xp = F.pad(x, (self.pad_w, self.pad_w, self.pad_h, self.pad_h))
        z = torch.fft.ifftshift(xp, dim=(-2, -1))
        z = torch.fft.fftn(z, dim=(-2, -1), norm="ortho")
        return torch.fft.fftshift(z, dim=(-2, -1)).abs()


@register("phase_retrieval", family="phase_retrieval")
def build_phase(image_shape, generator: torch.Generator, *, oversample: float = 2.0,
                **overrides) -> PhaseRetrievalOperator:
    no_overrides("phase_retrieval", overrides)
    if oversample < 0:
        raise OperatorError(f"phase_retrieval: oversample must be >= 0, got {oversample}")
    C, H, W = check_image_shape("phase_retrieval", image_shape)
    return PhaseRetrievalOperator(C, H, W, float(oversample))
