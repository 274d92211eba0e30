"""Denoising priors ``D(x, sigma)`` in model space (DESIGN §4)."""

from .base import CountingPrior, Prior, PriorError, as_sigma
from .registry import build, names, register

__all__ = ["Prior", "CountingPrior", "PriorError", "as_sigma", "build", "names", "register"]
