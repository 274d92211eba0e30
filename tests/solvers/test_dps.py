"""DPS: cost formula, per-image guidance, learned-variance plumbing, presets, nonlinear operators."""

from __future__ import annotations

import pytest
import torch
from invbench.priors import CountingPrior
from invbench.solvers import SolverDiverged
from invbench.solvers.dps import DPS

from invbench import operators, solvers
from tests.helpers.baselines import NaNPrior, gaussian_prior, gens

SHAPE = (1, 4, 4)


def _inpaint():
    return operators.build("inpaint_random", SHAPE, torch.Generator().manual_seed(0))


class _LearnedVarPrior(CountingPrior):
    """Adds a constant learned-variance output ``v`` to a prior (``learned_variance`` capability)."""

    def __init__(self, prior, v: float):
        super().__init__(prior)
        self.v = v

    @property
    def capabilities(self):
        return self.inner.capabilities | {"learned_variance"}

    def denoise_with_variance(self, x, sigma):
        self.nfe += 1
        d = self._count_vjp(self.inner.denoise(x, sigma))
        return d, torch.full_like(x, self.v)


def test_nfe_vjp_formula_full_grid():
    """1000 ancestral steps on the DDPM grid: NFE = VJP = 1000."""
    P, A = CountingPrior(gaussian_prior(SHAPE)), _inpaint()
    y = A.forward(torch.zeros(1, *SHAPE, dtype=torch.float64))
    out = solvers.build("dps", preset="paper-inpaint").solve(y, A, P, sigma_y=0.05, generator=gens(1))
    assert (P.nfe, P.vjp) == (1000, 1000)
    assert torch.isfinite(out).all()


def test_per_image_guidance_batch_invariance():
    """The residual norm (hence ζ_t) is per image: a batch equals its items solved alone."""
    P, A = gaussian_prior(SHAPE, seed=2), _inpaint()
    y = A.measure(P.sample(3, generator=torch.Generator().manual_seed(2)), 0.05, torch.Generator().manual_seed(0))
    S = solvers.build("dps", steps=100, zeta=0.5)
    full = S.solve(y, A, P, sigma_y=0.05, generator=gens(3))
    for i in range(3):
        one = S.solve(y[i : i + 1], A, P, sigma_y=0.05, generator=gens(1, offset=i))
        torch.testing.assert_close(full[i : i + 1], one, rtol=0, atol=1e-10)


def test_learned_variance_endpoints():
    """learned range with v = −1 is the fixed posterior variance β̃ (identical samples); with
    v = +1 it is β > β̃, so samples differ."""
    base, A = gaussian_prior(SHAPE, seed=2), _inpaint()
    y = A.forward(base.sample(2, generator=torch.Generator().manual_seed(0)))
    S = solvers.build("dps", steps=50, zeta=0.3)
    fixed = S.solve(y, A, base, sigma_y=0.0, generator=gens(2))
    lo = _LearnedVarPrior(base, -1.0)
    learned_lo = S.solve(y, A, lo, sigma_y=0.0, generator=gens(2))
    torch.testing.assert_close(learned_lo, fixed, rtol=0, atol=1e-10)
    assert (lo.nfe, lo.vjp) == (50, 50)
    hi = S.solve(y, A, _LearnedVarPrior(base, 1.0), sigma_y=0.0, generator=gens(2))
    assert (hi - fixed).abs().max() > 1e-3
    forced_fixed = solvers.build("dps", steps=50, zeta=0.3, variance="fixed")
    torch.testing.assert_close(forced_fixed.solve(y, A, _LearnedVarPrior(base, 1.0), sigma_y=0.0, generator=gens(2)),
                               fixed)


def test_guidance_pulls_towards_data():
    """DPS is approximate; but with the released inpainting ζ its sample mean is much closer to
    the exact posterior mean than the prior mean or unguided sampling (ζ = 0)."""
    P, A = gaussian_prior(SHAPE, seed=1, scale=0.07), _inpaint()
    x = P.sample(1, generator=torch.Generator().manual_seed(5))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(3))
    m = P.posterior(A, y, 0.05).mean().reshape(-1)
    R = 64
    errs = {}
    for zeta in (0.0, 0.5):
        out = solvers.build("dps", steps=200, zeta=zeta).solve(y.expand(R, -1).clone(), A, P, sigma_y=0.05,
                                                               generator=gens(R))
        errs[zeta] = float((out.reshape(R, -1).mean(0) - m).norm())
    assert errs[0.5] < 0.5 * errs[0.0]
    assert errs[0.5] < 0.5 * float((P.means[0] - m).norm())


def test_nonlinear_phase_retrieval_runs():
    shape = (1, 8, 8)
    P = CountingPrior(gaussian_prior(shape, seed=0, scale=0.05))
    A = operators.build("phase_retrieval", shape)
    x = P.inner.sample(2, generator=torch.Generator().manual_seed(0))
    y = A.measure(x, 0.05, torch.Generator().manual_seed(1))
    S = solvers.build("dps", preset=DPS.preset_for_task("phase_retrieval"), steps=40)
    out = S.solve(y, A, P, sigma_y=0.05, generator=gens(2))
    assert out.shape == (2, *shape) and torch.isfinite(out).all()
    assert (P.nfe, P.vjp) == (40, 40)


def test_presets_and_task_mapping():
    assert DPS.preset_for_task("inpaint_box") == "paper-inpaint"
    assert DPS.preset_for_task("inpaint_random") == "paper-inpaint"
    assert DPS.preset_for_task("sr4_bicubic") == "paper-sr"
    assert DPS.preset_for_task("deblur_motion") == "paper-deblur"
    assert DPS.preset_for_task("phase_retrieval") == "paper-phase"
    assert DPS.preset_for_task("colorize") == "default"
    want = {"paper-sr": 0.3, "paper-deblur": 0.3, "paper-inpaint": 0.5, "paper-phase": 1.0}
    for name, zeta in want.items():
        assert solvers.build("dps", preset=name).params.zeta == zeta
        assert "diffusion-posterior-sampling" in DPS.PRESETS[name].provenance


def test_diverged():
    A = _inpaint()
    with pytest.raises(SolverDiverged):
        solvers.build("dps", steps=10).solve(torch.zeros(1, *A.out_shape, dtype=torch.float64), A, NaNPrior(SHAPE),
                                             sigma_y=0.0)


def test_per_task_presets_follow_the_declared_family_not_the_name(monkeypatch):
    """DPS and DiffPIR pick their released per-task preset from the operator's declared task
    family: a deblurring preset whose name starts with ``sr`` gets the deblurring setting."""
    from invbench.operators import registry
    from invbench.solvers.diffpir import DiffPIR
    from invbench.solvers.dps import DPS

    assert DPS.preset_for_task("sr4_bicubic") == "paper-sr" and DPS.preset_for_task("deblur_gauss") == "paper-deblur"
    assert DPS.preset_for_task("denoise") == "default" and DPS.preset_for_task("colorize") == "default"
    monkeypatch.setitem(registry._FAMILIES, "sr2_blurry", "deblurring")
    assert DPS.preset_for_task("sr2_blurry") == "paper-deblur"
    assert DiffPIR.preset_for_task("sr2_blurry") == "default"          # DiffPIR's deblurring setting
    monkeypatch.setitem(registry._FAMILIES, "deblur_as_inpaint", "inpainting")
    assert DPS.preset_for_task("deblur_as_inpaint") == "paper-inpaint"
