"""The solver contract's exceptions (docs/design.md §5); ``invbench.solvers`` re-exports them."""

from __future__ import annotations

__all__ = ["ParamTypeError", "SolverDiverged", "SolverError", "SolverSkip"]


class SolverSkip(Exception):
    """This solver cannot run on this operator/prior pairing; ``str(e)`` is the reason."""


class SolverDiverged(Exception):
    """NaN/Inf appeared in the solver state; ``str(e)`` says where."""


class SolverError(ValueError):
    """Bad solver name, preset or hyperparameter (one readable line)."""


class ParamTypeError(SolverError):
    """A hyperparameter of the wrong type; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
