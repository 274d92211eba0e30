"""Timestep bookkeeping shared by the DDPM-family baselines (DPS, DDRM, ΠGDM, DiffPIR, RED-diff):
timestep selection, VP/VE conversion and DDRM's singular-value threshold (docs/design.md §2).

Conventions. Every prior is a VE denoiser ``D(x, sigma)`` with ``x = x0 + sigma n`` (model units).
The baselines were written for VP ε-networks; the one-to-one map used throughout is

* ``abar(sigma) = 1 / (1 + sigma²)``, ``x_vp = sqrt(abar) · x_ve``,
* ``eps = (x_ve − D(x_ve, sigma)) / sigma``, ``x0_hat = D``,
* a VP timestep ``t`` of a discrete prior has ``sigma_t = prior.sigmas[t]`` (ascending grid), and
  the final "timestep −1" of the DDPM/DDIM/DDRM loops has ``abar = 1``, i.e. ``sigma = 0``.

A sampler runs on a *descending* list ``sigma_0 > sigma_1 > … > sigma_{N−1} > 0`` of network
evaluation levels followed by the terminal level 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from .errors import SolverError
from .schedules import ddpm_sigmas

__all__ = [
    "abar",
    "quad_timesteps",
    "sampling_sigmas",
    "skip_timesteps",
    "thresholded_singular_values",
]


def skip_timesteps(T: int, steps: int) -> list[int]:
    """Uniform skip schedule of the DDRM/DDIM code: ``skip = T // steps``,
    ``range(0, T, skip)`` (ascending). ``steps = T`` gives every timestep; for ``T = 1000``,
    ``steps = 20`` gives ``{0, 50, …, 950}`` and ``steps = 100`` gives ``{0, 10, …, 990}``."""
    if int(steps) != steps or steps < 1 or steps > T:
        raise SolverError(f"steps must be an integer in [1, {T}], got {steps}")
    skip = T // int(steps)
    return list(range(0, T, skip))


def quad_timesteps(T: int, steps: int) -> list[int]:
    """Quadratic skip schedule of the DiffPIR code (``skip_type="quad"``): ``seq =
    int(sqrt(linspace(0, T², steps)))`` (NumPy, float64, as the code) with the last entry lowered
    by one, ascending from 0 to ``T − 1``. The sampler visits timesteps ``t_i = T − 1 − seq[i]``:
    long strides at high noise, short ones near ``t = 0``."""
    if int(steps) != steps or steps < 2 or steps > T:
        raise SolverError(f"steps must be an integer in [2, {T}] for the quadratic schedule, "
                          f"got {steps}")
    seq = [int(v) for v in np.sqrt(np.linspace(0, T**2, int(steps)))]
    seq[-1] -= 1
    if any(a >= b for a, b in itertools.pairwise(seq)):
        raise SolverError(f"the quadratic schedule with {steps} steps on {T} timesteps repeats a "
                          "timestep")
    return seq


def sampling_sigmas(prior, steps: int, explicit: Sequence[float] | None = None) -> list[float]:
    """Descending noise levels (model units) at which the sampler evaluates the network.

    ``explicit`` (descending, positive) overrides everything — used to run on another code's
    schedule (e.g. deepinv's sigma list). Otherwise the prior's own discrete grid
    (``schedules.ddpm_sigmas``: ``prior.sigmas`` for discrete priors, else the DDPM linear-beta
    grid) restricted to :func:`skip_timesteps`, in reverse order (``t = τ_N … τ_1``).
    """
    if explicit is not None:
        s = [float(v) for v in explicit]
        if not s or any(v <= 0 for v in s) or any(a <= b for a, b in itertools.pairwise(s)):
            raise SolverError("explicit sigmas must be a non-empty, strictly descending list of "
                              "positive levels")
        return s
    grid = ddpm_sigmas(prior)
    ts = skip_timesteps(int(grid.numel()), steps)
    return [float(grid[t]) for t in reversed(ts)]


def abar(sigma: float) -> float:
    """``ᾱ = 1 / (1 + σ²)`` (σ = 0 gives 1)."""
    return 1.0 / (1.0 + sigma * sigma)


def thresholded_singular_values(op, threshold: float | None, like: Tensor) -> Tensor:
    """The operator's ``(m,)`` singular values with DDRM's thresholding rule applied.

    ``threshold`` None reads ``op.params.get("svd_threshold")`` (the operators record DDRM's
    3e-2 for deblurring / bicubic SR); absent or 0 means no thresholding. Cast to ``like``.
    """
    thr = threshold
    if thr is None:
        thr = (getattr(op, "params", None) or {}).get("svd_threshold")
    svd = op.svd.thresholded(float(thr)) if thr is not None and float(thr) > 0 else op.svd
    # ``SVD.thresholded`` carries each operator's rule: separable (Kronecker) SVDs zero a 2-D value
    # when either 1-D factor is below the threshold, as DDRM's ``Deblurring``/``SRConv`` do.
    return svd.singular_values.to(device=like.device, dtype=like.dtype)
