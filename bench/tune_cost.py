"""What a setting of ``invbench tune`` costs per solve, and how a cap shapes the search: the NFE
cap cuts the integer parameters' ranges (:func:`suggest_within_cap`); under the FE cap
(FE = NFE + VJP per solve, measured under :class:`invbench.priors.CountingPrior` by
:class:`FeMeter` and cached in ``fe_per_setting.json`` of the tune folder) the step count is also
fitted to the cap (:func:`fit_steps`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .problem import solve_and_score
from .run import nfe_per_image
from .tune_types import Case, TuneError


def suggest_within_cap(
    trial, cls, base_preset: str, fixed: dict, nfe_cap: float | None, cost_of=None
) -> dict:
    """Draw the solver's ``SEARCH_SPACE`` for one trial. Under a cap, an integer parameter
    that changes the cost (VML-MAP's N and K) is drawn from its range cut at the largest value that
    keeps one solve within the cap, the parameters drawn after it at their lower bounds: the cap
    shapes the space instead of discarding most trials. Parameters are drawn in declaration order.
    A trial whose lower bounds already exceed the cap is drawn unchanged (and pruned by the
    caller). ``cost_of(kwargs)`` is the cost of one solve of the setting ``kwargs`` (the preset's
    values overridden); by default its NFE (``nfe_per_image``), under ``fe_cap`` its measured FE."""
    space = cls.SEARCH_SPACE
    names = list(space)
    params: dict = {}
    if cost_of is None:

        def cost_of(kw: dict) -> float:
            return nfe_per_image(cls.from_preset(base_preset, **kw))

    def cost(trial_params: dict) -> float:
        rest = {k: space[k].low for k in names if k not in trial_params and space[k].kind == "int"}
        return cost_of({**fixed, **rest, **trial_params})

    for k in names:
        p = space[k]
        if nfe_cap is None or p.kind != "int" or cost({**params, k: int(p.low)}) > nfe_cap:
            params[k] = p.suggest(trial, k)
            continue
        lo, hi = int(p.low), int(p.high)
        if cost({**params, k: hi}) > nfe_cap:  # largest value within the cap (cost grows with it)
            a, b = lo, hi
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if cost({**params, k: mid}) <= nfe_cap else (a, mid)
            hi = a
        params[k] = trial.suggest_int(k, lo, hi, log=p.log)
    return params


FE_CACHE_NAME = "fe_per_setting.json"
STEP_FIELDS = ("steps", "anneal_steps")
"""The integer parameter that sets a solver's cost when its search space has none: under
``fe_cap`` it is set to the largest value whose measured FE per solve fits the cap."""


def measure_counts(solver, case: Case) -> tuple[float, float]:
    """(NFE, VJP) of one solve of ``case`` by ``solver``, counted by
    :class:`invbench.priors.CountingPrior`. A solve that diverges is extrapolated to the solver's
    NFE estimate at the VJP/NFE ratio counted until it stopped."""
    from invbench.priors import CountingPrior

    from invbench import solvers

    counting = CountingPrior(case.prior)
    solver.validate(counting)
    try:
        solve_and_score(solver, [case.problem], counting)
    except solvers.SolverDiverged:
        nfe = nfe_per_image(solver)
        return nfe, (counting.vjp / counting.nfe * nfe if counting.nfe else 0.0)
    return float(counting.nfe), float(counting.vjp)


class FeMeter:
    """Forward-equivalents (NFE + VJP) per solve of a solver's settings, measured by solving one
    validation problem under the counting prior. A setting's key leaves out the continuous
    parameters of the search space (they do not change the count), so one measurement serves
    every trial with the same integer and categorical values. The cache is kept in
    ``FE_CACHE_NAME`` of the tune folder once :meth:`attach` names it."""

    def __init__(self, cls, base_preset: str, case: Case) -> None:
        self.cls, self.base_preset, self.case = cls, base_preset, case
        # what a count depends on besides the setting: the solver, its base preset, the problem
        # (task, image) and the prior; a cache another solver or config left is not reused
        self.scope = json.dumps([cls.__module__ + "." + cls.__qualname__, base_preset, case.problem.task,
                                 case.image_sha256, getattr(case.prior, "name", type(case.prior).__name__)])
        self.floats = {k for k, p in cls.SEARCH_SPACE.items() if p.kind == "float"}
        self.cache: dict[str, list[float]] = {}
        self.path: Path | None = None
        self.seconds = 0.0  # wall time spent measuring (solves outside the trials' scores)

    def load(self, path: Path) -> None:
        """Read what an earlier tune of the folder measured (nothing when absent or unreadable)."""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            old = json.loads(path.read_text())
            self.cache = {**{str(k): [float(x) for x in v] for k, v in old.items()}, **self.cache}

    def attach(self, path: Path) -> None:
        """Keep the cache in ``path`` from now on (merged with what it holds)."""
        self.load(path)
        self.path = path
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.cache, sort_keys=True, indent=1) + "\n")
            os.replace(tmp, self.path)

    def counts(self, kwargs: dict) -> tuple[float, float]:
        """(NFE, VJP) per solve of the setting ``kwargs``; ``(inf, 0)`` for an invalid one."""
        from invbench import solvers

        kw = {k: v for k, v in kwargs.items() if k not in self.floats}
        key = self.scope + " " + json.dumps(kw, sort_keys=True, default=str)
        if key not in self.cache:
            t0 = time.perf_counter()
            try:
                s = self.cls.from_preset(self.base_preset, **kw)
                self.cache[key] = list(measure_counts(s, self.case))
            except (solvers.SolverError, ValueError):
                return math.inf, 0.0
            finally:
                self.seconds += time.perf_counter() - t0
            self._save()
        nfe, vjp = self.cache[key]
        return nfe, vjp

    def fe(self, kwargs: dict) -> float:
        """Forward-equivalents per solve of the setting ``kwargs``."""
        return sum(self.counts(kwargs))


def step_field(cls, fixed: dict) -> str | None:
    """The step-count field the cap sets (:data:`STEP_FIELDS`), or None when the search space
    holds integer parameters (they are shaped instead) or explicit ``sigmas`` fix the levels."""
    import dataclasses

    if any(p.kind == "int" for p in cls.SEARCH_SPACE.values()) or fixed.get("sigmas"):
        return None
    names = {f.name for f in dataclasses.fields(cls.Params)}
    return next((f for f in STEP_FIELDS if f in names), None)


def fit_steps(cls, fixed: dict, fe_cap: float, meter: FeMeter, solver: str) -> dict:
    """``fixed`` with the solver's step count set to the largest whose measured FE per solve is
    within ``fe_cap`` (FE grows with it; at least one NFE per step, so it is at most the cap);
    :class:`TuneError` when no step count fits."""
    name = step_field(cls, fixed)
    if name is None:
        return dict(fixed)

    def fits(v: int) -> bool:
        return meter.fe({**fixed, name: v}) <= fe_cap

    lo = next((v for v in (1, 2, 3) if fits(v)), None)
    if lo is None:
        raise TuneError(
            f"--fe-cap {fe_cap:g}: no {name} of {solver} fits (the cheapest measured costs "
            f"{min(meter.fe({**fixed, name: v}) for v in (1, 2, 3)):g} forward-equivalents "
            "per solve)"
        )
    a, b = lo, max(lo, int(fe_cap))
    if fits(b):
        return {**fixed, name: b}
    while b - a > 1:
        mid = (a + b) // 2
        a, b = (mid, b) if fits(mid) else (a, mid)
    return {**fixed, name: a}


def check_nfe_cap(cls, base_preset: str, fixed: dict, nfe_cap: float | None, solver: str) -> None:
    """Refuse a cap below the cheapest setting of the search space (its integer parameters at their
    lower bounds, the rest as in the preset and overrides): every trial would be pruned."""
    if nfe_cap is None:
        return
    low = {k: p.low for k, p in cls.SEARCH_SPACE.items() if p.kind == "int"}
    cheapest = nfe_per_image(cls.from_preset(base_preset, **{**fixed, **low}))
    if cheapest > nfe_cap:
        raise TuneError(
            f"--nfe-cap {nfe_cap:g}: the cheapest setting of {solver}'s search space costs "
            f"{cheapest:g} "
            f"network evaluations per solve (with the config's overrides); nothing to try"
        )


@dataclass
class Caps:
    """The per-solve cap of a study: in NFE (estimated) or in FE (measured by ``meter``)."""

    nfe: float | None = None
    fe: float | None = None
    meter: FeMeter | None = None

    @property
    def value(self) -> float | None:
        return self.fe if self.fe is not None else self.nfe

    @property
    def label(self) -> str | None:
        if self.fe is not None:
            return f"--fe-cap {self.fe:g}"
        return f"--nfe-cap {self.nfe:g}" if self.nfe is not None else None

    def cost_of(self):
        """The cost function :func:`suggest_within_cap` shapes the space with."""
        return self.meter.fe if self.fe is not None and self.meter is not None else None


def fe_setup(
    cls,
    base_preset: str,
    fixed: dict,
    fe_cap: float,
    probs: list[Case],
    out_dir: Path,
    solver: str,
    log,
) -> tuple[dict, FeMeter]:
    """Under ``fe_cap``: the FE meter (on the first validation problem, reading the folder's
    cache) and ``fixed`` with the step count fitted to the cap; the cheapest setting of the
    search space must fit (:class:`TuneError` otherwise, before anything is written)."""
    meter = FeMeter(cls, base_preset, probs[0])
    meter.load(out_dir / FE_CACHE_NAME)
    fitted = fit_steps(cls, fixed, fe_cap, meter, solver)
    name = step_field(cls, fixed)
    if name is not None and fitted.get(name) != fixed.get(name):
        nfe, vjp = meter.counts(fitted)
        log(
            f"tune {solver}: --fe-cap {fe_cap:g} sets {name} = {fitted[name]} "
            f"({nfe:g} NFE + {vjp:g} VJP per solve, measured)"
        )
    low = {k: p.low for k, p in cls.SEARCH_SPACE.items() if p.kind == "int"}
    cheapest = meter.fe({**fitted, **low})
    if cheapest > fe_cap:
        raise TuneError(
            f"--fe-cap {fe_cap:g}: the cheapest setting of {solver}'s search space costs "
            f"{cheapest:g} forward-equivalents (NFE + VJP) per solve, measured; nothing to try"
        )
    return fitted, meter


__all__ = [
    "FE_CACHE_NAME",
    "STEP_FIELDS",
    "Caps",
    "FeMeter",
    "check_nfe_cap",
    "fe_setup",
    "fit_steps",
    "measure_counts",
    "step_field",
    "suggest_within_cap",
]
