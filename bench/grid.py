"""The grid: cells = solver × preset × task × dataset × prior, ordered cheap first.

A *cell* is one (solver entry, resolved preset, task, dataset, prior) combination; a *row* of the
store is cell × image × seed. Pairing rules:

* a prior pairs with the datasets it lists (``priors[i].datasets``), or, when it lists none, with
  every dataset of the same image shape;
* a solver entry runs on the tasks/priors it lists (default all);
* the preset of a (solver, task) pair is ``task_presets[task]`` if given, else ``preset`` when it is
  one of the solver's presets, else — when ``preset`` is ``"per_task"`` or ``"paper"`` and the solver
  class defines ``preset_for_task(operator_name)`` — that method's answer.

Cells are sorted by an estimated cost (images × pixels × solver steps × prior weight; analytic
priors weigh 1, networks 50) so cheap cells finish first and a partial run already has every
solver on the cheap tasks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .config import ConfigError, Experiment, SolverSpec, TaskSpec

__all__ = ["Cell", "expand", "resolve_preset", "steps_hint"]


@dataclass(frozen=True)
class Cell:
    solver: str            # solver label (store column ``solver``)
    solver_name: str       # registry name
    preset: str            # resolved preset
    overrides: tuple       # sorted (key, value) pairs of hyperparameter overrides
    task: TaskSpec
    dataset: str
    prior: str             # prior label
    cost: float = 0.0
    entry: int = -1        # index of its [[solvers]] entry (entries may share a label on disjoint tasks)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.solver, self.preset, self.task.name, self.dataset, self.prior)

    def label(self) -> str:
        return f"{self.solver}[{self.preset}] {self.task.name} {self.dataset} {self.prior}"


def resolve_preset(spec: SolverSpec, task: TaskSpec, index: int | None = None) -> str:
    """The preset of solver entry ``spec`` on ``task`` (see module docstring)."""
    from invbench import solvers

    where = f"solvers[{index}]" if index is not None else f"solver {spec.label!r}"
    try:
        cls = solvers.get(spec.name)
    except solvers.SolverError as e:
        raise ConfigError(f"{where}.name: {e}") from None
    if task.name in spec.task_presets:
        p = spec.task_presets[task.name]
        if p not in cls.PRESETS:
            raise ConfigError(f"{where}.task_presets.{task.name}: unknown preset {p!r} for solver {spec.name!r}; "
                              f"valid: {', '.join(sorted(cls.PRESETS))}")
        return p
    if spec.preset in cls.PRESETS:
        return spec.preset
    per_task = getattr(cls, "preset_for_task", None)
    if spec.preset in ("per_task", "paper") and callable(per_task):
        p = per_task(task.operator)
        if p not in cls.PRESETS:
            raise ConfigError(f"{where}.preset: solver {spec.name!r} has no preset for operator {task.operator!r}")
        return p
    raise ConfigError(f"{where}.preset: unknown preset {spec.preset!r} for solver {spec.name!r}; "
                      f"valid: {', '.join(sorted(cls.PRESETS))}")


def steps_hint(solver) -> float:
    """Rough number of network evaluations per image: the product of the integer hyperparameters
    whose names mention steps/levels/iterations (1 when none, e.g. the oracles)."""
    params = getattr(solver, "params", None)
    if params is None or not dataclasses.is_dataclass(params):
        return 1.0
    n = 1.0
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0 and any(
            w in f.name.lower() for w in ("step", "level", "iter", "inner")
        ):
            n *= v
    return n


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(int(v)) for v in shape)


def _why_empty(exp: Experiment, dataset_shapes: dict[str, tuple[int, ...]],
               prior_shapes: dict[str, tuple[int, ...]]) -> str:
    """One line naming why no cell pairs up: a prior whose image shape no dataset has, or solvers
    restricted (``tasks`` / ``priors``) to names that leave nothing."""
    given = ", ".join(f"{d.name!r} gives {_shape(dataset_shapes[d.name])}" for d in exp.datasets)
    unmatched = [p for p in exp.priors if p.datasets is None
                 and not any(tuple(dataset_shapes[d.name]) == tuple(prior_shapes[p.label]) for d in exp.datasets)]
    if unmatched and len(unmatched) == len(exp.priors):
        takes = "; ".join(f"prior {p.label!r} takes {_shape(prior_shapes[p.label])}" for p in unmatched)
        return f"{takes}, but dataset {given}: no dataset has a prior's image shape (channels×height×width)"
    return ("no (solver, task, prior, dataset) combination pairs up: check solvers[].tasks / solvers[].priors "
            f"and priors[].datasets (dataset {given})")


def expand(
    exp: Experiment,
    dataset_shapes: dict[str, tuple[int, ...]],
    dataset_sizes: dict[str, int],
    prior_shapes: dict[str, tuple[int, ...]],
    prior_analytic: dict[str, bool],
    solver_cost: dict[tuple[str, str], float] | None = None,
) -> list[Cell]:
    """All cells of ``exp`` in execution order (cheapest first, ties broken by the cell key).

    ``solver_cost[(entry, preset)]`` is :func:`steps_hint` of the built solver of ``[[solvers]]``
    entry ``entry`` (1 when absent).
    """
    cells = []
    for si, s in enumerate(exp.solvers):
        for t in exp.tasks:
            if s.tasks is not None and t.name not in s.tasks:
                continue
            preset = resolve_preset(s, t, si)
            for p in exp.priors:
                if s.priors is not None and p.label not in s.priors:
                    continue
                dsets = p.datasets if p.datasets is not None else [
                    d.name for d in exp.datasets if tuple(dataset_shapes[d.name]) == tuple(prior_shapes[p.label])
                ]
                for dn in dsets:
                    numel = math.prod(dataset_shapes[dn])
                    steps = (solver_cost or {}).get((si, preset), 1.0)
                    weight = 1.0 if prior_analytic.get(p.label, False) else 50.0
                    cost = dataset_sizes[dn] * len(exp.seeds) * numel * steps * weight
                    cells.append(Cell(s.label, s.name, preset, tuple(sorted(s.overrides.items())), t, dn, p.label,
                                      cost, si))
    if not cells:
        raise ConfigError("the grid is empty: " + _why_empty(exp, dataset_shapes, prior_shapes))
    cells.sort(key=lambda c: (c.cost, c.key))
    return cells
