"""Prior contract (docs/design.md §2, §4): a denoiser ``D(x, sigma) ≈ E[x0 | x_sigma = x]``.

All tensors are in model space [-1, 1], NCHW with shape ``(B, *image_shape)``. The
parametrisation is variance-exploding: ``x_sigma = x0 + sigma * n``; ``sigma`` is a tensor of
shape ``(B,)`` (a Python float is broadcast). Score: ``(D - x) / sigma**2``; Tweedie
covariance ``Cov[x0 | x] = sigma**2 dD/dx``.

Capabilities (``Prior.capabilities``) are declared: ``"analytic"`` (exact ``covariance``,
``posterior``), ``"learned_variance"`` (``denoise_with_variance``), ``"discrete"`` (``sigmas``
is the training grid).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class PriorError(ValueError):
    """Bad prior name, missing/mismatched checkpoint (one readable line)."""


def as_sigma(sigma, x: Tensor) -> Tensor:
    """Broadcast ``sigma`` (float, 0-d or (B,) tensor) to a ``(B,)`` tensor on x's device/dtype."""
    if isinstance(sigma, (int, float)):  # a fill on x's device: no host-to-device copy (no sync on GPU)
        return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    return s.reshape(x.shape[0])


class Prior(ABC):
    """A denoiser ``D(x, sigma)`` in model space.

    Attributes
    ----------
    image_shape: ``(C, H, W)``.
    sigma_min, sigma_max: range of noise levels (model units) where ``denoise`` is valid.
    sigmas: ascending tensor of the training noise levels (``sigmas[t]`` for discrete
        timestep ``t``) or None for continuous priors.
    """

    image_shape: tuple[int, int, int]
    sigma_min: float
    sigma_max: float
    sigmas: Tensor | None = None
    name: str = ""

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset()

    @abstractmethod
    def denoise(self, x: Tensor, sigma) -> Tensor:
        """``D(x, sigma)``: posterior mean of x0 given ``x = x0 + sigma n`` (model space)."""

    def score(self, x: Tensor, sigma) -> Tensor:
        """``∇ log p_sigma(x) = (D(x, sigma) - x) / sigma**2``."""
        s = as_sigma(sigma, x).view(-1, *([1] * (x.ndim - 1)))
        return (self.denoise(x, sigma) - x) / s**2

    def denoise_with_variance(self, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
        """``(D, v)`` with ``v`` the network's learned-variance channels in [-1, 1] (guided-diffusion
        ``model_var_values``); only for priors with the ``"learned_variance"`` capability."""
        raise NotImplementedError(f"{type(self).__name__} has no learned variance")

    def to(self, device=None, dtype=None) -> Prior:
        return self

    def networks(self) -> list:
        """The ``torch.nn.Module`` networks whose weights define this prior (declared, never found
        by walking attributes): their state dicts are its content hash in a run's metadata. ``[]``
        for a prior defined by code or by a data file (hashed as a file)."""
        return []


class CountingPrior(Prior):
    """Wraps a prior and counts network evaluations (NFE) and vector–Jacobian products (VJP).

    * NFE: +1 per ``denoise`` / ``denoise_with_variance`` call (a batched call counts once: one
      network evaluation per step, as papers count it).
    * VJP: +1 each time autograd back-propagates through one denoiser output.
    Every other attribute is forwarded to the wrapped prior.
    """

    def __init__(self, prior: Prior):
        self.inner = prior
        self.nfe = 0
        self.vjp = 0

    def networks(self) -> list:
        return self.inner.networks()

    def reset(self) -> None:
        self.nfe = 0
        self.vjp = 0

    def __getattr__(self, item):
        return getattr(self.inner, item)

    @property
    def image_shape(self):  # type: ignore[override]
        return self.inner.image_shape

    @property
    def sigma_min(self):  # type: ignore[override]
        return self.inner.sigma_min

    @property
    def sigma_max(self):  # type: ignore[override]
        return self.inner.sigma_max

    @property
    def sigmas(self):  # type: ignore[override]
        return self.inner.sigmas

    @property
    def name(self):  # type: ignore[override]
        return self.inner.name

    @property
    def capabilities(self) -> frozenset[str]:
        return self.inner.capabilities

    def _count_vjp(self, out: Tensor) -> Tensor:
        if out.requires_grad:
            return _VJPCounter.apply(out, self)
        return out

    def denoise(self, x: Tensor, sigma) -> Tensor:
        self.nfe += 1
        return self._count_vjp(self.inner.denoise(x, sigma))

    def denoise_with_variance(self, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
        self.nfe += 1
        d, v = self.inner.denoise_with_variance(x, sigma)
        return self._count_vjp(d), v

    def to(self, device=None, dtype=None) -> CountingPrior:
        self.inner.to(device=device, dtype=dtype)
        return self


class _VJPCounter(torch.autograd.Function):
    """Identity whose backward increments the owner's VJP counter."""

    @staticmethod
    def forward(ctx, out: Tensor, owner: CountingPrior) -> Tensor:
        ctx.owner = owner
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        ctx.owner.vjp += 1
        return grad, None
