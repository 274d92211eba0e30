"""Timing of one solver step, one denoiser call and one operator call at fixed sizes.

Fixed sizes (change them only together with the saved baselines):
* operators: one image of shape OP_SHAPE = (3, 64, 64), forward and (linear ones) adjoint;
* priors: a batch of DENOISE_BATCH = 4 images at each prior's own shape, sigma = 1 (model units);
* solvers: batch 1 on the GMM prior ``gmm-digits`` (1×8×8) and, when its weights are present,
  ``small-cpu`` (3×32×32); "one step" = from ``solve`` until the first callback (setup included);
  solvers that never call back (closed-form oracles) are timed for their whole solve.

Every benchmark runs once without timing in ``make test`` (``--benchmark-disable``) and is timed
by ``make bench-perf``. Parts that are genuinely absent (a prior whose weights are not on disk, a
solver that does not support any of the operators tried) are skipped with the reason.
"""

from __future__ import annotations

import pytest
import torch
from invbench.solvers.base import SolverSkip

from invbench import operators, priors, solvers

pytestmark = pytest.mark.perf

OP_SHAPE = (3, 64, 64)
DENOISE_BATCH = 4
SOLVER_PRIORS = ("gmm-digits", "small-cpu")
# operators tried, in order, for a solver step (the first one the solver accepts is used)
SOLVER_OPERATORS = ("sr4_avgpool", "inpaint_random", "denoise")
NOISE_SIGMA = 0.025  # pixel units; sigma_y = 2 * noise_sigma


class _OneStep(Exception):
    """Raised from the solver callback to stop after the first step."""


def _prior_names() -> list[str]:
    # test-only parts registered by tests/bench/parts.py start with "_"
    return [n.replace("-*", "-16") for n in priors.names() if not n.startswith("_")]  # gmm-synthetic-* -> a 16-d member


def _build_prior(name: str):
    try:
        return priors.build(name)
    except (priors.PriorError, FileNotFoundError, TypeError) as e:
        pytest.skip(f"prior {name} not available here: {e}")


@pytest.mark.parametrize("preset", operators.PRESETS)
@pytest.mark.parametrize("call", ["forward", "adjoint"])
def test_operator_call(benchmark, preset, call):
    g = torch.Generator().manual_seed(0)
    A = operators.build(preset, image_shape=OP_SHAPE, generator=g)
    x = torch.rand((1, *OP_SHAPE), generator=g, dtype=torch.float32) * 2 - 1
    if call == "forward":
        y = benchmark(A.forward, x)
        assert y.shape == (1, *A.out_shape)
    else:
        if not A.is_linear:
            pytest.skip(f"{preset} is nonlinear: no adjoint")
        y = A.forward(x)
        z = benchmark(A.adjoint, y)
        assert z.shape == x.shape


@pytest.mark.parametrize("name", _prior_names())
def test_denoise_call(benchmark, name):
    p = _build_prior(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((DENOISE_BATCH, *p.image_shape), generator=g)
    sigma = torch.full((DENOISE_BATCH,), 1.0)
    with torch.no_grad():
        d = benchmark(p.denoise, x, sigma)
    assert d.shape == x.shape and torch.isfinite(d).all()


@pytest.mark.parametrize("prior_name", SOLVER_PRIORS)
@pytest.mark.parametrize("solver_name", [n for n in solvers.names() if not n.startswith("_")])
def test_solver_step(benchmark, solver_name, prior_name):
    p = _build_prior(prior_name)
    s = solvers.build(solver_name)
    g = torch.Generator().manual_seed(0)
    A, why = None, []
    for op in SOLVER_OPERATORS:
        cand = operators.build(op, image_shape=p.image_shape, generator=torch.Generator().manual_seed(0))
        try:
            s.check(cand, p)
        except SolverSkip as e:
            why.append(str(e))
            continue
        A = cand
        break
    if A is None:
        pytest.skip(f"{solver_name} runs on none of {SOLVER_OPERATORS} with {prior_name}: {'; '.join(why)}")
    sigma_y = operators.conventions.noise_sigma_to_model(NOISE_SIGMA)
    x = torch.rand((1, *p.image_shape), generator=g) * 2 - 1
    y = A.measure(x, sigma_y, generator=g)

    def stop(step, sigma, xt, x0):
        raise _OneStep

    def one_step():
        try:
            return s.solve(y, A, p, sigma_y=sigma_y, generator=torch.Generator().manual_seed(1), callback=stop)
        except _OneStep:
            return None

    out = benchmark(one_step)
    if out is not None:  # a solver without steps returned its full solution
        assert out.shape == x.shape and torch.isfinite(out).all()
