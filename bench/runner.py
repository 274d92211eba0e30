"""Transitional name: the run wing is :mod:`invbench.bench.run` (prepare, resume, execute, ...).

Only the names that modules still being ported import from here are re-exported; import them
from :mod:`invbench.bench.run` instead. This module goes once nothing imports it.
"""

from .run import code_version, nfe_per_image

__all__ = ["code_version", "nfe_per_image"]
