"""VP adapter (docs/design.md §2): an ε-prediction network trained on a discrete beta schedule as a
variance-exploding denoiser ``D(x, sigma)``.

For the DDPM linear schedule ``beta_t = linspace(1e-4, 0.02, T=1000)``, ``ᾱ_t = prod_{s<=t}(1-beta_s)``
and the VP noisy image ``x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε`` equals ``x / sqrt(1 + sigma_t**2)`` for
the VE image ``x = x0 + sigma_t ε`` with ``sigma_t = sqrt((1-ᾱ_t)/ᾱ_t)``. Hence

    D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma**2), t(sigma)).

``t(sigma)`` (:meth:`VPPrior.timestep_of`): exact integer ``t`` at grid points ``sigmas[t]``; between
grid points, **linear interpolation in log sigma** (log sigma_t is smooth in t, sigma_t spans
0.01..157); outside ``[sigma_min, sigma_max]`` t is clamped to 0 or T-1 (the network then sees its
boundary timestep while the formula above still uses the true sigma). The network is always called
with a float ``(B,)`` tensor of timesteps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .base import Prior, as_sigma


def linear_betas(beta_start: float = 1e-4, beta_end: float = 0.02, T: int = 1000) -> Tensor:
    """DDPM linear beta schedule, float64, shape (T,)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


class VPPrior(Prior):
    """Wraps ``net(x_t, t) -> eps`` (3 channels, or 6 with learned variance) as a VE denoiser.

    Parameters
    ----------
    net: module called as ``net(x_t, t)``, ``x_t`` model-space VP input, ``t`` float (B,) timesteps.
    image_shape: ``(C, H, W)``.
    betas: training beta schedule (default linear 1e-4..0.02, T=1000).
    learned_variance: the net outputs ``2C`` channels; the last C (guided-diffusion
        ``model_var_values`` in [-1, 1]) are returned by :meth:`denoise_with_variance`.
    """

    def __init__(
        self,
        net: nn.Module | Callable[[Tensor, Tensor], Tensor],
        image_shape: tuple[int, int, int],
        betas: Tensor | None = None,
        learned_variance: bool = False,
    ):
        self.net = net
        self.image_shape = tuple(image_shape)
        self.betas = (linear_betas() if betas is None else torch.as_tensor(betas)).double()
        self.alpha_bars = torch.cumprod(1.0 - self.betas, 0)
        self.sigmas = ((1.0 - self.alpha_bars) / self.alpha_bars).sqrt()
        self._log_sigmas = self.sigmas.log()
        self._grid_cache: dict[torch.device, Tensor] = {}  # _log_sigmas per device (timestep_of)
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])
        self.learned_variance = learned_variance

    def networks(self) -> list[nn.Module]:
        """The network ``D`` wraps (``[]`` when it is a plain function)."""
        return [self.net] if isinstance(self.net, nn.Module) else []

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"discrete"}
        if self.learned_variance:
            caps.add("learned_variance")
        return frozenset(caps)

    def timestep_of(self, sigma) -> Tensor:
        """Continuous timestep for model-space ``sigma`` (float or tensor), float64, same shape.

        Linear interpolation of ``log sigma`` on the grid; exact integers at grid points;
        clamped to ``[0, T-1]``.
        """
        s = (torch.tensor(float(sigma), dtype=torch.float64) if isinstance(sigma, (int, float))
             else torch.as_tensor(sigma))
        grid = self._log_sigma_grid(s.device)  # computed where sigma lives: no host-device sync
        ls = s.to(grid.dtype).clamp(min=self.sigma_min, max=self.sigma_max).log()
        i = torch.searchsorted(grid, ls, right=True).clamp(1, self.T - 1)
        lo, hi = grid[i - 1], grid[i]
        t = (i - 1).to(grid.dtype) + (ls - lo) / (hi - lo)
        # exact grid hits (within float64 rounding of log) map to the integer timestep
        return t.clamp(0, self.T - 1)

    def _log_sigma_grid(self, device: torch.device) -> Tensor:
        """``log sigmas`` on ``device`` (float64; float32 on MPS, which has no float64), cached."""
        g = self._grid_cache.get(device)
        if g is None:
            g = self._log_sigmas.to(device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
            self._grid_cache[device] = g
        return g

    def _param_dtype(self, x: Tensor) -> torch.dtype:
        if isinstance(self.net, nn.Module):
            for p in self.net.parameters():
                return p.dtype
        return x.dtype

    def _eval(self, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
        s = as_sigma(sigma, x)
        sb = s.view(-1, *([1] * (x.ndim - 1)))
        x_t = x / torch.sqrt(1.0 + sb**2)
        t = self.timestep_of(s.detach()).to(device=x.device)
        dt = self._param_dtype(x)
        out = self.net(x_t.to(dt), t.to(torch.float32 if dt != torch.float64 else dt))
        out = out.to(x.dtype)
        c = x.shape[1]
        if self.learned_variance:
            if out.shape[1] != 2 * c:
                raise ValueError(f"learned-variance net returned {out.shape[1]} channels, want {2 * c}")
            eps, v = out[:, :c], out[:, c:]
        else:
            eps, v = out, None
        return x - sb * eps, v

    def denoise(self, x: Tensor, sigma) -> Tensor:
        """``D(x, sigma) = x - sigma * eps(x / sqrt(1+sigma^2), t(sigma))`` (model space)."""
        return self._eval(x, sigma)[0]

    def denoise_with_variance(self, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
        """``(D, v)``; ``v`` = the raw learned-variance channels (``model_var_values``, [-1, 1])."""
        if not self.learned_variance:
            return super().denoise_with_variance(x, sigma)
        return self._eval(x, sigma)

    def to(self, device=None, dtype=None) -> VPPrior:
        if isinstance(self.net, nn.Module):
            self.net.to(device=device, dtype=dtype)
        return self
