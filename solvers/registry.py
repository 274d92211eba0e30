"""Name -> solver class registry (docs/design.md §5, §9)."""

from __future__ import annotations

from .base import Solver, SolverError

_CLASSES: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    if cls.name in _CLASSES:
        raise RuntimeError(f"solver {cls.name!r} registered twice")
    _CLASSES[cls.name] = cls
    return cls


def build(name: str, preset: str = "default", **overrides) -> Solver:
    """``solvers.build("vml_map", preset="default", **overrides)``."""
    if name not in _CLASSES:
        raise SolverError(f"unknown solver {name!r}; valid: {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name].from_preset(preset, **overrides)


def get(name: str) -> type[Solver]:
    if name not in _CLASSES:
        raise SolverError(f"unknown solver {name!r}; valid: {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name]


def names() -> tuple[str, ...]:
    return tuple(sorted(_CLASSES))
