"""Denoising priors ``D(x, sigma)`` in model space (docs/design.md §4)."""

# ruff: noqa: I001, RUF022  (import order = registration order; __all__ grouped by kind)

from .base import CountingPrior, Prior, PriorError, as_sigma
from .registry import build, names, register
from .gmm import GaussianMixturePrior
from . import gmm_library as _gmm_library  # noqa: F401  (registers the gmm-* priors)
from . import gmm_lowrank_library as _gmm_lowrank_library  # noqa: F401  (registers gmm-crops32)
from .gmm_lowrank import LowRankGaussianMixturePrior
from . import adm, small_cpu  # noqa: F401  (network priors: registers adm-*, small-cpu)

__all__ = ["Prior", "CountingPrior", "PriorError", "as_sigma", "build", "names", "register",
           "GaussianMixturePrior", "LowRankGaussianMixturePrior"]
