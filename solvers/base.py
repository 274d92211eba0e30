"""Solver contract (docs/design.md §5).

A solver maps a measurement ``y`` (model space, shape ``(B, *A.out_shape)``) to a
reconstruction ``x_hat`` (model space [-1, 1], shape ``(B, *A.in_shape)``). Hyperparameters
are a frozen dataclass whose fields declare their valid values (``solvers/params.py``); named
presets carry their provenance. ``requirements()`` lists the capabilities needed from the
operator and prior together (``operator.capabilities | prior.capabilities``); an unsupported
pairing raises :class:`SolverSkip` with the reason.

``Solver.solve`` is a template: it does the prologue every solver shares (capabilities,
``sigma_y``, the shape of ``y``, one generator per image, divergence checks without a host sync
per step) and then calls the solver's own loop, ``_solve`` — the algorithm box and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .errors import ParamTypeError, SolverDiverged, SolverError, SolverSkip
from .params import check_params

__all__ = [
    "Callback",
    "Generators",
    "ParamTypeError",
    "Preset",
    "Solver",
    "SolverDiverged",
    "SolverError",
    "SolverSkip",
    "check_finite",
    "deferred_finite_checks",
    "generators_for",
    "randn",
    "sigma_batch",
]

Callback = Callable[[int, float, Tensor, Tensor], None]
"""``callback(step, sigma, x, x0_hat)`` called once per solver step (sigma in model units)."""

Generators = torch.Generator | Sequence[torch.Generator]


@dataclass(frozen=True)
class Preset:
    """A named hyperparameter set and where its values come from.

    ``params`` holds only the values that differ from the solver's ``Params()`` defaults, which
    are the ``"default"`` preset (so ``PRESETS["default"].params`` is empty)."""

    params: dict
    provenance: str


class Solver:
    """Base class. Subclasses set ``name``, ``requires``, ``Params`` and ``PRESETS`` and write
    ``_solve`` (their algorithm box); :meth:`solve` does the shared prologue."""

    name: ClassVar[str]
    #: capabilities every instance needs; :meth:`requirements` adds what its parameters need
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
        """Hold ``params`` (default ``Params()``), checked against their declared valid values
        (:func:`~invbench.solvers.params.check_params`; :class:`SolverError` names the field)."""
        params = params if params is not None else self.Params()
        self.params = check_params(self.name, params)
        self.preset = preset

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides) -> Solver:
        """The solver with preset ``preset`` and ``overrides`` (:class:`SolverError` for an
        unknown preset or field, :class:`ParamTypeError` for a value of the wrong type)."""
        if preset not in cls.PRESETS:
            raise SolverError(f"unknown preset {preset!r} for solver {cls.name!r}; "
                              f"valid: {', '.join(sorted(cls.PRESETS))}")
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise SolverError(f"unknown hyperparameter(s) {', '.join(bad)} for solver "
                              f"{cls.name!r}; valid: {', '.join(sorted(fields))}")
        return cls(cls.Params(**{**cls.PRESETS[preset].params, **overrides}), preset=preset)

    def levels(self, prior) -> Sequence[float] | None:
        """The noise levels (model units, descending) the solver runs on with ``prior``; None for
        a solver without a schedule (the oracles). Raises if they cannot be built for ``prior``."""
        return None

    def validate(self, prior) -> None:
        """Raise :class:`SolverError` (or ``ValueError``) if the hyperparameters cannot run with
        ``prior`` (e.g. more steps than the prior's noise grid has): builds :meth:`levels`. Called
        during validation, before any run."""
        self.levels(prior)

    def requirements(self) -> frozenset[str]:
        """The capabilities this instance needs: ``requires`` plus those its parameters add
        (e.g. VML-MAP's SVD preconditioner needs ``"svd"``). Read by :meth:`check`."""
        return frozenset(self.requires)

    def check(self, operator, prior) -> None:
        """Raise :class:`SolverSkip` if :meth:`requirements` are not met by the operator and
        prior."""
        have = set(operator.capabilities) | set(prior.capabilities)
        missing = sorted(self.requirements() - have)
        if missing:
            raise SolverSkip(
                f"{self.name} requires {', '.join(missing)}; operator "
                f"{operator.name or type(operator).__name__} and prior "
                f"{getattr(prior, 'name', '') or type(prior).__name__} do not provide it"
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
        """Return the reconstruction (model space, shape ``(B, *operator.in_shape)``).

        ``y``: ``(B, *operator.out_shape)``, model space; ``sigma_y`` >= 0 in model units. One
        generator per image makes the result batch-invariant (a single one serves every image in
        turn). Raises :class:`SolverSkip` (unmet :meth:`requirements`), :class:`SolverError`
        (bad ``sigma_y``, shape or generators) before any network call, and
        :class:`SolverDiverged` when the state holds NaN/Inf."""
        self.check(operator, prior)
        sigma_y = float(sigma_y)
        if not (sigma_y >= 0 and math.isfinite(sigma_y)):
            raise SolverError(f"{self.name}: sigma_y must be finite and >= 0, got {sigma_y}")
        if y.dim() < 1 or tuple(y.shape[1:]) != tuple(operator.out_shape):
            raise SolverError(f"{self.name}: y has shape {tuple(y.shape)}, expected "
                              f"(B, {', '.join(map(str, operator.out_shape))}) for operator "
                              f"{operator.name or type(operator).__name__}")
        gens = generators_for(generator, y.shape[0])
        with _finite_checks():
            return self._solve(y.detach(), operator, prior, sigma_y, gens, callback)

    def _solve(self, y: Tensor, operator, prior, sigma_y: float, gens: list[torch.Generator],
               callback: Callback | None) -> Tensor:
        """The solver's own loop (its algorithm box), after :meth:`solve`'s prologue: ``y``
        detached and of the operator's shape, ``sigma_y`` a float >= 0, ``gens`` one generator
        per image (draw noise with :func:`randn`), ``callback`` as in :data:`Callback`. Mark
        the state with :func:`check_finite`."""
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
    out = [torch.randn(tuple(shape_per_item), generator=g, device=g.device, dtype=like.dtype)
           for g in gens]
    z = out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)  # batch 1: no copy
    return z.to(like.device)


def sigma_batch(sigma: float, like: Tensor) -> Tensor:
    """A ``(B,)`` tensor filled with the noise level ``sigma`` on ``like``'s device and dtype
    (the ``sigma`` argument of ``prior.denoise``)."""
    return torch.full((like.shape[0],), float(sigma), dtype=like.dtype, device=like.device)


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
        log.flush()   # SolverDiverged (with this error as its context) if a recorded check failed
        raise
    finally:
        _FINITE_LOG.reset(token)


def _finite_checks() -> contextlib.AbstractContextManager:
    """The context :meth:`Solver.solve` runs its loop in: :func:`deferred_finite_checks`, unless
    the caller already opened one (then the caller's settings hold, e.g. ``defer_cpu`` in
    tests)."""
    return contextlib.nullcontext() if _FINITE_LOG.get() is not None else deferred_finite_checks()


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
