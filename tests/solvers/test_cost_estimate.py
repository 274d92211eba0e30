"""The harness's cost of a solve before running it (``run.nfe_per_image``: a solver's
``nfe_estimate`` or its step counts) equals the network evaluations the solve makes. The tuner's
NFE cap and the grid's cost estimate rely on it."""

from __future__ import annotations

import pytest
import torch
from invbench.bench.run import nfe_per_image

from invbench import operators, priors, solvers
from tests.helpers.baselines import gaussian_prior, gens

NAMES = list(solvers.NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_estimated_nfe_is_the_counted_nfe(name):
    cls = solvers.get(name)
    P = priors.CountingPrior(gaussian_prior((1, 8, 8), seed=4, scale=0.1))
    A = operators.build("inpaint_random", (1, 8, 8), torch.Generator().manual_seed(0))
    y = A.measure(P.sample(1, generator=torch.Generator().manual_seed(1)), 0.05, torch.Generator().manual_seed(2))
    s = cls.from_preset("default", **cls.QUICK)
    P.reset()
    s.solve(y, A, P, sigma_y=0.05, generator=gens(1))
    assert nfe_per_image(s) == P.nfe, (name, nfe_per_image(s), P.nfe)
