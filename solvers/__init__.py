"""Inverse-problem solvers behind one interface (docs/design.md §5)."""

# ruff: noqa: I001, RUF022  (import order = registration order; __all__ grouped by kind)

from .base import Preset, Solver, SolverDiverged, SolverError, SolverSkip
from .registry import build, get, names, register
# Importing a solver module registers its solver. ``import x as x`` is an explicit re-export, so
# each registration is one plain line (adding a solver: one line here, docs/adding-a-solver.md).
from . import vml_map as vml_map  # registers "vml_map"
from . import oracles as oracles  # registers "oracle_map", "oracle_mean", "oracle_sample"
from . import dps as dps  # registers "dps"
from . import ddrm as ddrm  # registers "ddrm"
from . import pigdm as pigdm  # registers "pigdm"
from . import diffpir as diffpir  # registers "diffpir"
from . import reddiff as reddiff  # registers "reddiff"
from . import daps as daps  # registers "daps"
from . import lmaps as lmaps  # registers "lmaps"

NAMES: tuple[str, ...] = names()

__all__ = ["Solver", "Preset", "SolverSkip", "SolverDiverged", "SolverError", "build", "get",
           "names", "register", "NAMES"]
