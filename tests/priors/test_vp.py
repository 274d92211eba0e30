"""VP adapter: sigma grid vs the beta schedule, D vs its definition, Gaussian exactness."""

import numpy as np
import pytest
import torch
from invbench.priors import CountingPrior
from invbench.priors.vp import VPPrior
from torch import nn


class _ToyEps(nn.Module):
    """A nonlinear, t-dependent float64 'ε network' (fixed random weights)."""

    def __init__(self, out_ch: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(out_ch, 3, 3, 3, generator=g, dtype=torch.float64) * 0.3)
        self.calls = []

    def forward(self, x, t):
        self.calls.append(t.clone())
        h = torch.nn.functional.conv2d(x, self.w, padding=1)
        return torch.tanh(h) * (1.0 + t.view(-1, 1, 1, 1) / 1000.0) + 0.01 * t.view(-1, 1, 1, 1).sin()


def test_sigma_grid_matches_linear_beta_schedule():
    p = VPPrior(_ToyEps(), (3, 4, 4))
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1.0 - betas)
    want = np.sqrt((1.0 - abar) / abar)
    np.testing.assert_allclose(p.betas.numpy(), betas, rtol=1e-12)
    np.testing.assert_allclose(p.alpha_bars.numpy(), abar, rtol=1e-12)
    np.testing.assert_allclose(p.sigmas.numpy(), want, rtol=1e-10)
    assert torch.all(p.sigmas[1:] > p.sigmas[:-1])
    assert p.sigma_min == pytest.approx(want[0]) and p.sigma_max == pytest.approx(want[-1])
    assert p.sigma_min == pytest.approx(np.sqrt(1e-4 / (1 - 1e-4)))
    assert "discrete" in p.capabilities and "learned_variance" not in p.capabilities


def test_timestep_of_grid_is_integer_and_interpolates_monotonically():
    p = VPPrior(_ToyEps(), (3, 4, 4))
    t = p.timestep_of(p.sigmas)
    torch.testing.assert_close(t, torch.arange(1000, dtype=torch.float64), rtol=0, atol=1e-9)
    mid = (p.sigmas[:-1] * p.sigmas[1:]).sqrt()  # geometric midpoint -> t + 1/2 in log-sigma interp
    torch.testing.assert_close(p.timestep_of(mid), torch.arange(999, dtype=torch.float64) + 0.5,
                               rtol=0, atol=1e-9)
    assert float(p.timestep_of(1e-5)) == 0.0 and float(p.timestep_of(1e4)) == 999.0


@pytest.mark.parametrize("t", [0, 1, 37, 500, 999])
def test_denoise_equals_definition_at_training_timesteps(t):
    net = _ToyEps()
    p = VPPrior(net, (3, 5, 6))
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64) * 3
    sigma = float(p.sigmas[t])
    # definition, written out independently of the adapter: alpha_bar from the betas
    abar = float(np.prod(1.0 - np.linspace(1e-4, 0.02, 1000)[: t + 1]))
    x_t = np.sqrt(abar) * x  # = x / sqrt(1 + sigma^2)
    with torch.no_grad():
        eps = net(x_t, torch.full((2,), float(t), dtype=torch.float64))
        want = x - sigma * eps
        got = p.denoise(x, sigma)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert torch.all(net.calls[-1] == t)  # the network saw exactly the integer timestep


def test_exact_eps_of_gaussian_data_gives_gaussian_posterior_mean():
    """x0 ~ N(0, I): the exact ε-predictor is E[ε|x_t] = sqrt(1-ᾱ_t) x_t, and the exact VE
    denoiser is D = x / (1 + sigma^2). Through the adapter the former must give the latter."""
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)

    def eps_star(x_t, t):
        return (1 - abar[t.long()]).sqrt().view(-1, 1, 1, 1) * x_t

    p = VPPrior(eps_star, (3, 4, 4))
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    ts = torch.tensor([0, 10, 300, 999])
    s = p.sigmas[ts]
    torch.testing.assert_close(p.denoise(x, s), x / (1 + s.view(-1, 1, 1, 1) ** 2), rtol=1e-10, atol=1e-12)


def test_learned_variance_channels_and_counting():
    net = _ToyEps(out_ch=6)
    p = VPPrior(net, (3, 4, 4), learned_variance=True)
    assert "learned_variance" in p.capabilities
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    s = float(p.sigmas[123])
    with torch.no_grad():
        raw = net(x / (1 + s**2) ** 0.5, torch.full((2,), 123.0, dtype=torch.float64))
    d, v = p.denoise_with_variance(x, s)
    torch.testing.assert_close(d, x - s * raw[:, :3])
    torch.testing.assert_close(v, raw[:, 3:])
    torch.testing.assert_close(p.denoise(x, s), d)
    c = CountingPrior(p)
    c.denoise(x, s)
    c.denoise_with_variance(x, s)
    assert c.nfe == 2
    with pytest.raises(NotImplementedError):
        VPPrior(_ToyEps(), (3, 4, 4)).denoise_with_variance(x, s)
