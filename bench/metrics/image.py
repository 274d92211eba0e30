"""Pixel-space image metrics: PSNR, SSIM, MSE and measurement consistency.

All functions take NCHW pixel-space batches and return ``(B,)`` float64 tensors on the CPU.

* ``psnr``: ``10 log10(1 / mean((clip(x_hat) - clip(x))**2))`` in dB, data range 1, per image
  over all channels and pixels; ``+inf`` for identical images.
* ``ssim``: ``skimage.metrics.structural_similarity`` on clipped images, ``data_range=1``,
  ``channel_axis=0`` (mean over channels), and the Wang et al. (2004) protocol:
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (11x11 Gaussian window,
  K1=0.01, K2=0.03). Images smaller than 11 px on a side cannot hold that window: for
  7 <= min(H, W) < 11 (e.g. 8x8 digits) skimage's default 7x7 uniform window is used
  (``gaussian_weights=False``, ``use_sample_covariance=True``); below 7 px the value is NaN.
* ``mse``: ``mean((x_hat - x)**2)`` on *unclipped* pixel images (the solver's actual output).
* ``consistency``: ``||A(x_hat_model) - y|| / (sigma_y sqrt(m))`` in model space with
  ``x_hat_model = pixel_to_model(x_hat)`` (unclipped) and ``m`` the number of measurement
  entries per image; about 1 for a reconstruction that explains ``y`` down to the noise level.
  NaN when ``sigma_y == 0`` (no noise scale to normalise by).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from invbench.operators.conventions import pixel_to_model
from skimage.metrics import structural_similarity
from torch import Tensor

from . import Metric, MetricContext

SSIM_PARAMS = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
SSIM_SMALL_PARAMS = {"data_range": 1.0, "gaussian_weights": False, "win_size": 7, "use_sample_covariance": True}


def _pair(x_hat: Tensor, x_true: Tensor) -> tuple[Tensor, Tensor]:
    if x_hat.shape != x_true.shape or x_hat.ndim != 4:
        raise ValueError(f"expected two NCHW batches of equal shape, got {tuple(x_hat.shape)} and "
                         f"{tuple(x_true.shape)}")
    return x_hat.detach().to("cpu", torch.float64), x_true.detach().to("cpu", torch.float64)


def mse(x_hat: Tensor, x_true: Tensor) -> Tensor:
    """Per-image mean squared error in pixel units² (unclipped images), ``(B,)`` float64."""
    a, b = _pair(x_hat, x_true)
    return ((a - b) ** 2).flatten(1).mean(1)


def psnr(x_hat: Tensor, x_true: Tensor) -> Tensor:
    """Per-image PSNR in dB with data range 1 on images clipped to [0, 1], ``(B,)`` float64."""
    a, b = _pair(x_hat, x_true)
    e = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / e)  # e == 0 -> +inf


def ssim(x_hat: Tensor, x_true: Tensor) -> Tensor:
    """Per-image SSIM (skimage, see module doc) on images clipped to [0, 1], ``(B,)`` float64."""
    a, b = _pair(x_hat, x_true)
    a = a.clamp(0, 1).numpy()
    b = b.clamp(0, 1).numpy()
    side = min(a.shape[2], a.shape[3])
    if side >= 11:
        params = SSIM_PARAMS
    elif side >= 7:
        params = SSIM_SMALL_PARAMS
    else:
        return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
    vals = [structural_similarity(b[i], a[i], channel_axis=0, **params) for i in range(a.shape[0])]
    return torch.tensor(np.asarray(vals, dtype=np.float64))


def consistency(x_hat: Tensor, y: Tensor, operator, sigma_y: float) -> Tensor:
    """``||A(pixel_to_model(x_hat)) - y|| / (sigma_y sqrt(m))`` per image (model space), ``(B,)``.

    ``x_hat`` is pixel space (unclipped); ``y`` model space. NaN when ``sigma_y == 0``.
    """
    if sigma_y == 0:
        return torch.full((x_hat.shape[0],), math.nan, dtype=torch.float64)
    with torch.no_grad():
        ax = operator.forward(pixel_to_model(x_hat.to(device=y.device, dtype=y.dtype)))
    r = (ax - y).detach().to("cpu", torch.float64).flatten(1)
    m = r.shape[1]
    return r.norm(dim=1) / (float(sigma_y) * math.sqrt(m))


class PSNR(Metric):
    name = "psnr"
    columns = ("psnr",)
    backbone = "formula: 10 log10(1/MSE), data range 1, clipped"

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:
        return {"psnr": psnr(ctx.x_hat, ctx.x_true)}


class SSIM(Metric):
    name = "ssim"
    columns = ("ssim",)

    def __init__(self):
        import skimage

        self.backbone = (
            f"skimage {skimage.__version__} structural_similarity, data_range=1, gaussian sigma=1.5, "
            "use_sample_covariance=False (7x7 uniform window below 11 px)"
        )

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:
        return {"ssim": ssim(ctx.x_hat, ctx.x_true)}


class MSE(Metric):
    name = "mse"
    columns = ("mse",)
    backbone = "formula: mean squared error, pixel units, unclipped"

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:
        return {"mse": mse(ctx.x_hat, ctx.x_true)}


class Consistency(Metric):
    name = "consistency"
    columns = ("consistency",)
    backbone = "formula: ||A x_hat - y|| / (sigma_y sqrt(m)), model space; NaN if sigma_y = 0"

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:
        return {"consistency": consistency(ctx.x_hat, ctx.y, ctx.operator, ctx.sigma_y)}
