"""Inverse-problem solvers behind one interface (docs/design.md §5)."""

# ruff: noqa: I001, RUF022  (import order = registration order; __all__ grouped by kind)

from .base import Preset, Solver, SolverDiverged, SolverError, SolverSkip
from .registry import build, get, names, register
from . import vml_map as _vml_map  # noqa: F401  (registers "vml_map")
from . import oracles as _oracles  # noqa: F401  (registers "oracle_map", "oracle_mean", "oracle_sample")
from . import dps as _dps  # noqa: F401  (registers "dps")
from . import ddrm as _ddrm  # noqa: F401  (registers "ddrm")
from . import pigdm as _pigdm  # noqa: F401  (registers "pigdm")
from . import diffpir as _diffpir  # noqa: F401  (registers "diffpir")
from . import reddiff as _reddiff  # noqa: F401  (registers "reddiff")
from . import daps as _daps  # noqa: F401  (registers "daps")
from . import lmaps as _lmaps  # noqa: F401  (registers "lmaps")

NAMES: tuple[str, ...] = names()

__all__ = ["Solver", "Preset", "SolverSkip", "SolverDiverged", "SolverError", "build", "get", "names", "register", "NAMES"]
