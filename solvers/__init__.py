"""Inverse-problem solvers behind one interface (DESIGN §5)."""

from .base import Preset, Solver, SolverDiverged, SolverError, SolverSkip
from .registry import build, get, names, register

NAMES: tuple[str, ...] = names()

__all__ = ["Solver", "Preset", "SolverSkip", "SolverDiverged", "SolverError", "build", "get", "names", "register", "NAMES"]
