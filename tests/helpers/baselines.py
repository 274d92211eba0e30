"""Shared fixtures for the DPS / DDRM / ΠGDM tests: small Gaussian priors with exact posteriors,
a diagonal-SVD operator, a NaN prior, and a deepinv ``Denoiser`` wrapper of our priors."""

from __future__ import annotations

import math

import torch
from invbench.operators import SVD, LinearOperator
from invbench.priors import Prior
from invbench.priors.gmm import GaussianMixturePrior
from torch import Tensor


def gaussian_prior(shape=(1, 4, 4), *, diagonal: bool = False, seed: int = 0,
                   scale: float = 0.15) -> GaussianMixturePrior:
    """A single Gaussian ``N(mu, C)`` in model space (float64). ``diagonal``: independent pixels."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    if diagonal:
        C = torch.diag(0.01 + 0.1 * torch.rand(d, generator=g, dtype=torch.float64))
    else:
        L = scale * torch.randn(d, d, generator=g, dtype=torch.float64)
        C = L @ L.T / math.sqrt(d) * 4 + 0.02 * torch.eye(d, dtype=torch.float64)
    mu = 0.2 * torch.randn(d, generator=g, dtype=torch.float64)
    return GaussianMixturePrior([1.0], mu[None], C[None], shape)


def gens(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


class _DiagSVD(SVD):
    """``A = U diag(s) Vᵀ`` with explicit orthogonal ``U`` (m×m) and ``V`` (n×n)."""

    def __init__(self, U: Tensor, s: Tensor, V: Tensor, in_shape):
        self.Um, self.singular_values, self.Vm, self.in_shape = U, s, V, tuple(in_shape)

    def V(self, z):
        return (z @ self.Vm.T).reshape(z.shape[0], *self.in_shape)

    def Vt(self, x):
        return x.reshape(x.shape[0], -1) @ self.Vm

    def U(self, z):
        return z @ self.Um.T

    def Ut(self, y):
        return y @ self.Um


class DenseSVDOperator(LinearOperator):
    """A dense random linear operator ``(m × n)`` with exact SVD and chosen singular values."""

    def __init__(self, in_shape, s: Tensor, seed: int = 0, params: dict | None = None):
        n = math.prod(in_shape)
        m = s.numel()
        super().__init__(in_shape, (m,), name="dense_test")
        g = torch.Generator().manual_seed(seed)
        U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.svd = _DiagSVD(U, s.to(torch.float64), V, in_shape)
        self.matrix = U @ torch.diag(s.to(torch.float64)) @ V[:, :m].T
        self.params = dict(params or {})

    def forward(self, x):
        return x.reshape(x.shape[0], -1) @ self.matrix.T

    def adjoint(self, y):
        return (y @ self.matrix).reshape(y.shape[0], *self.in_shape)


class NaNPrior(Prior):
    """A prior whose denoiser returns NaN (to test SolverDiverged)."""

    def __init__(self, shape=(1, 4, 4)):
        self.image_shape, self.sigma_min, self.sigma_max = tuple(shape), 0.0, 100.0

    def denoise(self, x, sigma):
        return x * float("nan")


def dense_matrix(op) -> Tensor:
    """Dense ``A`` (m × n) by applying the operator to the identity basis (float64)."""
    n = math.prod(op.in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *op.in_shape)
    return op.forward(eye).reshape(n, -1).T


def make_dinv_denoiser(prior, noise_factor: float = 1.0):
    """Our model-space prior as a ``deepinv.models.Denoiser`` (pixel units in and out).

    ``forward(x_pix, s)`` returns ``(D(2 x_pix − 1, noise_factor · 2 s) + 1)/2``: our model
    sigma is ``2 ×`` deepinv's. ``noise_factor = 1/sqrt(2)`` compensates deepinv DDRM's
    ``randn / sqrt(2)`` for orthonormal decompositions (docs/solvers-baselines.md).
    """
    import deepinv

    class _Wrapped(deepinv.models.Denoiser):
        def forward(self, x, sigma, *args, **kwargs):
            s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
            if s.numel() == 1:
                s = s.expand(x.shape[0])
            xm = 2.0 * x.to(torch.float64) - 1.0
            d = prior.denoise(xm, 2.0 * noise_factor * s)
            return ((d + 1.0) / 2.0).to(x.dtype)

    return _Wrapped()


class MatrixOperator(DenseSVDOperator):
    """A given dense matrix ``M`` (m × n, m <= n) as an operator with its exact (LAPACK) SVD."""

    def __init__(self, M: Tensor, in_shape, params: dict | None = None):
        LinearOperator.__init__(self, in_shape, (M.shape[0],), name="matrix_test")
        U, s, Vh = torch.linalg.svd(M.to(torch.float64), full_matrices=True)
        self.svd = _DiagSVD(U, s, Vh.T, in_shape)
        self.matrix = M.to(torch.float64)
        self.params = dict(params or {})


def circular_blur_matrix(kernel: Tensor, hw: int) -> Tensor:
    """Dense matrix of the single-channel circular convolution with ``kernel`` (k × k, centred
    like deepinv's BlurFFT) on ``hw × hw`` images: built by applying ``deepinv.physics.BlurFFT``
    to the identity basis."""
    import deepinv

    n = hw * hw
    phys = deepinv.physics.BlurFFT(img_size=(1, hw, hw), filter=kernel.reshape(1, 1, *kernel.shape).to(torch.float64))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, hw, hw)
    return phys.A(eye).reshape(n, n).T, phys
