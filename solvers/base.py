"""Solver contract (docs/design.md §5).

A solver maps a measurement ``y`` (model space, shape ``(B, *A.out_shape)``) to a
reconstruction ``x_hat`` (model space [-1, 1], shape ``(B, *A.in_shape)``). Hyperparameters
are a frozen dataclass; named presets carry their provenance. ``requires`` lists the
capabilities needed from the operator and prior together (``operator.capabilities |
prior.capabilities``); an unsupported pairing raises :class:`SolverSkip` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

Callback = Callable[[int, float, Tensor, Tensor], None]
"""``callback(step, sigma, x, x0_hat)`` called once per solver step (sigma in model units)."""

Generators = torch.Generator | Sequence[torch.Generator]


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


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"an array of {_describe(args[0])}s" if args and args[-1] is Ellipsis else f"an array of {len(args)} numbers"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "unset (None)"}.get(hint, getattr(hint, "__name__", str(hint)))


def _type_ok(v, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(v, a) for a in args)
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)   # finiteness: checked by the config
    if hint is str:
        return isinstance(v, str)
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


def require_counts(solver: str, params, *fields: str) -> None:
    """:class:`SolverError` naming the first of ``fields`` of ``params`` that is not an integer >= 1."""
    for field in fields:
        v = getattr(params, field)
        if int(v) != v or v < 1:
            raise SolverError(f"{solver}: {field} must be an integer >= 1, got {v}")


def require_positive(solver: str, params, *fields: str) -> None:
    """:class:`SolverError` naming the first of ``fields`` of ``params`` that is not finite and > 0."""
    for field in fields:
        v = getattr(params, field)
        if not (v > 0 and math.isfinite(v)):
            raise SolverError(f"{solver}: {field} must be > 0, got {v}")


@dataclass(frozen=True)
class Preset:
    """A named hyperparameter set and where its values come from.

    ``params`` holds only the values that differ from the solver's ``Params()`` defaults, which
    are the ``"default"`` preset (so ``PRESETS["default"].params`` is empty)."""

    params: dict
    provenance: str


class Solver:
    """Base class. Subclasses set ``name``, ``requires``, ``Params`` and ``PRESETS``."""

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type]
    PRESETS: ClassVar[dict[str, Preset]] = {}
    #: overrides for smoke tests: the fewest steps that still run every code path of ``solve``
    QUICK: ClassVar[dict] = {}
    #: hyperparameters ``invbench tune`` searches: field name -> ``search_space.Param``
    SEARCH_SPACE: ClassVar[dict] = {}
    #: the exact-posterior validation (bench/studies/exact_posterior.py) scores a solver that draws
    #: posterior samples with sample-set metrics, a point estimator (MAP, mean) as a MAP finder
    DRAWS_SAMPLES: ClassVar[bool] = True
    #: the preset that validation runs (a reduced-step one where the released one is too slow)
    VALIDATION_PRESET: ClassVar[str] = "default"
    #: "" for a port of released code or a paper's full algorithm; otherwise what the solver is
    #: instead (e.g. "reconstruction, no public code"), printed in every result's provenance
    FIDELITY: ClassVar[str] = ""

    def __init__(self, params=None, preset: str = "default"):
        self.params = params if params is not None else self.Params()
        self.preset = preset

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides) -> Solver:
        if preset not in cls.PRESETS:
            raise SolverError(
                f"unknown preset {preset!r} for solver {cls.name!r}; valid: {', '.join(sorted(cls.PRESETS))}"
            )
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise SolverError(
                f"unknown hyperparameter(s) {', '.join(bad)} for solver {cls.name!r}; valid: {', '.join(sorted(fields))}"
            )
        values = {**cls.PRESETS[preset].params, **overrides}
        check_param_types(cls.name, cls.Params, values)
        return cls(cls.Params(**values), preset=preset)

    def validate(self, prior) -> None:
        """Raise :class:`SolverError` if the hyperparameters cannot run with ``prior`` (e.g. more
        steps than the prior's noise grid has); called during validation, before any run."""

    def check(self, operator, prior) -> None:
        """Raise :class:`SolverSkip` if ``requires`` is not met by the operator and prior."""
        have = set(operator.capabilities) | set(prior.capabilities)
        missing = sorted(self.requires - have)
        if missing:
            raise SolverSkip(
                f"{self.name} requires {', '.join(missing)}; operator {operator.name or type(operator).__name__} "
                f"and prior {getattr(prior, 'name', '') or type(prior).__name__} do not provide it"
            )

    def solve(
        self,
        y: Tensor,
        operator,
        prior,
        *,
        sigma_y: float,
        generator: Generators | None = None,
        callback: Callback | None = None,
    ) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(preset={self.preset!r}, {self.params})"


def generators_for(generator: Generators | None, batch: int) -> list[torch.Generator]:
    """Normalise ``generator`` to one generator per batch item.

    A single generator is only accepted for batch 1 or used for all items in sequence (then
    results depend on the batch composition); pass one generator per image for batch-invariant
    results (docs/design.md §2).
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if isinstance(generator, torch.Generator):
        return [generator] * batch
    gens = list(generator)
    if len(gens) != batch:
        raise SolverError(f"got {len(gens)} generators for a batch of {batch}")
    return gens


def randn(shape_per_item: Sequence[int], gens: list[torch.Generator], like: Tensor) -> Tensor:
    """Standard normal noise of shape ``(B, *shape_per_item)``, item ``i`` drawn from ``gens[i]``
    on the generator's device, then moved to ``like``'s device and dtype (device-independent)."""
    out = [torch.randn(tuple(shape_per_item), generator=g, device=g.device, dtype=like.dtype) for g in gens]
    z = out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)  # batch 1: no copy
    return z.to(like.device)


class _FiniteLog:
    """Device-side verdicts of deferred :func:`check_finite` calls, read in batches."""

    def __init__(self, every: int, defer_cpu: bool):
        self.every, self.defer_cpu = int(every), defer_cpu
        self.flags: list[Tensor] = []
        self.where: list[str] = []

    def record(self, bad: Tensor, where: str) -> None:
        self.flags.append(bad)
        self.where.append(where)
        if len(self.flags) >= self.every:
            self.flush()

    def flush(self) -> None:
        """One host sync for all recorded checks; raise for the first that failed."""
        if not self.flags:
            return
        bad = torch.stack([f.to(self.flags[0].device) for f in self.flags])
        where, self.flags, self.where = self.where, [], []
        if bool(bad.any()):
            raise SolverDiverged(f"non-finite values in {where[int(bad.nonzero()[0, 0])]}")


_FINITE_LOG: ContextVar[_FiniteLog | None] = ContextVar("invbench_finite_log", default=None)


@contextlib.contextmanager
def deferred_finite_checks(every: int = 64, defer_cpu: bool = False) -> Iterator[None]:
    """Inside this context :func:`check_finite` on accelerator tensors keeps its verdict on the
    device instead of reading it to the host (no host–device sync per solver step); the verdicts
    are read together every ``every`` checks and on leaving, and the first failing check raises
    :class:`SolverDiverged` with its own label — so a diverged solve still ends as
    ``SolverDiverged``, at most ``every`` checks later. An exception raised meanwhile (e.g. by an
    operation on the NaNs) is reported as the divergence that caused it, if one was recorded.
    CPU tensors are checked at once (no sync to save) unless ``defer_cpu`` (tests)."""
    log = _FiniteLog(every, defer_cpu)
    token = _FINITE_LOG.set(log)
    try:
        yield
        log.flush()
    except SolverDiverged:
        raise
    except Exception:
        log.flush()   # raises SolverDiverged (with this error as its context) if a recorded check failed
        raise
    finally:
        _FINITE_LOG.reset(token)


def with_deferred_finite_checks(solve: Callable) -> Callable:
    """Decorator for ``Solver.solve``: the solve runs inside :func:`deferred_finite_checks`."""

    @functools.wraps(solve)
    def wrapper(*args, **kwargs):
        with deferred_finite_checks():
            return solve(*args, **kwargs)

    return wrapper


def check_finite(x: Tensor, where: str) -> Tensor:
    """Raise :class:`SolverDiverged` if ``x`` holds NaN/Inf.

    Tested as ``isfinite(max |x|)`` (``amax`` propagates NaN, ``|±inf| = inf``): the same verdict
    as ``isfinite(x).all()`` with one reduction instead of an elementwise pass plus a reduction
    (≈ 20× cheaper per call on CPU). Inside :func:`deferred_finite_checks` a check of an
    accelerator tensor is recorded on the device and read later (no host sync here)."""
    if not x.numel():
        return x
    bad = ~torch.isfinite(x.detach().abs().amax())
    log = _FINITE_LOG.get()
    if log is not None and (x.device.type != "cpu" or log.defer_cpu):
        log.record(bad, where)
    elif bad:
        raise SolverDiverged(f"non-finite values in {where}")
    return x
