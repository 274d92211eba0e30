"""DPS — Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky, Ye; ICLR 2023).

Re-implemented from the released code (``DPS2022/diffusion-posterior-sampling``:
``guided_diffusion/gaussian_diffusion.py`` ``p_sample_loop`` / ``DDPM.p_sample`` and
``guided_diffusion/condition_methods.py`` ``PosteriorSampling``), in VE terms (docs/design.md §2).

Ancestral DDPM on descending levels ``σ_0 > … > σ_{N−1}`` (the prior's 1000 training timesteps
``t = 999 … 0``, or an explicit list) with terminal level 0. The state is kept in VP form
``x_t = sqrt(ᾱ_t) x_ve`` exactly as in the code. With ``ᾱ = 1/(1+σ_i²)``, ``ᾱ' = 1/(1+σ_{i+1}²)``,
``β = 1 − ᾱ/ᾱ'`` (the spaced β of guided-diffusion), one step is::

    x̂₀        = clip(D(x_t / sqrt(ᾱ), σ_i), −1, 1)                   (clip_denoised: True)
    μ          = β sqrt(ᾱ')/(1−ᾱ) · x̂₀ + (1−ᾱ') sqrt(1−β)/(1−ᾱ) · x_t   (q-posterior mean)
    x'_{t−1}   = μ + exp(½ log v) z     (no noise on the last step)
    x_{t−1}    = x'_{t−1} − ζ_i ∇_{x_t} ‖y − A(x̂₀)‖₂                 (per image)

``log v`` is the learned-range variance of guided-diffusion,
``frac·log β + (1−frac)·log β̃`` with ``frac = (v+1)/2`` and ``v`` from
``prior.denoise_with_variance`` (``variance="learned"``), or ``log β̃`` with
``β̃ = β(1−ᾱ')/(1−ᾱ)`` (``variance="fixed"``); ``"auto"`` picks learned when the prior has the
``learned_variance`` capability. (guided-diffusion's clipping of ``log β̃`` at ``t = 0`` is moot:
no noise is added on the last step.)

Guidance form. The code differentiates the *unsquared* residual norm and multiplies by
``scale``: ``x_{t−1} −= scale · ∇_{x_t}‖y − A x̂₀‖``. We implement exactly that with
``ζ_i = zeta`` (``zeta_schedule="constant"``). In the paper's notation
``ζ_t ∇‖y − A x̂₀‖²`` this is ``ζ_t = zeta / (2‖y − A x̂₀‖)``. ``zeta_schedule="deepinv"`` uses
``ζ_i = zeta · β/sqrt(1−β)`` instead — the step that ``deepinv.sampling.DPS`` takes with
``weight = 2·zeta`` (its weight multiplies a score that the ancestral solver scales by
``sqrt(ᾱ_t ᾱ_{t−1})(σ_t² − σ_{t−1}²) = β/sqrt(1−β)``; its residual is in pixel units, half ours);
it exists for the agreement test against deepinv (docs/solvers-baselines.md).
The norm is taken per image (the code takes it over the whole batch; it ran with batch 1).

Returns the final ``x_{−1}`` (level 0; the code returns the last ``img``, not clipped).
Cost: NFE = N (= ``steps``), VJP = N (one backward through ``D`` per step).
Works on any differentiable operator (``requires = {"grad"}``), e.g. phase retrieval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from invbench.operators import family
from torch import Tensor

from .base import Preset, Solver, SolverError, check_finite, randn, sigma_batch
from .ddpm import abar, sampling_sigmas
from .params import param
from .registry import register
from .search_space import log_uniform

__all__ = ["DPS", "TASK_PRESETS", "DPSParams"]


@dataclass(frozen=True)
class DPSParams:
    """DPS hyperparameters.

    zeta: the code's ``scale`` (step on the gradient of the unsquared residual norm, model units).
    steps: number of ancestral steps on the prior's grid (1000 = every training timestep).
    sigmas: explicit descending levels (model units) overriding ``steps``.
    variance: ``"auto"`` | ``"learned"`` | ``"fixed"`` (see module docstring).
    clip_x0: clip x̂₀ to ``clip_range`` before the posterior mean and the residual (code: True).
    clip_range: the clipping interval in model units (code: [−1, 1]). ``deepinv.sampling.DPS``
        clips its pixel-unit x̂₀ to [−1, 1], i.e. model [−3, 1], in both places; ``(-3.0, 1.0)``
        reproduces it (docs/solvers-baselines.md).
    zeta_schedule: ``"constant"`` (the DPS code) or ``"deepinv"`` (ζ_i = zeta β/sqrt(1−β)).
    """

    zeta: float = param(1.0, ge=0.0)
    steps: int = 1000
    sigmas: tuple[float, ...] | None = None
    variance: str = param("auto", one_of=("auto", "learned", "fixed"))
    clip_x0: bool = True
    clip_range: tuple[float, float] = param((-1.0, 1.0), increasing=True)
    zeta_schedule: str = param("constant", one_of=("constant", "deepinv"))


_CODE = "DPS2022/diffusion-posterior-sampling configs/{}_config.yaml, conditioning.params.scale"
_VAR = (
    "; variance='auto': learned range (the released ADM checkpoints' learned sigma) where the "
    "prior "
    "exposes it, else the fixed posterior variance β̃_t"
)

#: declared task family (``operators.family``) -> DPS preset (the harness calls
#: ``DPS.preset_for_task``).
TASK_PRESETS: dict[str, str] = {
    "inpainting": "paper-inpaint",
    "super_resolution": "paper-sr",
    "deblurring": "paper-deblur",
    "phase_retrieval": "paper-phase",
}


@register
class DPS(Solver):
    """DPS (Chung et al. 2023); see the module docstring for the update rule.

    NFE = N, VJP = N, N = ``steps`` (or ``len(sigmas)``).
    """

    name: ClassVar[str] = "dps"
    requires: ClassVar[frozenset[str]] = frozenset({"grad"})
    Params: ClassVar[type] = DPSParams
    QUICK: ClassVar[dict] = {"steps": 5}
    SEARCH_SPACE: ClassVar[dict] = {"zeta": log_uniform(0.01, 10.0)}
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            {},
            "condition_methods.py PosteriorSampling default scale=1.0 (no task config)" + _VAR,
        ),
        "paper-sr": Preset({"zeta": 0.3}, _CODE.format("super_resolution") + " = 0.3" + _VAR),
        "paper-deblur": Preset(
            {"zeta": 0.3}, _CODE.format("gaussian_deblur / motion_deblur") + " = 0.3" + _VAR
        ),
        "paper-inpaint": Preset({"zeta": 0.5}, _CODE.format("inpainting") + " = 0.5" + _VAR),
        "paper-phase": Preset({}, _CODE.format("phase_retrieval") + " = 1.0, the default" + _VAR),
    }

    @classmethod
    def preset_for_task(cls, task: str) -> str:
        """The released per-task preset for an operator preset, by its declared task family
        (``"default"`` if none): inpainting → paper-inpaint, super-resolution → paper-sr,
        deblurring → paper-deblur, phase retrieval → paper-phase; colorization / denoising have no
        DPS config → default. Never by the preset's name (an ``sr2_…`` deblurring preset is a
        deblurring task)."""
        return TASK_PRESETS.get(family(task), "default")

    def levels(self, prior) -> list[float]:
        """The descending levels (model units): the uniform skip schedule of the prior's grid, or
        the explicit ``sigmas``; a step count must fit the grid."""
        return sampling_sigmas(prior, self.params.steps, self.params.sigmas)

    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """The final state ``x_{−1}`` (model space, shape ``(B, *prior.image_shape)``)."""
        p: DPSParams = self.params
        learned = p.variance == "learned" or (
            p.variance == "auto" and "learned_variance" in prior.capabilities
        )
        if learned and "learned_variance" not in prior.capabilities:
            raise SolverError("dps: variance='learned' but the prior has no learned_variance "
                              "capability")
        sigmas = self.levels(prior)
        N = len(sigmas)
        shape = tuple(prior.image_shape)

        x = randn(shape, gens, y)  # x_T ~ N(0, I) (VP)
        for i, sigma in enumerate(sigmas):
            sigma_next = sigmas[i + 1] if i + 1 < N else 0.0
            a, a_next = abar(sigma), abar(sigma_next)
            beta = 1.0 - a / a_next
            # x̂₀ = clip(D(x_t / sqrt(ᾱ), σ_i), −1, 1);  ∇_{x_t} ‖y − A(x̂₀)‖₂   [1 NFE, 1 VJP]
            x_ve, x0, v, grad = self._denoise_and_guide(x, y, operator, prior, sigma, learned)
            check_finite(x0, f"dps step {i}: denoiser output")
            if callback is not None:
                callback(i, sigma, x_ve, x0)

            # μ = β sqrt(ᾱ')/(1−ᾱ) · x̂₀ + (1−ᾱ') sqrt(1−β)/(1−ᾱ) · x_t
            c1 = beta * math.sqrt(a_next) / (1.0 - a)
            c2 = (1.0 - a_next) * math.sqrt(1.0 - beta) / (1.0 - a)
            mean = c1 * x0 + c2 * x
            # x'_{t−1} = μ + exp(½ log v) z   (no noise on the last step)
            if i < N - 1:
                beta_tilde = beta * (1.0 - a_next) / (1.0 - a)
                if learned:
                    frac = (v + 1.0) / 2.0
                    logvar = frac * math.log(beta) + (1.0 - frac) * math.log(beta_tilde)
                    std = torch.exp(0.5 * logvar)
                else:
                    std = math.sqrt(beta_tilde)
                mean = mean + std * randn(shape, gens, y)
            # x_{t−1} = x'_{t−1} − ζ_i ∇_{x_t} ‖y − A(x̂₀)‖₂
            if p.zeta_schedule == "constant":
                zeta_i = p.zeta
            else:
                zeta_i = p.zeta * beta / math.sqrt(1.0 - beta)
            x = mean - zeta_i * grad
            check_finite(x, f"dps step {i}: state")
        return x.detach()

    def _denoise_and_guide(self, x: Tensor, y: Tensor, operator, prior, sigma: float,
                           learned: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """``(x_ve, x̂₀, v, ∇_{x_t}‖y − A(x̂₀)‖₂)`` at the VP state ``x`` (all detached; ``v`` the
        learned-range variance output, None for ``variance="fixed"``); the norm per image."""
        p: DPSParams = self.params
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x_ve = x * math.sqrt(1.0 + sigma * sigma)
            sb = sigma_batch(sigma, x)
            if learned:
                d, v = prior.denoise_with_variance(x_ve, sb)
            else:
                d, v = prior.denoise(x_ve, sb), None
            x0 = d.clamp(*p.clip_range) if p.clip_x0 else d
            resid = (y - operator.forward(x0)).reshape(x.shape[0], -1)
            norms = torch.linalg.vector_norm(resid, dim=1)
            (grad,) = torch.autograd.grad(norms.sum(), x)
        return x_ve.detach(), x0.detach(), None if v is None else v.detach(), grad
