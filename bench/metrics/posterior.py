"""Exact-posterior metrics for analytic priors (Gaussian mixtures), all in model space.

With ``x = pixel_to_model(x_hat)`` (unclipped), ``d`` the number of pixels x channels,
``x_map = posterior.map()`` and ``mu = posterior.mean()``:

* ``dist_to_map     = ||x - x_map|| / sqrt(d)``       (RMS distance, model units)
* ``rel_dist_to_map = ||x - x_map|| / ||x_map||``     (dimensionless)
* ``logpost_gap     = log p(x_map | y) - log p(x | y)``  (nats; >= 0 up to the accuracy of the
  MAP search and floating point)
* ``err_post_mean   = ||x - mu|| / sqrt(d)``          (RMS distance, model units)

The posterior object comes from ``prior.posterior(A, y, sigma_y)`` and has ``map()``,
``mean()`` (each ``(B, C, H, W)`` or ``(B, d)``) and ``log_prob(x) -> (B,)``. When
``ctx.posterior`` is None the metric returns NaN columns (the store writes NULL).
"""

from __future__ import annotations

import math

import torch
from invbench.operators.conventions import pixel_to_model
from torch import Tensor

from . import Metric, MetricContext

COLUMNS = ("dist_to_map", "rel_dist_to_map", "logpost_gap", "err_post_mean")


def posterior_metrics(x_hat_pixel: Tensor, posterior) -> dict[str, Tensor]:
    """The four exact-posterior metrics for a pixel-space batch ``x_hat_pixel`` ``(B, C, H, W)``."""
    x = pixel_to_model(x_hat_pixel.detach())
    B = x.shape[0]
    with torch.no_grad():
        x_map = posterior.map().detach()
        mu = posterior.mean().detach()
        dtype, device = x_map.dtype, x_map.device
        xm = x.to(device=device, dtype=dtype).reshape(x_map.shape)
        lp_x = posterior.log_prob(xm).detach()
        lp_map = posterior.log_prob(x_map).detach()
    xf = x.to("cpu", torch.float64).reshape(B, -1)
    mapf = x_map.to("cpu", torch.float64).reshape(B, -1)
    muf = mu.to("cpu", torch.float64).reshape(B, -1)
    d = xf.shape[1]
    dist = (xf - mapf).norm(dim=1)
    return {
        "dist_to_map": dist / math.sqrt(d),
        "rel_dist_to_map": dist / mapf.norm(dim=1),
        "logpost_gap": (lp_map.to("cpu", torch.float64) - lp_x.to("cpu", torch.float64)).reshape(B),
        "err_post_mean": (xf - muf).norm(dim=1) / math.sqrt(d),
    }


class PosteriorMetrics(Metric):
    name = "posterior"
    columns = COLUMNS
    needs_posterior = True
    backbone = "exact posterior of the analytic prior (prior.posterior(A, y, sigma_y))"

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:
        if ctx.posterior is None:
            nan = torch.full((ctx.x_hat.shape[0],), math.nan, dtype=torch.float64)
            return {c: nan.clone() for c in COLUMNS}
        return posterior_metrics(ctx.x_hat, ctx.posterior)
