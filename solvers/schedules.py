"""Noise-level schedules shared by the solvers (model units, VE parametrisation
``x = x0 + sigma n``).

All functions return 1-D float64 CPU tensors (callers move/cast them). Conventions:

* :func:`karras_sigmas` — EDM (Karras et al. 2022, Eq. 5) ``rho`` schedule, *descending* from
  ``sigma_max`` to ``sigma_min`` (``n`` levels, both ends included); ``numpy_order=True``
  reproduces released NumPy code bit for bit.
* :func:`clip_sigma` / :func:`clip_to_prior` — one level / a requested range clipped to the
  prior's valid range.
* :func:`geometric_sigmas` — log-uniform, descending (EDM with ``rho -> inf``).
* :func:`ddpm_linear_sigmas` — the DDPM linear-beta grid (``betas = linspace(1e-4, 0.02, T)``,
  Ho et al. 2020; used by the DPS/DDRM/guided-diffusion code), as VE levels
  ``sigma_t = sqrt((1 - abar_t) / abar_t)``, *ascending* in ``t`` (index ``t`` = timestep ``t``).
* :func:`ddpm_sigmas` — a prior's own discrete grid (``prior.sigmas``) when it has the
  ``"discrete"`` capability, else :func:`ddpm_linear_sigmas`; ascending, index = timestep.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "clip_sigma",
    "clip_to_prior",
    "ddpm_linear_betas",
    "ddpm_linear_sigmas",
    "ddpm_sigmas",
    "geometric_sigmas",
    "karras_sigmas",
]


def karras_sigmas(n: int, sigma_max: float, sigma_min: float, rho: float = 7.0, *,
                  numpy_order: bool = False) -> Tensor:
    """EDM schedule ``sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho``.

    Returns ``n`` descending levels (``sigma_0 = sigma_max``, ``sigma_{n-1} = sigma_min``);
    ``n = 1`` gives ``[sigma_max]``. Requires ``sigma_max >= sigma_min > 0`` and ``rho > 0``.

    ``numpy_order=True`` computes the same levels the way released NumPy code does
    (``np.linspace`` then ``(a + r (b − a)) ** ρ`` in float64, end points not pinned, no range
    check), for solvers whose fidelity to that code is bitwise (DAPS's
    ``EDMScheduler.get_discrete_time_steps``, and LMAPS, which uses DAPS's grid).
    """
    if numpy_order:
        r = np.linspace(0, 1, n)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        return torch.tensor([float((a + ri * (b - a)) ** rho) for ri in r], dtype=torch.float64)
    _check_range(n, sigma_max, sigma_min)
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    a, b = float(sigma_max) ** (1.0 / rho), float(sigma_min) ** (1.0 / rho)
    s = (a + i * (b - a)) ** rho
    s[0], s[-1] = float(sigma_max), float(sigma_min)  # exact end points
    return s


def clip_sigma(prior, sigma: float) -> float:
    """One noise level clipped to the prior's valid range ``[prior.sigma_min, prior.sigma_max]``
    (the per-level clip of DAPS and LMAPS; :func:`clip_to_prior` clips a requested *range*)."""
    return float(min(max(sigma, float(prior.sigma_min)), float(prior.sigma_max)))


def geometric_sigmas(n: int, sigma_max: float, sigma_min: float) -> Tensor:
    """``n`` log-uniformly spaced levels, descending from ``sigma_max`` to ``sigma_min``."""
    _check_range(n, sigma_max, sigma_min)
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    s = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))
    s[0], s[-1] = float(sigma_max), float(sigma_min)
    return s


def ddpm_linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM linear betas ``linspace(beta_start, beta_end, T)`` (float64)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def ddpm_linear_sigmas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """VE levels of the DDPM linear-beta grid: ``sigma_t = sqrt((1 - abar_t) / abar_t)``,
    ``abar_t = prod_{s<=t} (1 - beta_s)``; ascending, ``T`` entries (``t = 0 .. T-1``)."""
    abar = torch.cumprod(1.0 - ddpm_linear_betas(T, beta_start, beta_end), dim=0)
    return torch.sqrt((1.0 - abar) / abar)


def ddpm_sigmas(prior) -> Tensor:
    """The discrete sigma grid a DDPM-style solver should use with ``prior`` (ascending, float64).

    ``prior.sigmas`` if the prior declares the ``"discrete"`` capability (its training grid),
    else the DDPM linear-beta grid (1e-4..0.02, T=1000) of :func:`ddpm_linear_sigmas`.
    """
    if "discrete" in prior.capabilities and prior.sigmas is not None:
        return torch.as_tensor(prior.sigmas).detach().to("cpu", torch.float64).clone()
    return ddpm_linear_sigmas()


def clip_to_prior(sigma_max: float, sigma_min: float, prior) -> tuple[float, float]:
    """Clip a requested ``[sigma_min, sigma_max]`` range to the prior's valid range.

    ``sigma_min`` is raised to ``prior.sigma_min`` when that is positive and larger; ``sigma_max``
    is lowered to ``prior.sigma_max``. Raises ``ValueError`` if the result is empty.
    """
    lo = max(float(sigma_min), float(prior.sigma_min or 0.0))
    hi = min(float(sigma_max), float(prior.sigma_max))
    if not (hi >= lo > 0):
        raise ValueError(
            f"noise range [{sigma_min}, {sigma_max}] clipped to prior range "
            f"[{prior.sigma_min}, {prior.sigma_max}] is empty or non-positive"
        )
    return hi, lo


def _check_range(n: int, sigma_max: float, sigma_min: float) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"number of levels must be a positive integer, got {n}")
    if not (float(sigma_max) >= float(sigma_min) > 0):
        raise ValueError(f"need sigma_max >= sigma_min > 0, got {sigma_max}, {sigma_min}")
