"""Hyperparameter search spaces that solvers declare next to their presets (``SEARCH_SPACE``).

A space is a ``dict[str, Param]`` mapping a field of the solver's ``Params`` dataclass to its
range; ``invbench tune`` samples it with Optuna. Step counts are not searched unless a solver
lists them (VML-MAP's N and K): the NFE of every solve is fixed or capped by the tuner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: ``kind`` = ``"float"`` | ``"int"`` | ``"categorical"``;
    ``low``/``high`` inclusive bounds (in the parameter's own units); ``log`` samples
    log-uniformly; ``choices`` for categoricals."""

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial, name: str) -> Any:
        """Draw this parameter from an ``optuna.Trial``."""
        if self.kind == "float":
            return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def as_dict(self) -> dict:
        """A TOML-friendly description (written into tuned preset files)."""
        if self.kind == "categorical":
            return {"kind": self.kind, "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high, "log": self.log}


def log_uniform(low: float, high: float) -> Param:
    return Param("float", low, high, log=True)


def uniform(low: float, high: float) -> Param:
    return Param("float", low, high)


def int_range(low: int, high: int, log: bool = False) -> Param:
    return Param("int", low, high, log=log)


def choice(*values) -> Param:
    return Param("categorical", choices=tuple(values))


__all__ = ["Param", "choice", "int_range", "log_uniform", "uniform"]
