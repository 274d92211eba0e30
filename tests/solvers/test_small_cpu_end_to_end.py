"""Every solver runs end to end on the small CPU prior at 32x32 for every operator preset it
supports (docs/design.md §5); unsupported pairings raise SolverSkip with a reason. Step counts are cut to
the minimum that exercises every code path (this checks plumbing and finiteness, not quality)."""

import pytest
import torch
from invbench.bench import bundled
from invbench.operators import conventions as cv

from invbench import operators, priors, solvers

FEW_STEPS = {
    "vml_map": {"n_levels": 3, "inner_steps": 1},
    "dps": {"steps": 5},
    "ddrm": {"steps": 4},
    "pigdm": {"steps": 4},
}


@pytest.fixture(scope="module")
def prior():
    try:
        return priors.CountingPrior(priors.build("small-cpu"))
    except priors.PriorError as e:  # weights missing: say so rather than pass silently
        pytest.fail(f"small-cpu prior must load from the committed weights: {e}")


@pytest.mark.parametrize("task", operators.PRESETS)
@pytest.mark.parametrize("solver_name", sorted(FEW_STEPS))
def test_solver_runs_on_small_cpu(prior, solver_name, task):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    A = operators.build(task, image_shape=(3, 32, 32), generator=g)
    x = cv.pixel_to_model(bundled.heldout_crops(1, 32, seed=5, split="test"))
    sigma_y = cv.noise_sigma_to_model(0.05)
    y = A.measure(x, sigma_y, g)
    s = solvers.build(solver_name, **FEW_STEPS[solver_name])
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
    skipped = set()
    for name, steps in FEW_STEPS.items():
        s = solvers.build(name, **steps)
        for task in operators.PRESETS:
            A = operators.build(task, image_shape=(3, 32, 32), generator=torch.Generator().manual_seed(1))
            try:
                s.check(A, prior)
            except solvers.SolverSkip:
                skipped.add((name, task))
    assert skipped == {
        ("ddrm", "deblur_motion"), ("ddrm", "phase_retrieval"),
        ("pigdm", "deblur_motion"), ("pigdm", "phase_retrieval"),
        ("vml_map", "deblur_motion"), ("vml_map", "phase_retrieval"),
    }
