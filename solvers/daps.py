"""DAPS — decoupled annealing posterior sampling (Zhang et al., CVPR 2025, arXiv 2407.01521).

Re-implemented from the released code (``zhangbingliang2019/DAPS`` at 098df6b: ``sampler.py``
``DAPS.sample``, ``cores/mcmc.py`` ``MCMCSampler`` with ``mc_algo: langevin`` and
``prior_solver: gaussian``, ``cores/scheduler.py`` ``EDMScheduler`` / ``DiffusionPFODE`` with the
Euler solver), written in our VE units (docs/design.md §2). Each annealing level σ_t decouples the
chain: a short probability-flow ODE gives x̂0(x_t), Langevin dynamics samples
x0 ~ N(x̂0, σ_t² I) · exp(−‖y − A x0‖² / τ²) around it, and the next x_t re-noises that sample::

    σ_0 > … > σ_{N−1}: EDM poly-ρ levels from σ_max to σ_min (ρ = 7), σ_N = 0
    x ~ N(0, σ_0² I)
    for t = 0 … N−1:
        x̂0 ← Euler PF-ODE from x at σ_t down to σ_ode_min on K poly-ρ levels     [K NFE]
             (x ← x + (s_{k+1} − s_k)(x − D(x, s_k)) / s_k)
        η_t = lr · (1 + (t / (N+1)) · (lr_min_ratio − 1))
        x0 ← x̂0;  repeat M times:  ε ~ N(0, I)
             x0 ← x0 + η_t [ −∇‖A x0 − y‖² / τ² + (x̂0 − x0) / σ_t² ] + sqrt(2 η_t) ε
        x ← x0 + σ_{t+1} n,   n ~ N(0, I)          (n is drawn even when σ_{t+1} = 0, as the code)
    return x

Levels are clipped to the prior's valid range ``[prior.sigma_min, prior.sigma_max]`` (our
choice: the code's network accepts any σ). The code's NaN early exit (returning zeros) is replaced
by our finite checks; the HMC and Metropolis–Hastings variants and the other ``prior_solver``
options are not implemented. ``sigma_y`` is not used: the likelihood width is τ, as in the code.

Cost: NFE = N·K, VJP = 0 through the network (the data gradient needs only ``A`` and ``Aᵀ``: the
adjoint of a linear operator, autograd of a non-linear one). Requires nothing beyond ``forward``
(no SVD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from invbench.operators.base import residual_gradient
from torch import Tensor

from .base import Preset, Solver, check_finite, randn, sigma_batch
from .params import param
from .registry import register
from .schedules import clip_sigma, karras_sigmas
from .search_space import log_uniform

__all__ = ["DAPS", "DAPSParams"]


@dataclass(frozen=True)
class DAPSParams:
    """DAPS hyperparameters (defaults: the released pixel-space 4× SR config).

    anneal_steps: N, annealing levels. sigma_max, sigma_min: annealing range (model units; the
        level list is the first N of N+1 poly-ρ levels, then 0, as the code's ``discretize``).
    ode_steps: K, Euler steps of the inner PF-ODE, from σ_t to ``ode_sigma_min``.
    rho: ρ of the poly-ρ (EDM) level spacing.
    mcmc_steps: M, Langevin steps per level. lr: η, Langevin step size at the first level
        (model units²), decayed linearly to ``lr · lr_min_ratio``. tau: τ, likelihood width
        (model units) of the Langevin target.
    """

    anneal_steps: int = param(200, ge=1)
    sigma_max: float = param(100.0, gt="sigma_min")
    sigma_min: float = param(0.1, gt=0.0)
    ode_steps: int = param(5, ge=1)
    ode_sigma_min: float = param(0.01, gt=0.0)
    rho: float = param(7.0, gt=0.0)
    mcmc_steps: int = param(100, ge=1)
    lr: float = param(1e-4, gt=0.0)
    lr_min_ratio: float = param(0.01, gt=0.0)
    tau: float = param(0.01, gt=0.0)


@register
class DAPS(Solver):
    """DAPS (Zhang et al. 2025); see the module docstring for the loop.

    NFE = N·K, VJP = 0 (N = ``anneal_steps``, K = ``ode_steps``).
    """

    name: ClassVar[str] = "daps"
    requires: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type] = DAPSParams
    QUICK: ClassVar[dict] = {"anneal_steps": 3, "ode_steps": 2, "mcmc_steps": 3}
    # ours: two decades either side of the released Langevin step (1e-4, 5e-5 for inpainting) and
    # from 0.1x to 100x the released likelihood width τ = 0.01; the step counts set the cost and
    # are held fixed by the tuner
    SEARCH_SPACE: ClassVar[dict] = {"lr": log_uniform(1e-6, 1e-2), "tau": log_uniform(1e-3, 1.0)}
    # the released 200 x 5 levels do not fit the validation table's time budget
    VALIDATION_PRESET: ClassVar[str] = "cpu"
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            {},
            "zhangbingliang2019/DAPS configs/sampler/edm_daps.yaml (200 annealing levels 100 -> "
            "0.1, "
            "5 Euler ODE steps to 0.01, poly-7) with configs/task/down_sampling.yaml 'pixel' "
            "(100 Langevin steps, lr 1e-4, tau 0.01, lr_min_ratio 0.01)",
        ),
        "inpainting": Preset(
            {"lr": 5e-5},
            "zhangbingliang2019/DAPS configs/sampler/edm_daps.yaml with "
            "configs/task/inpainting.yaml "
            "'pixel' (100 Langevin steps, lr 5e-5, tau 0.01, lr_min_ratio 0.01)",
        ),
        "cpu": Preset(
            {"anneal_steps": 20, "ode_steps": 2, "mcmc_steps": 10},
            "reduced-step CPU variant of 'default' (20 levels, 2 ODE steps, 10 Langevin steps); "
            "ours",
        ),
    }

    def levels(self, prior) -> list[float]:
        """Annealing levels σ_0 > … > σ_{N−1} > σ_N = 0 (model units), clipped to the prior."""
        p: DAPSParams = self.params
        s = karras_sigmas(p.anneal_steps + 1, p.sigma_max, p.sigma_min, p.rho, numpy_order=True)
        return [clip_sigma(prior, v) for v in s.tolist()[:-1]] + [0.0]

    def ode_levels(self, prior, sigma: float) -> list[float]:
        """The inner ODE's K+1 levels from ``sigma`` to ``ode_sigma_min`` (model units), clipped."""
        p: DAPSParams = self.params
        s = karras_sigmas(p.ode_steps + 1, sigma, p.ode_sigma_min, p.rho, numpy_order=True)
        return [clip_sigma(prior, v) for v in s.tolist()]

    def nfe_estimate(self) -> int:
        """Network evaluations per image: N·K (the Langevin steps call only the operator)."""
        return int(self.params.anneal_steps) * int(self.params.ode_steps)

    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """One posterior sample per image (model space, ``(B, *operator.in_shape)``)."""
        p: DAPSParams = self.params
        shape = tuple(operator.in_shape)
        sig = self.levels(prior)
        N = p.anneal_steps
        x = randn(shape, gens, y) * sig[0]
        for t in range(N):
            s_t = sig[t]
            # x̂0: Euler PF-ODE from σ_t down to ode_sigma_min                               [K NFE]
            xo = x
            ode = self.ode_levels(prior, s_t)
            D = xo
            with torch.no_grad():
                for k in range(p.ode_steps):
                    D = prior.denoise(xo, sigma_batch(ode[k], xo))
                    xo = xo + (ode[k + 1] - ode[k]) * (xo - D) / ode[k]
            x0hat = check_finite(xo, f"daps level {t}: ODE estimate")
            if callback is not None:
                callback(t, s_t, x, D)
            # Langevin on N(x̂0, σ_t²) · exp(−‖A x0 − y‖² / τ²)
            eta = p.lr * (1.0 + (t / (N + 1)) * (p.lr_min_ratio - 1.0))
            x0 = x0hat.clone()
            for _ in range(p.mcmc_steps):
                g = 2.0 * residual_gradient(operator, x0, y)            # ∇‖A x0 − y‖²
                score = -g / p.tau**2 + (x0hat - x0) / s_t**2
                x0 = x0 + eta * score + math.sqrt(2 * eta) * randn(shape, gens, y)
            check_finite(x0, f"daps level {t}: Langevin state")
            x = x0 + sig[t + 1] * randn(shape, gens, y)
        return x
