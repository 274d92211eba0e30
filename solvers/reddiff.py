"""RED-diff — regularization by denoising diffusion (Mardani, Song, Kautz, Vahdat; ICLR 2024,
arXiv 2305.04391): a point estimate μ from variational inference with a Dirac posterior.

Re-implemented from the released code (``NVlabs/RED-diff`` at 66482f2: ``algos/reddiff.py``,
``main.py`` ``get_timesteps``, ``_configs/algo/reddiff.yaml``), in VE terms (docs/design.md §2).
One Adam step on μ per timestep, from large noise to small; every step draws a fresh ε and asks
the denoiser how far its noise estimate is from ε at the current μ::

    μ ← A⁺y                      (singular values below DDRM's threshold count as 0)
    for t in τ_N > … > τ_1 (uniform skip of the prior's grid),  σ_t, ᾱ_t = 1/(1+σ_t²):
        ε ~ N(0, I);   x_t = μ + σ_t ε  (VE; the code's sqrt(ᾱ_t) μ + sqrt(1−ᾱ_t) ε in VP)
        ε̂ = (x_t − D(x_t, σ_t)) / σ_t            (detached)                              [1 NFE]
        loss = λ σ_t · mean((ε̂ − ε) ⊙ μ) + ½ mean((y − A μ)²)
        μ ← Adam(μ, ∇_μ loss; lr, β = (0.9, 0.99))
    return μ as it was at the start of the last step (the code returns that step's x0_pred)

``mean`` is over an image's pixels (``d``) in the first term and over its measurements (``m``)
in the second, as in the code; the code averages over the whole batch, which for Adam (an
element-wise update) only changes the scale of the gradient, and we average per image so that
results do not depend on the batch. The weight ``λ σ_t`` is the code's
``grad_term_weight · snr_inv`` with ``denoise_term_weight="linear"``. Inactive options of the
code (``sigma_x0 = 0``, ``eta = 0``, ``awd = True``, ``cond_awd = False`` in the released config;
the other ``denoise_term_weight`` rules) are not implemented.

Cost: NFE = N (= ``steps``), VJP = 0 through the network (the gradient of the loss needs only
``Aᵀ``). Requires the operator's SVD (the start ``A⁺y``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from invbench.operators.base import svd_pinv
from torch import Tensor

from .base import Preset, Solver, check_finite, randn, sigma_batch
from .ddpm import sampling_sigmas, thresholded_singular_values
from .params import param
from .registry import register
from .search_space import log_uniform

__all__ = ["REDDiff", "REDDiffParams"]


@dataclass(frozen=True)
class REDDiffParams:
    """RED-diff hyperparameters (defaults: the released config).

    steps: N, timesteps on the uniform skip schedule of the prior's grid.
    sigmas: explicit descending levels (model units) overriding ``steps``.
    lambda_: λ, weight of the denoising (score-matching) term (the code's ``grad_term_weight``).
    lr: Adam learning rate (model units per step).
    svd_threshold: singular values below it count as 0 in the start ``A⁺y`` (the code builds its
        operators from DDRM's, which threshold at 3e-2 for deblurring / bicubic SR); None reads
        ``op.params.get("svd_threshold")``.
    """

    steps: int = 50
    sigmas: tuple[float, ...] | None = None
    lambda_: float = param(0.25, gt=0.0)
    lr: float = param(0.1, gt=0.0)
    svd_threshold: float | None = None


@register
class REDDiff(Solver):
    """RED-diff (Mardani et al. 2024); see the module docstring for the update rule.

    NFE = N, VJP = 0, N = ``steps`` (or ``len(sigmas)``).
    """

    name: ClassVar[str] = "reddiff"
    requires: ClassVar[frozenset[str]] = frozenset({"svd"})
    Params: ClassVar[type] = REDDiffParams
    QUICK: ClassVar[dict] = {"steps": 4}
    SEARCH_SPACE: ClassVar[dict] = {
        "lambda_": log_uniform(0.01, 10.0), "lr": log_uniform(0.01, 1.0),
    }
    #: a point estimate (the optimised mean of its variational q)
    DRAWS_SAMPLES: ClassVar[bool] = False
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            {},
            "NVlabs/RED-diff _configs/algo/reddiff.yaml (grad_term_weight 0.25, lr 0.1, "
            "denoise_term_weight linear) with _configs/exp/default.yaml num_steps 50",
        ),
        "readme": Preset(
            {"steps": 100, "lr": 0.5},
            "NVlabs/RED-diff README sampling example (num_steps=100, lambda=0.25, lr=0.5)",
        ),
    }

    def levels(self, prior) -> list[float]:
        """The descending levels (model units): the uniform skip schedule of the prior's grid, or
        the explicit ``sigmas``; a step count must fit the grid."""
        return sampling_sigmas(prior, self.params.steps, self.params.sigmas)

    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """μ (model space, shape ``(B, *operator.in_shape)``). ``sigma_y`` is not used by the
        update (the released config sets the code's ``sigma_y`` to 0)."""
        p: REDDiffParams = self.params
        B = y.shape[0]
        shape = tuple(operator.in_shape)
        d = math.prod(shape)
        m = y[0].numel()
        sigmas = self.levels(prior)

        # μ ← A⁺y  (thresholded singular values, as the code's DDRM operators)
        s_thr = thresholded_singular_values(operator, p.svd_threshold, y)
        mu = svd_pinv(operator.svd, y, shape, s_thr).detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([mu], lr=p.lr, betas=(0.9, 0.99), weight_decay=0.0)
        out = mu.detach().clone()
        for i, sigma in enumerate(sigmas):
            out = mu.detach().clone()  # the code's x0_pred of this step
            # ε ~ N(0, I);  x_t = μ + σ_t ε;  ε̂ = (x_t − D(x_t, σ_t)) / σ_t              [1 NFE]
            eps = randn(shape, gens, y)
            with torch.no_grad():
                x_t = out + sigma * eps
                D = prior.denoise(x_t, sigma_batch(sigma, x_t))
                eps_hat = (x_t - D) / sigma
            check_finite(eps_hat, f"reddiff step {i}: noise estimate")
            if callback is not None:
                callback(i, sigma, x_t, D)
            # loss = λ σ_t mean((ε̂ − ε) ⊙ μ) + ½ mean((y − A μ)²), per image;  μ ← Adam step
            with torch.enable_grad():
                fit = (y - operator.forward(mu)).reshape(B, -1)
                loss = (p.lambda_ * sigma * ((eps_hat - eps) * mu).reshape(B, -1).sum(1) / d
                        + 0.5 * (fit * fit).sum(1) / m).sum()
                opt.zero_grad()
                loss.backward()
            opt.step()
            check_finite(mu.detach(), f"reddiff step {i}: state")
        # return μ as it was at the start of the last step
        return out
