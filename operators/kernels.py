"""Blur kernels: DPS Gaussian (61×61, std 3.0), DDRM uniform (9 taps), and a seeded re-implementation
of the DPS motion-blur kernel generator (``LeviBorodenko/motionblur``, ``Kernel(size, intensity)``).

Kernels are float64 tensors normalised to sum 1. Every random number comes from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor

from .base import OperatorError


def gaussian_kernel_1d(size: int = 61, std: float = 3.0, truncate: float = 4.0) -> Tensor:
    """1-D factor of the DPS Gaussian kernel (``util/img_utils.py: Blurkernel``), float64.

    DPS filters a centred delta of length ``size`` with ``scipy.ndimage.gaussian_filter(·, std)``;
    scipy's kernel is ``exp(-t²/(2 std²))`` for ``|t| <= int(truncate·std + 0.5)`` (radius 12 at
    std 3), normalised, and the 2-D result is the outer product of this 1-D factor with itself.
    Taps outside the radius are exactly 0. Normalised to sum 1.
    """
    if size % 2 != 1:
        raise OperatorError(f"Gaussian kernel size must be odd, got {size}")
    radius = int(truncate * float(std) + 0.5)
    t = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-0.5 * t**2 / float(std) ** 2) * (t.abs() <= radius)
    return k / k.sum()


def uniform_kernel_1d(size: int = 9) -> Tensor:
    """DDRM ``deblur_uni`` 1-D kernel ``[1/size] * size``."""
    return torch.full((size,), 1.0 / size, dtype=torch.float64)


# ---------------------------------------------------------------- motion blur

_EPS = 0.1  # "tiny error used for numerical stability" of the reference generator


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _beta_int(g: torch.Generator, a: int, b: int) -> float:
    """Beta(a, b) for integer a, b: ``G_a / (G_a + G_b)`` with ``G_k`` a sum of k Exp(1)."""
    e = -torch.log1p(-torch.rand(a + b, generator=g, dtype=torch.float64))
    return float(e[:a].sum() / e.sum())


def _triangular(g: torch.Generator, left: float, mode: float, right: float) -> float:
    """Inverse-CDF sample of numpy's ``triangular(left, mode, right)``."""
    u = _uniform(g)
    span = right - left
    c = (mode - left) / span
    if u <= c:
        return left + math.sqrt(u * span * (mode - left))
    return right - math.sqrt((1.0 - u) * span * (right - mode))


def motion_kernel(generator: torch.Generator, size: int = 61, intensity: float = 0.5) -> Tensor:
    """Random motion-blur kernel, the algorithm of ``LeviBorodenko/motionblur`` (used by DPS
    ``MotionBlurOperator`` with ``size=61, intensity=0.5``), re-implemented with all randomness
    drawn from ``generator``:

    1. on a canvas of twice the size (diagonal ``D``), a maximal path length
       ``0.75·D·(U(0,1) + U(0, I²))``; steps ``Beta(1,30)·(1 - I + 0.1)·D`` (each shorter than the
       maximum) are added until their sum reaches it;
    2. a maximal angle ``U(0, I·π)``, a jitter probability ``Beta(2,20)``, a first angle
       ``U(-max, max)``, then ``|angle| ~ Triangular(0, I·max, max + 0.1)`` whose sign flips
       w.r.t. the previous one with the jitter probability;
    3. the path (cumulative sum of the complex steps) is centred on its centre of mass, rotated
       by ``U(0, π)`` and moved to the canvas centre;
    4. drawn as a white polyline (width ``int(D/150)``), Gaussian-blurred (radius ``int(0.01·D)``),
       resized to ``size`` with Lanczos, converted to 8-bit grey, normalised to sum 1.

    Steps 4 uses PIL exactly as the reference does. The random *stream* differs from numpy's, so
    kernels are distributed like the reference's but not identical to any given numpy seed.
    """
    if not 0.0 <= intensity <= 1.0:
        raise OperatorError(f"motion kernel intensity must be in [0, 1], got {intensity}")
    I = float(intensity)
    big = 2 * int(size)
    diag = math.sqrt(2.0) * big

    max_len = 0.75 * diag * (_uniform(generator) + _uniform(generator, 0.0, I**2))
    steps: list[float] = []
    while sum(steps) < max_len:
        step = (1.0 - (1.0 - _uniform(generator)) ** (1.0 / 30.0)) * (1.0 - I + _EPS) * diag  # Beta(1, 30)
        if step < max_len:
            steps.append(step)

    max_angle = _uniform(generator, 0.0, I * math.pi)
    jitter = _beta_int(generator, 2, 20)
    angles = [_uniform(generator, -max_angle, max_angle)]
    while len(angles) < len(steps):
        angle = _triangular(generator, 0.0, I * max_angle, max_angle + _EPS)
        sign = float(np.sign(angles[-1]))
        angles.append(-angle * sign if _uniform(generator) < jitter else angle * sign)

    path = np.cumsum(np.asarray(steps) * np.exp(1j * np.asarray(angles)))
    path = path - path.sum() / len(steps)
    path = path * np.exp(1j * _uniform(generator, 0.0, math.pi))
    path = path + (big + 1j * big) / 2.0

    img = Image.new("RGB", (big, big))
    ImageDraw.Draw(img).line(xy=[(float(p.real), float(p.imag)) for p in path], fill=(255, 255, 255),
                             width=int(diag / 150))
    img = img.filter(ImageFilter.GaussianBlur(radius=int(diag * 0.01)))
    img = img.resize((size, size), resample=Image.LANCZOS).convert("L")
    k = torch.from_numpy(np.asarray(img, dtype=np.float64).copy())
    if float(k.sum()) <= 0.0:  # path left the canvas entirely (never observed); fall back to a delta
        k = torch.zeros(size, size, dtype=torch.float64)
        k[size // 2, size // 2] = 1.0
    return k / k.sum()
