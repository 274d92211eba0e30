"""Every solver runs end to end on the small CPU prior at 32x32 for every operator preset it
supports (docs/design.md §5); unsupported pairings raise SolverSkip with a reason. Step counts are cut to
the minimum that exercises every code path (this checks plumbing and finiteness, not quality)."""

import pytest
import torch
from invbench.bench import bundled
from invbench.operators import conventions as cv

from invbench import operators, priors, solvers

# every registered solver with its declared smoke-test settings (Solver.QUICK); the oracles need
# an analytic prior and are exercised on the Gaussian mixtures instead; names starting with "_" are
# test-only solvers that other test modules register
NETWORK_SOLVERS = sorted(n for n in solvers.names()
                         if not n.startswith("_") and "analytic" not in solvers.get(n).requires)  # "_x": test-only


@pytest.fixture(scope="module")
def prior():
    try:
        return priors.CountingPrior(priors.build("small-cpu"))
    except priors.PriorError as e:  # weights missing: say so rather than pass silently
        pytest.fail(f"small-cpu prior must load from the committed weights: {e}")


@pytest.mark.parametrize("task", operators.PRESETS)
@pytest.mark.parametrize("solver_name", NETWORK_SOLVERS)
def test_solver_runs_on_small_cpu(prior, solver_name, task):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    A = operators.build(task, image_shape=(3, 32, 32), generator=g)
    x = cv.pixel_to_model(bundled.heldout_crops(1, 32, seed=5, split="test"))
    sigma_y = cv.noise_sigma_to_model(0.05)
    y = A.measure(x, sigma_y, g)
    s = solvers.build(solver_name, **solvers.get(solver_name).QUICK)
    prior.reset()
    try:
        x_hat = s.solve(y, A, prior, sigma_y=sigma_y, generator=[torch.Generator().manual_seed(2)])
    except solvers.SolverSkip as e:
        assert str(e), "a skip must carry its reason"
        # only declared capability gaps may skip (e.g. no SVD for deblur_motion, nonlinear
        # phase retrieval for the linear-only solvers), and they skip before any network call
        with pytest.raises(solvers.SolverSkip):
            s.check(A, prior)
        assert prior.nfe == 0
        return
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()
    assert prior.nfe > 0


def test_skips_are_exactly_the_capability_gaps(prior):
    """A solver skips exactly the operators that lack a capability it declares (an SVD for
    ``requires={"svd"}``, linearity for ``{"linear"}``), and runs everywhere else."""
    skipped, expected = set(), set()
    for name in NETWORK_SOLVERS:
        s = solvers.build(name, **solvers.get(name).QUICK)
        for task in operators.PRESETS:
            A = operators.build(task, image_shape=(3, 32, 32), generator=torch.Generator().manual_seed(1))
            try:
                s.check(A, prior)
            except solvers.SolverSkip:
                skipped.add((name, task))
            if s.requirements() - (set(A.capabilities) | set(prior.capabilities)):
                expected.add((name, task))
    assert skipped == expected
    # the operators without an SVD (motion blur) or linearity (phase retrieval) are the gaps
    assert {t for _, t in expected} == {"deblur_motion", "phase_retrieval"}
    assert {n for n, _ in expected} >= {"ddrm", "pigdm", "vml_map", "diffpir"}
