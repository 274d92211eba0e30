"""DiffPIR — Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu, Zhang, Liang,
Cao, Wen, Timofte, Van Gool; CVPRW 2023, arXiv 2305.08995).

Re-implemented from the released code (``yuanzhi-zhu/DiffPIR`` at 111d26e: ``main_ddpir.py``,
``main_ddpir_inpainting.py``, ``main_ddpir_deblur.py``, ``utils/utils_model.py``), in VE terms
(docs/design.md §2). Half-quadratic splitting inside a DDIM-like sampler: a diffusion denoising
step, a closed-form data step, and a re-noising step that mixes the effective noise with fresh
noise. The state is kept in VP form ``x_t = sqrt(ᾱ_t) x_ve`` as in the code.

Levels: the prior's DDPM grid on the quadratic skip schedule of the code (``skip_type="quad"``,
:func:`~invbench.solvers.ddpm.quad_timesteps`): ``t_i = T − 1 − seq[i]``, ``σ_0 > … >
σ_{N−1}`` (``σ_{N−1}`` is the grid's smallest level), ``ᾱ_i = 1/(1+σ_i²)``. Data weight
``ρ_i = λ σ_n² / σ_i²`` with ``σ_n = max(0.001, σ_y/2)`` — the code's pixel-unit noise level
(``sigma = max(0.001, noise_level_img)``) against the model-unit σ_i, as the code has it. ::

    x ← sqrt(ᾱ_0/ᾱ_y) A⁺y + sqrt((1 − ᾱ_0) − (ᾱ_0/ᾱ_y)(1 − ᾱ_y)) z      (init="pinv"; ᾱ_y: the
                                                            grid level nearest σ_y)   or  x ← z
    for i = 0 … N−1:
        x̂₀ = clip(D(x / sqrt(ᾱ_i), σ_i), −1, 1)                                         [1 NFE]
        if i < N−1:
            x̂₀ ← argmin_u ‖y − A u‖² + ρ_i ‖u − x̂₀‖²        (closed form through the SVD)
            ε̂  = (x − sqrt(ᾱ_i) x̂₀) / sqrt(1 − ᾱ_i)
            x  ← sqrt(ᾱ_{i+1}) x̂₀ + sqrt(1 − ᾱ_{i+1}) (sqrt(1 − ζ) ε̂ + sqrt(ζ) z)
    return x                   (the code returns the state at the last level, not x̂₀)

Through the SVD ``A = U diag(s) Vᵀ`` the data step is, per spectral coordinate,
``(s_i (Uᵀy)_i + ρ (Vᵀx̂₀)_i) / (s_i² + ρ)`` on the measured coordinates and ``(Vᵀx̂₀)_i`` on the
null space — the code's FFT solution for circular blur / ×s downsampling and its
``(M y + ρ x̂₀)/(M + ρ)`` for inpainting, for any operator with an exact SVD.

Deliberate deviations, all inactive or negligible in the released configurations: the code's
``eta`` branch (DDIM η; every released config sets ``eta = 0``) and ``guidance_scale`` (1 in
every config) are not implemented; the code starts from ``y`` placed in image space, we from
``A⁺y`` (identical for denoising and inpainting up to the fill of the holes; its weight
``sqrt(ᾱ_0/ᾱ_y)`` is below 0.007 on the 1000-step grid); the inpainting script pastes ``y`` into
the kept pixels after sampling, which neither deepinv nor we do (the output is the sampler's).

``deepinv.sampling.DiffPIR`` (0.5.0) runs the same loop; its proximal step
``prox_{γ f}`` with ``f = ½‖Au − y‖²`` and ``γ = 1/(2ρ)`` weighs the prior term by ``2ρ``, i.e.
its ``lambda_`` is our ``λ/2`` (tests/solvers/test_diffpir.py checks both against each other).

Cost: NFE = N (= ``steps``), VJP = 0. Requires the operator's SVD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from invbench.operators import family
from invbench.operators.base import svd_pinv
from invbench.operators.conventions import model_sigma_to_pixel
from torch import Tensor

from .base import Preset, Solver, check_finite, randn, sigma_batch
from .ddpm import abar, quad_timesteps, sampling_sigmas
from .params import param
from .registry import register
from .schedules import ddpm_sigmas
from .search_space import log_uniform, uniform

__all__ = ["TASK_PRESETS", "DiffPIR", "DiffPIRParams"]

_NOISE_FLOOR = 0.001  # the code's max(0.001, noise_level_img), pixel units


@dataclass(frozen=True)
class DiffPIRParams:
    """DiffPIR hyperparameters (defaults: the released deblurring setting).

    steps: N, levels on the quadratic skip schedule of the prior's grid (2 … T).
    sigmas: explicit descending levels (model units) overriding ``steps``.
    lambda_: λ of ``ρ_i = λ σ_n²/σ_i²`` (> 0); larger trusts the denoiser more.
    zeta: ζ in [0, 1], the share of fresh noise in the re-noising step.
    init: ``"pinv"`` (the code's start from the measurement) or ``"gaussian"``.
    clip_x0: clip the denoiser output to [−1, 1] (the code's ``clip_denoised=True``).
    """

    steps: int = 100
    sigmas: tuple[float, ...] | None = None
    lambda_: float = param(7.0, gt=0.0)
    zeta: float = param(0.3, ge=0.0, le=1.0)
    init: str = param("pinv", one_of=("pinv", "gaussian"))
    clip_x0: bool = True


def proximal_data_step(operator, x0: Tensor, y: Tensor, rho: float) -> Tensor:
    """``argmin_u ‖y − A u‖² + ρ ‖u − x0‖²`` through the SVD (model space; ``rho`` > 0):
    ``(s_i (Uᵀy)_i + ρ (Vᵀx0)_i)/(s_i² + ρ)`` on the measured coordinates, ``(Vᵀx0)_i`` on the
    null space. ``x0``: ``(B, *in_shape)``, ``y``: ``(B, *out_shape)``."""
    svd = operator.svd
    s = svd.singular_values.to(device=y.device, dtype=y.dtype)
    m = s.numel()
    v = svd.Vt(x0)
    v = torch.cat([(s * svd.Ut(y) + rho * v[:, :m]) / (s * s + rho), v[:, m:]], dim=1)
    return svd.V(v).reshape(x0.shape)


_CODE = "yuanzhi-zhu/DiffPIR main_ddpir.py with configs/{}.yaml"

#: declared task family (``operators.family``) -> DiffPIR preset (the harness calls
#: ``DiffPIR.preset_for_task``).
TASK_PRESETS: dict[str, str] = {
    "inpainting": "paper-inpaint", "super_resolution": "paper-sr", "deblurring": "default",
}


@register
class DiffPIR(Solver):
    """DiffPIR (Zhu et al. 2023); see the module docstring for the update rule.

    NFE = N, VJP = 0, N = ``steps`` (or ``len(sigmas)``).
    """

    name: ClassVar[str] = "diffpir"
    requires: ClassVar[frozenset[str]] = frozenset({"svd"})
    Params: ClassVar[type] = DiffPIRParams
    QUICK: ClassVar[dict] = {"steps": 4}
    SEARCH_SPACE: ClassVar[dict] = {"lambda_": log_uniform(0.1, 100.0), "zeta": uniform(0.0, 1.0)}
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            {},
            _CODE.format("deblur") + ": 100 steps, λ = 7 × lambda_ 1, ζ = 3 × zeta 0.1 (the "
                                     "script's experiment "
            "loop multiplies the config values by 7 and 3)",
        ),
        "paper-inpaint": Preset(
            {"steps": 20, "lambda_": 1.0, "zeta": 1.0},
            _CODE.format("inpaint") + ": 20 steps, λ = 1, ζ = 1",
        ),
        "paper-sr": Preset(
            {"zeta": 0.25},
            _CODE.format("sisr") + ": 100 steps, ζ = 0.25; the script sweeps λ over 2 … 12 and "
                                   "releases no single "
            "value, so λ stays at the deblurring setting 7 (ours)",
        ),
    }

    @classmethod
    def preset_for_task(cls, task: str) -> str:
        """The released per-task preset for an operator preset, by its declared task family
        (``"default"`` if none; never by the preset's name)."""
        return TASK_PRESETS.get(family(task), "default")

    def levels(self, prior) -> list[float]:
        """The descending levels σ_0 … σ_{N−1} (model units) used with ``prior``."""
        p: DiffPIRParams = self.params
        if p.sigmas is not None:
            return sampling_sigmas(prior, p.steps, p.sigmas)  # validated explicit levels
        grid = ddpm_sigmas(prior)
        T = int(grid.numel())
        return [float(grid[T - 1 - k]) for k in quad_timesteps(T, p.steps)]

    def nfe_estimate(self) -> int:
        """Network evaluations per image: one per level (``len(sigmas)`` when given, else
        ``steps``)."""
        p = self.params
        return len(p.sigmas) if p.sigmas is not None else int(p.steps)

    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """The state at the last level (model space, shape ``(B, *operator.in_shape)``)."""
        p: DiffPIRParams = self.params
        shape = tuple(operator.in_shape)
        svd = operator.svd
        sigmas = self.levels(prior)
        N = len(sigmas)
        sigma_n = max(_NOISE_FLOOR, model_sigma_to_pixel(sigma_y))

        # x ← sqrt(ᾱ_0/ᾱ_y) A⁺y + sqrt((1 − ᾱ_0) − (ᾱ_0/ᾱ_y)(1 − ᾱ_y)) z   (init="pinv")  or  x ← z
        z = randn(shape, gens, y)
        if p.init == "pinv":
            grid = ddpm_sigmas(prior)
            a0, ay = abar(sigmas[0]), abar(float(grid[(grid - sigma_y).abs().argmin()]))
            c = math.sqrt(a0 / ay)
            std = math.sqrt(max((1.0 - a0) - c * c * (1.0 - ay), 0.0))
            x = c * svd_pinv(svd, y, shape) + std * z
        else:
            x = z
        x = check_finite(x, "diffpir initialisation")

        for i, sigma in enumerate(sigmas):
            a = abar(sigma)
            # x̂₀ = clip(D(x / sqrt(ᾱ_i), σ_i), −1, 1)                                     [1 NFE]
            with torch.no_grad():
                x_ve = x / math.sqrt(a)
                x0 = prior.denoise(x_ve, sigma_batch(sigma, x))
            x0 = x0.clamp(-1.0, 1.0) if p.clip_x0 else x0
            check_finite(x0, f"diffpir step {i}: denoiser output")
            if callback is not None:
                callback(i, sigma, x_ve, x0)
            if i == N - 1:
                break
            # x̂₀ ← argmin_u ‖y − A u‖² + ρ_i ‖u − x̂₀‖²,  ρ_i = λ σ_n² / σ_i²
            x0 = proximal_data_step(operator, x0, y, p.lambda_ * sigma_n**2 / sigma**2)
            # ε̂ = (x − sqrt(ᾱ_i) x̂₀) / sqrt(1 − ᾱ_i)
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
            # x ← sqrt(ᾱ_{i+1}) x̂₀ + sqrt(1 − ᾱ_{i+1}) (sqrt(1 − ζ) ε̂ + sqrt(ζ) z)
            a_next = abar(sigmas[i + 1])
            x = math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * (
                math.sqrt(1.0 - p.zeta) * eps + math.sqrt(p.zeta) * randn(shape, gens, y)
            )
            x = check_finite(x, f"diffpir step {i}: state")
        # return x (the state at the last level)
        return x
