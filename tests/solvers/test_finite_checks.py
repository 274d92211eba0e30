"""Divergence checks without a host sync per step (solvers/base.py ``deferred_finite_checks``).

On CPU the checks run at once (there is no device to wait for); the deferred mode is exercised
here with ``defer_cpu=True``: the same outputs, the same ``SolverDiverged`` label as the
immediate check, verdicts read every ``every`` checks, and an error raised by the NaNs
themselves reported as the divergence. On CUDA the sync count of a whole solve is measured.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from invbench.priors import Prior
from invbench.solvers import SolverDiverged
from invbench.solvers.base import check_finite, deferred_finite_checks

from invbench import operators, solvers
from tests.helpers.baselines import gaussian_prior, gens

SHAPE = (1, 4, 4)
ALL = [("dps", {"steps": 12}), ("ddrm", {"steps": 12}), ("pigdm", {"steps": 12}),
       ("vml_map", {"n_levels": 4, "inner_steps": 3})]


class LateNaNPrior(Prior):
    """The Gaussian prior until the ``k``-th denoiser call, NaN from then on."""

    def __init__(self, base, k: int):
        self.base, self.k, self.calls = base, k, 0
        self.image_shape, self.sigma_min, self.sigma_max = base.image_shape, base.sigma_min, base.sigma_max

    @property
    def sigmas(self):
        return self.base.sigmas

    def denoise(self, x, sigma):
        self.calls += 1
        d = self.base.denoise(x, sigma)
        return d * float("nan") if self.calls >= self.k else d


def _problem():
    A = operators.build("inpaint_random", SHAPE, torch.Generator().manual_seed(0))
    P = gaussian_prior(SHAPE, seed=1)
    x = P.sample(2, generator=torch.Generator().manual_seed(5))
    y = A.measure(x, 0.05, generator=torch.Generator().manual_seed(6))
    return A, P, y


def _solve(name, ov, A, P, y, *, defer: bool, every: int = 64):
    s = solvers.build(name, **ov)
    if not defer:
        return s.solve(y, A, P, sigma_y=0.05, generator=gens(2))
    with deferred_finite_checks(every=every, defer_cpu=True):
        return s.solve(y, A, P, sigma_y=0.05, generator=gens(2))  # the caller's context holds


@pytest.mark.parametrize(("name", "ov"), ALL)
def test_deferred_checks_same_output_and_same_label(name, ov):
    A, P, y = _problem()
    assert torch.equal(_solve(name, ov, A, P, y, defer=False), _solve(name, ov, A, P, y, defer=True))
    labels = []
    for defer, every in ((False, 64), (True, 64), (True, 3)):
        with pytest.raises(SolverDiverged) as e:
            _solve(name, ov, A, LateNaNPrior(P, 5), y, defer=defer, every=every)
        labels.append(str(e.value))
    assert labels[0] == labels[1] == labels[2] and "non-finite values in" in labels[0]


def test_verdicts_read_at_the_4th_check():
    ok, nan = torch.ones(3), torch.full((3,), float("nan"))
    seen = []
    with pytest.raises(SolverDiverged, match="bad 1"), deferred_finite_checks(every=4, defer_cpu=True):
        check_finite(ok, "ok 0")
        check_finite(nan, "bad 1")
        seen.append("after bad 1")          # deferred: execution goes on ...
        check_finite(nan, "bad 2")
        seen.append("after bad 2")
        check_finite(ok, "ok 3")            # ... until the 4th check reads all four
        seen.append("after ok 3")           # pragma: no cover
    assert seen == ["after bad 1", "after bad 2"]


def test_leaving_the_context_reads_the_rest():
    with pytest.raises(SolverDiverged, match="bad"), deferred_finite_checks(every=100, defer_cpu=True):
        check_finite(torch.tensor([float("inf")]), "bad")


def test_an_error_caused_by_the_nans_is_reported_as_the_divergence():
    with pytest.raises(SolverDiverged, match="state 7") as e, deferred_finite_checks(every=100, defer_cpu=True):
        check_finite(torch.tensor([float("nan")]), "state 7")
        raise RuntimeError("linalg: input contains NaN")
    assert isinstance(e.value.__context__, RuntimeError)


def test_an_unrelated_error_passes_through():
    with pytest.raises(KeyError), deferred_finite_checks(every=100, defer_cpu=True):
        check_finite(torch.ones(2), "fine")
        raise KeyError("x")


def test_cpu_checks_stay_immediate_in_the_solvers():
    with pytest.raises(SolverDiverged, match="first"), deferred_finite_checks():
        check_finite(torch.tensor([float("nan")]), "first")
        raise AssertionError("not reached")  # pragma: no cover


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA: no GPU here")
@pytest.mark.parametrize(("name", "ov"), ALL)
def test_cuda_solve_syncs_far_less_than_once_per_step(name, ov):
    """A whole solve on the small CPU prior (moved to the GPU) with generators on the GPU: the
    host waits for the device at most a few times (checks are read every 64), not every step."""
    from invbench import priors

    try:
        P = priors.build("small-cpu")
    except (priors.PriorError, FileNotFoundError) as e:
        pytest.skip(f"small-cpu weights: {e}")
    dev = torch.device("cuda")
    P = P.to(device=dev)
    A = operators.build("inpaint_random", (3, 32, 32), torch.Generator().manual_seed(0))
    A.to(device=dev)
    x = torch.zeros(2, 3, 32, 32, device=dev)
    y = A.measure(x, 0.1, generator=torch.Generator(device=dev).manual_seed(1))
    s = solvers.build(name, **ov)
    g = [torch.Generator(device=dev).manual_seed(i) for i in range(2)]
    s.solve(y, A, P, sigma_y=0.1, generator=g)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s.solve(y, A, P, sigma_y=0.1, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    msgs = [str(x.message) for x in w if "synchroniz" in str(x.message)]
    assert len(msgs) <= 4, [m[:160] for m in msgs[:6]]
