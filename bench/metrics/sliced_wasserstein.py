"""Sliced Wasserstein distance between two sample sets (analytic priors: solver samples vs
exact posterior samples for one measurement).

``SW_p(X, Y) = ( mean_l W_p^p(<theta_l, X>, <theta_l, Y>) )^(1/p)`` with ``L`` directions
``theta_l`` uniform on the unit sphere (normalised standard normals from a
``torch.Generator`` seeded with ``seed``: same seed, same directions, same value). Each 1-D
``W_p`` between the two empirical measures (uniform weights, sizes ``n`` and ``m`` may differ)
is exact: the quantile functions are step functions, so ``W_p^p`` is a finite sum over the
merged breakpoints ``{i/n} ∪ {j/m}`` (integer arithmetic on the common grid ``lcm(n, m)``).
Units: those of the samples (model space in the harness).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from invbench.operators.conventions import pixel_to_model
from torch import Tensor

from . import SetMetric


def _breakpoints(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval weights and the quantile indices of each merged interval (0-based)."""
    L = n * m // math.gcd(n, m)
    t = np.union1d(np.arange(n + 1) * (L // n), np.arange(m + 1) * (L // m))  # integers 0..L
    lo, hi = t[:-1], t[1:]
    w = (hi - lo) / L
    # on (lo, hi] the quantile of an n-point sample is its ceil(t n / L)-th point (1-based)
    ix = (hi * n - 1) // L  # = ceil(hi n / L) - 1 evaluated at the interval's right end
    iy = (hi * m - 1) // L
    return w, ix, iy


def wasserstein_1d(x: Tensor, y: Tensor, p: float = 2.0) -> Tensor:
    """Exact ``W_p^p`` between the empirical measures of the columns of ``x`` (n, L) and ``y`` (m, L)."""
    xs = torch.sort(x.to(torch.float64), dim=0).values
    ys = torch.sort(y.to(torch.float64), dim=0).values
    w, ix, iy = _breakpoints(xs.shape[0], ys.shape[0])
    diff = (xs[torch.as_tensor(ix)] - ys[torch.as_tensor(iy)]).abs() ** p  # (K, L)
    return (torch.as_tensor(w, dtype=torch.float64)[:, None] * diff).sum(0)


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0, p: float = 2.0
) -> float:
    """Sliced ``W_p`` between samples ``x`` (n, d) and ``y`` (m, d) (any trailing shape is flattened).

    Deterministic given ``seed``; directions drawn in float64 on the CPU.
    """
    x = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
    y = y.detach().to("cpu", torch.float64).reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sample dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError("sliced Wasserstein needs at least one sample in each set")
    g = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(int(n_projections), x.shape[1], generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    wpp = wasserstein_1d(x @ theta.T, y @ theta.T, p=p)
    return float(wpp.mean() ** (1.0 / p))


class SlicedWassersteinMetric(SetMetric):
    """Set metric: solver samples for one measurement vs exact posterior samples.

    ``compute(recon, truth=None, posterior=..., reference=None)``: ``recon`` is ``(n, C, H, W)``
    pixel space (mapped to model space here); the reference is ``reference`` (model space,
    ``(m, ...)``) or ``n_reference`` samples drawn from ``posterior.sample`` with a generator
    seeded by ``seed + 1``. Value in model units.
    """

    name = "sliced_wasserstein"
    needs_posterior = True

    def __init__(self, n_projections: int = 256, seed: int = 0, n_reference: int = 1000, p: float = 2.0):
        self.n_projections = int(n_projections)
        self.seed = int(seed)
        self.n_reference = int(n_reference)
        self.p = float(p)
        self.backbone = (
            f"exact 1-D W{self.p:g} via sorting, {self.n_projections} projections, seed {self.seed}, "
            f"{self.n_reference} exact posterior samples, model space"
        )

    def compute(self, recon, truth=None, posterior=None, reference: Tensor | None = None,
                **_) -> tuple[float | None, str]:
        if isinstance(recon, (list, tuple)):
            recon = torch.cat([r.reshape(-1, *r.shape[-3:]) for r in recon])
        x = pixel_to_model(recon.detach().to(torch.float64))
        if reference is None:
            if posterior is None:
                return None, "unavailable: no exact posterior (analytic priors only)"
            g = torch.Generator().manual_seed(self.seed + 1)
            reference = posterior.sample(self.n_reference, generator=g)
        ref = reference.detach().to("cpu", torch.float64).reshape(-1, x[0].numel())
        v = sliced_wasserstein(x, ref, self.n_projections, self.seed, self.p)
        return v, (f"SW{self.p:g} model space; {x.shape[0]} samples vs {ref.shape[0]} exact posterior samples; "
                   f"{self.n_projections} projections, seed {self.seed}")

    def compute_posterior(self, groups: Iterable[tuple[Tensor, Any]]) -> tuple[float | None, str]:
        """Mean over images of :meth:`compute` on each image's samples against its posterior;
        unavailable as soon as one image's value is."""
        vals, notes = [], ""
        for samples, posterior in groups:
            v, notes = self.compute(samples, None, posterior=posterior)
            if v is None:
                return None, notes
            vals.append(float(v))
        return float(np.mean(vals)), f"mean over {len(vals)} images; " + notes
