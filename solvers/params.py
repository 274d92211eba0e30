"""Hyperparameters declared once and checked in one place (docs/adding-a-solver.md).

A solver's ``Params`` is a frozen dataclass. Each field's type is its annotation; its valid values
are declared next to its default with :func:`param`::

    steps: int = param(200, ge=1)                    # an integer >= 1
    lr: float = param(1.0, gt=0.0, lt=2.0)           # finite, in (0, 2)
    sigma_max: float = param(100.0, gt="sigma_min")  # a bound may name another field
    init: str = param("pinv", one_of=("pinv", "gaussian"))

:func:`check_params` (called by ``Solver.__init__``, so every built solver is checked) tests the
types of all fields, then each declared range, and words every error the same way:
``daps: lr must be > 0, got 0.0``. Solvers write no validation code of their own.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import ParamTypeError, SolverError

__all__ = ["Spec", "check_param_types", "check_params", "param"]

_KEY = "invbench_spec"
Bound = float | str | None


@dataclass(frozen=True)
class Spec:
    """The valid values of one hyperparameter: bounds (a number, or the name of another field of
    the same dataclass), ``one_of`` for categories, ``increasing`` for a strictly increasing
    tuple of numbers (stored as floats)."""

    ge: Bound = None
    gt: Bound = None
    le: Bound = None
    lt: Bound = None
    one_of: tuple = ()
    increasing: bool = False


def param(default: Any, *, ge: Bound = None, gt: Bound = None, le: Bound = None, lt: Bound = None,
          one_of: tuple = (), increasing: bool = False) -> Any:
    """A dataclass field with default ``default`` and its valid values declared (see module
    docstring). A numeric field with any bound must also be finite; an ``int`` field with a bound
    must hold an integer."""
    spec = Spec(ge, gt, le, lt, tuple(one_of), increasing)
    return dataclasses.field(default=default, metadata={_KEY: spec})


def check_params(solver: str, params: Any) -> Any:
    """``params`` after the checks of the module docstring, with ``increasing`` tuples stored as
    floats (a TOML list becomes a tuple); :class:`SolverError` (:class:`ParamTypeError` for a
    wrong type) naming ``solver`` and the first field that fails."""
    fields = dataclasses.fields(params)
    check_param_types(solver, type(params), {f.name: getattr(params, f.name) for f in fields})
    specs = {f.name: f.metadata[_KEY] for f in fields if _KEY in f.metadata}
    hints = typing.get_type_hints(type(params))
    for own_bounds in (True, False):    # a field's numeric bounds before bounds naming other fields
        for name, spec in specs.items():
            _check_one(solver, params, name, spec, hints[name], own_bounds)
    fixed = {n: tuple(float(v) for v in getattr(params, n))
             for n, s in specs.items() if s.increasing}
    return dataclasses.replace(params, **fixed) if fixed else params


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
        "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _check_one(solver: str, params, name: str, spec: Spec, hint, own_bounds: bool) -> None:
    v = getattr(params, name)
    if own_bounds and spec.one_of and v not in spec.one_of:
        choices = ", ".join(map(str, spec.one_of))
        raise SolverError(f"{solver}: {name} must be one of {choices}, got {v!r}")
    if own_bounds and spec.increasing and any(a >= b for a, b in itertools.pairwise(v)):
        raise SolverError(f"{solver}: {name} must be strictly increasing, got {v!r}")
    bounds = {k: getattr(spec, k) for k in _OPS if getattr(spec, k) is not None}
    if not bounds or v is None:
        return
    if own_bounds:
        numeric = {k: b for k, b in bounds.items() if not isinstance(b, str)}
        if numeric and not _in_bounds(v, numeric, hint):
            raise SolverError(f"{solver}: {name} must be {_wording(numeric, hint)}, got {v!r}")
        return
    named = {k: getattr(params, b) for k, b in bounds.items() if isinstance(b, str)}
    if named and not _in_bounds(v, named, hint):
        shown = {k: f"{bounds[k]} ({b})" for k, b in named.items()}
        raise SolverError(f"{solver}: {name} must be {_wording(shown, float)}, got {v!r}")


def _in_bounds(v, bounds: dict, hint) -> bool:
    if not math.isfinite(v) or (hint is int and int(v) != v):
        return False
    return all(_OPS[k][1](v, b) for k, b in bounds.items())


def _wording(bounds: dict, hint) -> str:
    """``"in [0, 1]"``, ``"in (0, 2)"``, ``"> 0"``, ``"an integer >= 1"``."""
    lo = next(((k, b) for k, b in bounds.items() if k in ("ge", "gt")), None)
    hi = next(((k, b) for k, b in bounds.items() if k in ("le", "lt")), None)
    if lo and hi:
        text = (f"in {'[' if lo[0] == 'ge' else '('}{lo[1]}, "
                f"{hi[1]}{']' if hi[0] == 'le' else ')'}")
    else:
        k, b = lo or hi
        text = f"{_OPS[k][0]} {b}"
    return f"an integer {text}" if hint is int else text


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            return f"an array of {_describe(args[0])}s"
        return f"an array of {len(args)} numbers"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "unset (None)"}.get(hint, getattr(hint, "__name__", str(hint)))


def _type_ok(v, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(v, a) for a in args)
    simple = {type(None): lambda: v is None, bool: lambda: isinstance(v, bool),
              int: lambda: isinstance(v, int) and not isinstance(v, bool),
              # finiteness: checked by the declared bounds and by the config
              float: lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda: isinstance(v, str)}
    if hint in simple:
        return simple[hint]()
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            return False
        if args and args[-1] is Ellipsis:
            return all(_type_ok(x, args[0]) for x in v)
        return len(v) == len(args) and all(_type_ok(x, a) for x, a in zip(v, args))
    return True


def check_param_types(solver: str, params_cls: type, values: dict) -> None:
    """:class:`ParamTypeError` for the first value of ``values`` whose type does not match the
    annotation of its field in the ``params_cls`` dataclass (int, float, str, bool,
    tuples, ``X | None``)."""
    hints = typing.get_type_hints(params_cls)
    for k, v in values.items():
        if k in hints and not _type_ok(v, hints[k]):
            raise ParamTypeError(k, f"{solver}: {k} must be {_describe(hints[k])}, got {v!r}")
