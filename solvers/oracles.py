"""Exact oracles for analytic priors (docs/design.md §5): the closed-form posterior of a
Gaussian-mixture prior under a linear operator with Gaussian noise,
``p(x0 | y) ∝ p(x0) N(y; A x0, σ_y² I)``.

* ``oracle_map``    — ``argmax p(x0 | y)`` (``prior.posterior(A, y, σ_y).map()``),
* ``oracle_mean``   — ``E[x0 | y]`` (``.mean()``),
* ``oracle_sample`` — one exact posterior sample per image (``.sample(1, generator=g_i)``, g_i
  the image's own generator, so results are batch-invariant).

They are upper bounds for the leaderboards on analytic priors, not solvers one could run on a
learned prior. Cost: NFE = 0, VJP = 0 (no network evaluation). Requires {"analytic", "linear"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .base import Preset, Solver
from .registry import register

__all__ = ["OracleMAP", "OracleMean", "OracleSample"]


@dataclass(frozen=True)
class OracleParams:
    """Oracles have no hyper-parameters."""


class _Oracle(Solver):
    requires = frozenset({"analytic", "linear"})
    Params = OracleParams
    PRESETS: ClassVar[dict[str, Preset]] = {
        "default": Preset({}, "exact closed form (no hyper-parameters)"),
    }

    def _one(self, post, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def nfe_estimate(self) -> int:
        """Network evaluations per image: none (closed form from the prior's parameters)."""
        return 0

    def _solve(self, y: Tensor, operator, prior, sigma_y, gens, callback) -> Tensor:
        """Exact answer per image, shape ``(B, *operator.in_shape)``, y's dtype and device.
        ``callback`` (if given) is called once with ``(0, 0.0, x_hat, x_hat)`` per batch."""
        B = y.shape[0]
        out = []
        for b in range(B):
            post = prior.posterior(operator, y[b : b + 1], sigma_y)
            x_b = self._one(post, gens[b]).reshape(operator.in_shape)
            out.append(x_b.to(device=y.device, dtype=y.dtype))
        x = torch.stack(out)
        if callback is not None:
            callback(0, 0.0, x, x)
        return x


@register
class OracleMAP(_Oracle):
    """Exact posterior mode ``argmax_x p(x | y)`` (global, from the prior's posterior)."""

    name = "oracle_map"
    DRAWS_SAMPLES = False

    def _one(self, post, generator):
        return post.map()


@register
class OracleMean(_Oracle):
    """Exact posterior mean ``E[x | y]`` (MMSE estimate)."""

    name = "oracle_mean"
    DRAWS_SAMPLES = False

    def _one(self, post, generator):
        return post.mean()


@register
class OracleSample(_Oracle):
    """One exact posterior sample per image, drawn with that image's generator."""

    name = "oracle_sample"

    def _one(self, post, generator):
        return post.sample(1, generator=generator)
