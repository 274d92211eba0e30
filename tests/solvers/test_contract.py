"""The solver contract, for every registered solver (docs/design.md §5, docs/adding-a-solver.md):
a solver holds its algorithm box only (``_solve``; ``Solver.solve`` does the prologue), and its
hyperparameters declare their valid values, which building the solver enforces."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from invbench.solvers.base import ParamTypeError, Solver
from invbench.solvers.params import Spec

from invbench import operators, priors, solvers
from tests.helpers.baselines import gaussian_prior, gens

NAMES = solvers.NAMES
SHAPE = (1, 4, 4)


def _bad_values(params, name: str, spec: Spec) -> list:
    """Values that break ``spec`` of field ``name`` (one per declared rule)."""
    out = []
    for key, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        bound = getattr(spec, key)
        if bound is None:
            continue
        b = getattr(params, bound) if isinstance(bound, str) else bound
        value = b + step * max(1.0, abs(b)) * (0.5 if isinstance(b, float) else 1)
        out.append(type(getattr(params, name))(value))
    if spec.one_of:
        out.append("not-" + "-".join(map(str, spec.one_of)))
    if spec.increasing:
        out.append(tuple(reversed(getattr(params, name))))
    if isinstance(getattr(params, name), float) and any(
            getattr(spec, k) is not None for k in ("ge", "gt", "le", "lt")):
        out.append(float("nan"))
    return out


def _declared(cls) -> list[tuple[str, Spec]]:
    return [(f.name, f.metadata["invbench_spec"]) for f in dataclasses.fields(cls.Params)
            if "invbench_spec" in f.metadata]


@pytest.mark.parametrize("name", NAMES)
def test_solve_is_the_template_and_the_loop_is_the_solvers(name):
    """``solve`` is the base class's (the prologue lives there once); the solver writes
    ``_solve`` only."""
    cls = solvers.get(name)
    assert cls.solve is Solver.solve, f"{name} overrides solve: move its prologue to the base"
    assert any("_solve" in vars(k) for k in cls.__mro__[:-1] if k is not Solver), name


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_rule_rejects_a_bad_value_naming_the_field(name):
    cls = solvers.get(name)
    defaults = cls.Params()
    for field, spec in _declared(cls):
        for bad in _bad_values(defaults, field, spec):
            with pytest.raises(solvers.SolverError, match=rf"^{name}: {field} must be"):
                solvers.build(name, **{field: bad})


def test_the_declared_rules_are_the_ones_documented():
    """Spot checks of the wording and of the rules of the solvers that declare most."""
    with pytest.raises(solvers.SolverError,
                       match=r"^daps: mcmc_steps must be an integer >= 1, got 0$"):
        solvers.build("daps", mcmc_steps=0)
    with pytest.raises(solvers.SolverError,
                       match=r"^lmaps: lr must be in \(0\.0, 2\.0\), got 2\.0$"):
        solvers.build("lmaps", lr=2.0)
    with pytest.raises(solvers.SolverError, match=r"sigma_max must be > sigma_min \(200\.0\)"):
        solvers.build("daps", sigma_min=200.0)
    assert solvers.build("vml_map", sigma_min=0.5, sigma_max=0.5).params.sigma_max == 0.5  # >=
    assert solvers.build("vml_map", inner_steps=0).params.inner_steps == 0
    assert solvers.build("dps", clip_range=[-3, 1]).params.clip_range == (-3.0, 1.0)  # TOML list
    with pytest.raises(ParamTypeError, match="an integer"):
        solvers.build("daps", anneal_steps=2.5)


@pytest.fixture(scope="module")
def problem():
    A = operators.build("inpaint_random", SHAPE, torch.Generator().manual_seed(0))
    P = priors.CountingPrior(gaussian_prior(SHAPE, seed=1))
    x = P.sample(2, generator=torch.Generator().manual_seed(5))
    return A, P, A.measure(x, 0.05, generator=torch.Generator().manual_seed(6))


@pytest.mark.parametrize("name", NAMES)
def test_the_prologue_refuses_bad_calls_before_any_network_call(name, problem):
    A, P, y = problem
    s = solvers.build(name, **solvers.get(name).QUICK)
    bad_calls = {
        "sigma_y": {"y": y, "sigma_y": -0.1, "generator": gens(2)},
        "sigma_y ": {"y": y, "sigma_y": math.nan, "generator": gens(2)},
        "has shape": {"y": y.reshape(2, -1)[:, :-1], "sigma_y": 0.05, "generator": gens(2)},
        "generators": {"y": y, "sigma_y": 0.05, "generator": gens(3)},
    }
    P.reset()
    for words, kw in bad_calls.items():
        with pytest.raises(solvers.SolverError, match=words.strip()):
            s.solve(kw.pop("y"), A, P, **kw)
    assert P.nfe == 0
    x = s.solve(y, A, P, sigma_y=0.05, generator=gens(2))     # the same solver, called well
    assert x.shape == (2, *SHAPE) and torch.isfinite(x).all()


@pytest.mark.parametrize("name", NAMES)
def test_unmet_requirements_skip_before_any_network_call(name, problem):
    """``requirements()`` (``requires`` plus what the parameters add) decides the skip."""
    _, P, _ = problem
    A = operators.build("phase_retrieval", SHAPE, torch.Generator().manual_seed(0))
    s = solvers.build(name, **solvers.get(name).QUICK)
    y = A.forward(torch.zeros(1, *SHAPE, dtype=torch.float64))
    missing = s.requirements() - (set(A.capabilities) | set(P.capabilities))
    P.reset()
    if missing:
        with pytest.raises(solvers.SolverSkip, match=min(missing)):
            s.solve(y, A, P, sigma_y=0.05, generator=gens(1))
        assert P.nfe == 0
    assert s.requirements() >= solvers.get(name).requires


def test_parameter_dependent_requirements():
    assert solvers.build("vml_map").requirements() == {"linear", "grad", "svd"}
    assert solvers.build("vml_map", preconditioner="scalar").requirements() == {"linear", "grad"}
    assert "analytic" in solvers.build("vml_map", preset="full").requirements()
    assert solvers.build("lmaps").requirements() == {"grad"}
    assert solvers.build("lmaps", inner="exact").requirements() == {"grad", "svd"}


@pytest.mark.parametrize("name", NAMES)
def test_validate_builds_the_levels_before_any_run(name, problem):
    """``validate(prior)`` (run by the harness before anything is written) builds ``levels``:
    what a solve would run on, so a schedule that cannot fit the prior fails there."""
    _, P, _ = problem
    s = solvers.build(name, **solvers.get(name).QUICK)
    s.validate(P)
    levels = s.levels(P)
    if levels is not None:
        levels = [float(v) for v in levels]
        assert levels and all(v >= 0 for v in levels), name


def test_a_schedule_that_does_not_fit_the_prior_fails_validation():
    P = gaussian_prior(SHAPE)
    for name in ("dps", "ddrm", "pigdm", "reddiff", "diffpir"):
        with pytest.raises(solvers.SolverError, match="steps must be an integer in"):
            solvers.build(name, steps=5000).validate(P)
