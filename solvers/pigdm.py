"""ΠGDM — Pseudoinverse-Guided Diffusion Models (Song, Vahdat, Mardani, Kautz; ICLR 2023).

There is no official standalone release; the sampler follows the NVIDIA co-authors'
re-implementation ``NVlabs/RED-diff`` ``algos/pgdm.py`` (DDIM, ``awd=True``), with the noisy
guidance of the paper (``(r_t² A Aᵀ + σ_y² I)⁻¹``) evaluated exactly through the SVD.

Approximation: ``p(x₀ | x_t) ≈ N(x̂₀, r_t² I)`` with ``r_t² = σ²/(1+σ²) = 1 − ᾱ_t`` (VE σ).
Likelihood-score guidance (one VJP; ``x_t`` is the VP state ``sqrt(ᾱ_t) x_ve``)::

    g = ( (y − A x̂₀)ᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ A ∂x̂₀/∂x_t )ᵀ
      = J_tᵀ V diag( s_i / (r_t² s_i² + σ_y²) ) Uᵀ (y − A x̂₀)     (0 where s_i = 0)

DDIM step ``t → s`` on descending levels (uniform skip of the prior's grid, 100 steps
``{990, 980, …, 0}`` then the terminal level 0)::

    x̂₀ = D(x_t / sqrt(ᾱ_t), σ_t),   ε̂ = (x_t − sqrt(ᾱ_t) x̂₀)/sqrt(1−ᾱ_t)
    c1 = η sqrt((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)),   c2 = sqrt(1 − ᾱ_s − c1²)
    x_s = sqrt(ᾱ_s) x̂₀ + c1 z + c2 ε̂ + w · sqrt(ᾱ_s) sqrt(ᾱ_t) · r_t² · g

The factor ``r_t²`` makes the step identical to RED-diff's in the noiseless case, where RED-diff's
guidance vector is ``J_tᵀ A⁺(y − A x̂₀)`` (the paper's noiseless form with the constant
``1/r_t²`` absorbed into the weight): ``r_t² Aᵀ(r_t² AAᵀ)⁻¹ = A⁺``. RED-diff's defaults are
``w = 1`` (``grad_term_weight``), ``η = 0`` and ``awd = True`` (no ``−c2 sqrt(ᾱ_t)/sqrt(1−ᾱ_t)``
correction of the coefficient). Whether the paper's Algorithm 1 multiplies ``g`` by
``sqrt(ᾱ_t)`` alone could not be verified here (docs/solvers-baselines.md).

Singular values below ``op.params["svd_threshold"]`` (DDRM's 3e-2, which RED-diff inherits
through DDRM's SVD operators) are treated as 0 in ``g`` and in ``A⁺``.

Initialisation ``init="pinv"`` (RED-diff): ``x_T = sqrt(ᾱ_T) A⁺y + sqrt(1−ᾱ_T) z``;
``init="gaussian"``: ``x_T = z``. Output: the state at level 0.

Cost: NFE = ``steps``, VJP = ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from invbench.operators.base import safe_div, svd_pinv
from torch import Tensor

from .base import Preset, Solver, check_finite, randn, sigma_batch
from .ddpm import abar, sampling_sigmas, thresholded_singular_values
from .params import param
from .registry import register
from .search_space import log_uniform, uniform

__all__ = ["PiGDM", "PiGDMParams", "pigdm_guidance_vector"]


@dataclass(frozen=True)
class PiGDMParams:
    """ΠGDM hyperparameters.

    steps: DDIM steps on the uniform skip schedule of the prior's grid.
    sigmas: explicit descending levels (model units) overriding ``steps``.
    eta: DDIM η in [0, 1].
    weight: guidance weight ``w``.
    init: ``"pinv"`` (RED-diff) or ``"gaussian"``.
    clip_x0: clip x̂₀ to [−1, 1] (RED-diff does not; default False).
    svd_threshold: singular values below it are treated as 0 in the guidance and in ``A⁺``
        (RED-diff uses DDRM's thresholded SVDs); None reads ``op.params.get("svd_threshold")``.
    """

    steps: int = 100
    sigmas: tuple[float, ...] | None = None
    eta: float = param(0.0, ge=0.0, le=1.0)
    weight: float = 1.0
    init: str = param("pinv", one_of=("pinv", "gaussian"))
    clip_x0: bool = False
    svd_threshold: float | None = None


def pigdm_guidance_vector(op, resid: Tensor, r2: float, sigma_y: float,
                          s: Tensor | None = None) -> Tensor:
    """``Aᵀ (r² A Aᵀ + σ_y² I)⁻¹ resid`` through the SVD (``resid``: ``(B, *out_shape)``).

    Per singular value ``s_i`` (``s``: the ``(m,)`` values to use, default the operator's): factor
    ``s_i / (r² s_i² + σ_y²)``; a coordinate where the denominator vanishes (``s_i = 0`` and
    ``σ_y = 0``) contributes 0 (it carries no information). Returns ``(B, *in_shape)``.
    """
    svd = op.svd
    B = resid.shape[0]
    if s is None:
        s = svd.singular_values
    s = s.to(device=resid.device, dtype=resid.dtype)
    den = r2 * s * s + sigma_y * sigma_y
    f = safe_div(s, den)
    n = math.prod(op.in_shape)
    coeff = torch.zeros(B, n, dtype=resid.dtype, device=resid.device)
    coeff[:, : s.numel()] = svd.Ut(resid) * f
    return svd.V(coeff).reshape(B, *op.in_shape)


@register
class PiGDM(Solver):
    """ΠGDM (Song et al. 2023); see the module docstring for the update rule.

    NFE = ``steps`` (or ``len(sigmas)``), VJP = the same. Requires an operator SVD.
    """

    name: ClassVar[str] = "pigdm"
    requires: ClassVar[frozenset[str]] = frozenset({"svd"})
    Params: ClassVar[type] = PiGDMParams
    QUICK: ClassVar[dict] = {"steps": 4}
    SEARCH_SPACE: ClassVar[dict] = {"weight": log_uniform(0.1, 10.0), "eta": uniform(0.0, 1.0)}
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            {},
            "100 DDIM steps (ΠGDM protocol, uniform skip); eta=0, grad_term_weight=1, awd=True and "
            "the "
            "A⁺y initialisation from NVlabs/RED-diff algos/pgdm.py and its pgdm config",
        ),
    }

    def levels(self, prior) -> list[float]:
        """The descending levels (model units): the uniform skip schedule of the prior's grid, or
        the explicit ``sigmas``; a step count must fit the grid."""
        return sampling_sigmas(prior, self.params.steps, self.params.sigmas)

    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """The state at level 0 (model space, shape ``(B, *operator.in_shape)``)."""
        p: PiGDMParams = self.params
        shape = tuple(operator.in_shape)
        sigmas = self.levels(prior)
        N = len(sigmas)

        s_thr = thresholded_singular_values(operator, p.svd_threshold, y)
        aT = abar(sigmas[0])
        z = randn(shape, gens, y)
        # x_T = sqrt(ᾱ_T) A⁺y + sqrt(1−ᾱ_T) z  (init="pinv")  or  x_T = z
        if p.init == "pinv":
            with torch.no_grad():
                x_pinv = svd_pinv(operator.svd, y, operator.in_shape, s_thr)
                x = math.sqrt(aT) * x_pinv + math.sqrt(1.0 - aT) * z
        else:
            x = z

        for i, sigma in enumerate(sigmas):
            sigma_next = sigmas[i + 1] if i + 1 < N else 0.0
            a, a_s = abar(sigma), abar(sigma_next)
            r2 = sigma * sigma / (1.0 + sigma * sigma)
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                # x̂₀ = D(x_t / sqrt(ᾱ_t), σ_t)                                    [1 NFE]
                x_ve = x / math.sqrt(a)
                d = prior.denoise(x_ve, sigma_batch(sigma, x))
                x0 = d.clamp(-1.0, 1.0) if p.clip_x0 else d
                # g = J_tᵀ V diag(s_i/(r_t² s_i² + σ_y²)) Uᵀ (y − A x̂₀)          [1 VJP]
                with torch.no_grad():
                    resid = y - operator.forward(x0)
                    vec = pigdm_guidance_vector(operator, resid, r2, sigma_y, s_thr)
                (g,) = torch.autograd.grad(x0, x, grad_outputs=vec)
            x0 = x0.detach()
            check_finite(x0, f"pigdm step {i}: denoiser output")
            if callback is not None:
                callback(i, sigma, x_ve.detach(), x0)
            # ε̂ = (x_t − sqrt(ᾱ_t) x̂₀)/sqrt(1−ᾱ_t)
            # x_s = sqrt(ᾱ_s) x̂₀ + c1 z + c2 ε̂ + w sqrt(ᾱ_s ᾱ_t) r_t² g
            eps = (x.detach() - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
            c1 = p.eta * math.sqrt(max((1.0 - a / a_s) * (1.0 - a_s) / (1.0 - a), 0.0))
            c2 = math.sqrt(max(1.0 - a_s - c1 * c1, 0.0))
            x_new = math.sqrt(a_s) * x0 + c2 * eps + p.weight * math.sqrt(a_s * a) * r2 * g
            if c1 > 0:
                x_new = x_new + c1 * randn(shape, gens, y)
            x = x_new.detach()
            check_finite(x, f"pigdm step {i}: state")
        return x
