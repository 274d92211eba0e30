"""Forward models ``y = A(x) + noise`` in model space (docs/design.md §3).

Public surface: :func:`build`, :data:`PRESETS`, :class:`Operator`, :class:`LinearOperator`,
:class:`SVD`, :mod:`invbench.operators.conventions`.
"""

# ruff: noqa: I001, RUF022  (import order = registration order; __all__ grouped by kind)

from . import conventions
from .base import SVD, LinearOperator, Operator, OperatorError
from .registry import FAMILIES, build, family, names, register
from . import presets as _presets  # noqa: F401  (registers the presets)

PRESETS: tuple[str, ...] = names()

__all__ = ["build", "PRESETS", "FAMILIES", "family", "Operator", "LinearOperator", "SVD", "OperatorError",
           "conventions",
           "register"]
