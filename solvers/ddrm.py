"""DDRM — Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song; NeurIPS 2022).

Re-implemented from the released code's ``efficient_generalized_steps``
(``bahjat-kawar/ddrm``, ``functions/denoising.py``) in VE terms (docs/design.md §2).

Notation: ``A = U diag(s) Vᵀ`` (``s`` zero-padded to all ``n`` spectral coordinates), ``σ_y`` the
measurement noise (model units, the code's ``sigma_0``), ``ȳ_i = (Uᵀy)_i / s_i``, bars denote
``Vᵀ(·)``. Levels ``σ_{τ_N} > … > σ_{τ_1}`` are the prior's DDPM grid on the skip schedule
``{0, 50, …, 950}`` (20 steps) or an explicit list; the terminal level is ``σ' = 0``.

Initialisation (the code's ``p(x_T | x_0, y)``), ``σ_T = σ_{τ_N}``::

    x̄_i = ȳ_i + sqrt(σ_T² − σ_y²/s_i²) z_i      if s_i σ_T > σ_y
    x̄_i = σ_T z_i                               otherwise
    x_T = V x̄ · c,   c = sqrt(1 + σ_T²)/σ_T ("ddrm_code": the code sets x_vp = V x̄ / σ_T)
                      c = 1                   ("exact": x_ve = V x̄)

Step ``σ → σ'`` (one network evaluation)::

    x̂₀ = D(x, σ),  ε̂ = (x − x̂₀)/σ,  z ~ N(0, I)
    s_i σ' > σ_y  (noisier than y):  x̄'_i = η_b ȳ_i + (1−η_b) x̂̄₀,i + sqrt(σ'² − η_b² σ_y²/s_i²) z_i
    s_i σ' < σ_y  (less noisy):      x̄'_i = x̂̄₀,i + sqrt(1−η²) σ' ((Uᵀy)_i − s_i x̂̄₀,i)/σ_y + η σ' z_i
    otherwise (null space, i ≥ m,
               and ties):            x̄'_i = x̂̄₀,i + sqrt(1−η²) σ' ε̄_i + η σ' z_i
    x' = V x̄'

The branch tests use the singular values exactly as the code does: a singular value that the
operator (or ``op.params["svd_threshold"]``, the code's 3e-2 for deblurring / bicubic SR) set
to 0 *inside* the first ``m`` coordinates goes to the "less noisy" branch whenever ``σ_y > 0``
(``0 · σ' < σ_y``); truly missing coordinates (``i ≥ m``) always take the null-space branch.
For ``σ_y = 0`` a zero singular value takes the null-space branch. The output is the state at
``σ' = 0``, i.e. the last ``x̂₀`` (the code returns ``xs[-1]``).

Cost: NFE = ``steps`` (one ``D`` per level), VJP = 0 (runs under ``torch.no_grad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from invbench.operators.base import safe_div
from torch import Tensor

from .base import Preset, Solver, check_finite, randn, sigma_batch
from .ddpm import sampling_sigmas, thresholded_singular_values
from .params import param
from .registry import register
from .search_space import uniform

__all__ = ["DDRM", "DDRMParams"]


@dataclass(frozen=True)
class DDRMParams:
    """DDRM hyperparameters.

    eta: η (the code's ``etaA`` = ``etaC``), in [0, 1].
    eta_b: η_b (the code's ``etaB``), in [0, 1].
    steps: number of network evaluations on the uniform skip schedule of the prior's grid.
    sigmas: explicit descending levels (model units) overriding ``steps`` (e.g. to run on
        deepinv's schedule); None uses the prior's grid.
    init: ``"ddrm_code"`` (x_vp = V x̄ / σ_T as released) or ``"exact"`` (x_ve = V x̄).
    svd_threshold: singular values below it are zeroed (DDRM's rule); None reads
        ``op.params.get("svd_threshold")`` (absent: no thresholding).
    """

    eta: float = param(0.85, ge=0.0, le=1.0)
    eta_b: float = param(1.0, ge=0.0, le=1.0)
    steps: int = 20
    sigmas: tuple[float, ...] | None = None
    init: str = param("ddrm_code", one_of=("ddrm_code", "exact"))
    svd_threshold: float | None = None


@register
class DDRM(Solver):
    """DDRM (Kawar et al. 2022); see the module docstring for the update rule.

    NFE = ``steps`` (or ``len(sigmas)``), VJP = 0. Requires an operator SVD.
    """

    name: ClassVar[str] = "ddrm"
    requires: ClassVar[frozenset[str]] = frozenset({"svd"})
    Params: ClassVar[type] = DDRMParams
    QUICK: ClassVar[dict] = {"steps": 4}
    SEARCH_SPACE: ClassVar[dict] = {"eta": uniform(0.0, 1.0), "eta_b": uniform(0.0, 1.0)}
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            {},
            "bahjat-kawar/ddrm README / main.py defaults (--eta 0.85 --etaB 1 --timesteps 20; "
            "skip schedule range(0, 1000, 50))",
        ),
    }

    def levels(self, prior) -> list[float]:
        """The descending levels (model units): the uniform skip schedule of the prior's grid, or
        the explicit ``sigmas``; a step count must fit the grid."""
        return sampling_sigmas(prior, self.params.steps, self.params.sigmas)

    @torch.no_grad()
    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """The state at level 0, i.e. the last x̂₀ (model space, ``(B, *operator.in_shape)``)."""
        p: DDRMParams = self.params
        sp = _Spectrum(operator, y, sigma_y, p.svd_threshold)
        sigmas = self.levels(prior)
        sigmas_next = [*sigmas[1:], 0.0]
        # --- initialisation: p(x_T | y) of the code ---
        x = sp.initial_state(sigmas[0], randn((sp.n,), gens, y), p.init == "ddrm_code")
        c = math.sqrt(1.0 - p.eta**2)
        occurs = sp.branches(sigmas_next)
        for i, sigma in enumerate(sigmas):
            sigma_next = sigmas_next[i]
            any_noisier, any_less_noisy = occurs[i]
            # x̂₀ = D(x, σ),  ε̂ = (x − x̂₀)/σ  (in V coordinates: x̂̄₀, ε̄)          [1 NFE]
            x0 = prior.denoise(x, sigma_batch(sigma, x))
            check_finite(x0, f"ddrm step {i}: denoiser output")
            if callback is not None:
                callback(i, sigma, x, x0)
            x0bar = sp.svd.Vt(x0)
            epsbar = sp.svd.Vt((x - x0) / sigma)
            z = randn((sp.n,), gens, y)

            # null-space branch (default)
            new = x0bar + c * sigma_next * epsbar + p.eta * sigma_next * z
            # less noisy than y (σ_y > 0 here, since s σ' < σ_y)
            if any_less_noisy:
                less_noisy = sp.in_range & (sp.s * sigma_next < sigma_y)
                resid = (sp.Uty - sp.s * x0bar) / (sigma_y if sigma_y > 0 else 1.0)
                ln = x0bar + c * sigma_next * resid + p.eta * sigma_next * z
                new = torch.where(less_noisy, ln, new)
            # noisier than y
            if any_noisier:
                noisier = sp.in_range & (sp.s * sigma_next > sigma_y)
                std_b = (sigma_next**2 - (p.eta_b * sp.nsr) ** 2).clamp_min(0.0).sqrt()
                nz = p.eta_b * sp.ybar + (1.0 - p.eta_b) * x0bar + std_b * z
                new = torch.where(noisier, nz, new)

            # x' = V x̄'
            x = sp.svd.V(new).reshape(x.shape)
            check_finite(x, f"ddrm step {i}: state")
        return x


class _Spectrum:
    """The measurement in the operator's spectral coordinates (all ``n`` of them): thresholded
    singular values ``s`` (0 beyond ``m``), ``Uᵀy``, ``ȳ = Σ⁺Uᵀy`` and ``σ_y / s``."""

    def __init__(self, op, y: Tensor, sigma_y: float, threshold: float | None):
        B = y.shape[0]
        self.op, self.svd, self.sigma_y = op, op.svd, sigma_y
        self.n = n = math.prod(op.in_shape)
        self.s_m = s_m = thresholded_singular_values(op, threshold, y)
        m = s_m.numel()
        self.s = torch.zeros(n, dtype=y.dtype, device=y.device)
        self.s[:m] = s_m
        self.in_range = torch.zeros(n, dtype=torch.bool, device=y.device)
        self.in_range[:m] = True
        self.Uty = torch.zeros(B, n, dtype=y.dtype, device=y.device)
        self.Uty[:, :m] = self.svd.Ut(y)
        self.ybar = safe_div(self.Uty, self.s)  # ȳ = Σ⁺Uᵀy
        self.nsr = safe_div(sigma_y, self.s)  # σ_y / s_i

    def initial_state(self, sT: float, z: Tensor, code_scale: bool) -> Tensor:
        """``x_T = V x̄ · c`` with ``x̄_i = ȳ_i + sqrt(σ_T² − σ_y²/s_i²) z_i`` where
        ``s_i σ_T > σ_y``, else ``σ_T z_i``; ``c = sqrt(1 + σ_T²)/σ_T`` (the code) or 1."""
        s, large = self.s, self.in_range & (self.s * sT > self.sigma_y)
        rem = torch.where(large, (sT**2 - self.nsr**2).clamp_min(0.0).sqrt(),
                          torch.full_like(s, sT))
        xbar = torch.where(large, self.ybar, torch.zeros_like(self.ybar)) + rem * z
        scale = math.sqrt(1.0 + sT**2) / sT if code_scale else 1.0
        return self.svd.V(xbar * scale).reshape(z.shape[0], *self.op.in_shape)

    def branches(self, sigmas_next: list[float]) -> list[list[bool]]:
        """Per step, whether the "noisier" and "less noisy" branches occur, read to the host once
        (no sync per step). Scaling by a level σ' >= 0 is monotone under rounding, so "some
        in-range s_i σ' > σ_y" equals "max_i s_i · σ' > σ_y" (and min for "<")."""
        if self.s_m.numel() == 0:
            return [[False, False]] * len(sigmas_next)
        s_hi, s_lo, sy = self.s_m.max(), self.s_m.min(), self.sigma_y
        return torch.stack([torch.stack([s_hi * sn > sy, s_lo * sn < sy])
                            for sn in sigmas_next]).tolist()
