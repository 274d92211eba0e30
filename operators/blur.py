"""Deblurring presets: ``deblur_gauss`` (DPS), ``deblur_uniform`` (DDRM / ΠGDM), ``deblur_motion`` (DPS).

All blurs are per-channel 'same' cross-correlations (``torch.nn.functional.conv2d`` after
``F.pad(x, r, mode)``, as DPS's ``Blurkernel``: ``ReflectionPad2d(k//2)`` + depthwise ``Conv2d``).

* Separable kernels (Gaussian, uniform) are applied as ``A_h X A_wᵀ`` with the 1-D padded
  correlation matrices; the padding is built into the 1-D matrices, so the matmul form *is* the
  padded convolution (no boundary approximation) and the Kronecker SVD is exact for it: the form
  that measures ``y`` and the SVD that the solvers see are the same operator.
* The motion kernel is not separable: ``forward`` pads (matrix form, any pad width) and
  correlates through FFTs of the padded image (exact linear correlation, no wrap-around);
  ``adjoint`` is its exact transpose; there is no SVD, and ``pinv`` runs CGLS.

``padding`` override: ``"reflect"`` (torch/DPS; periodic mirror extension when the pad exceeds
the image), ``"symmetric"``, ``"circular"`` (deepinv ``BlurFFT``), ``"zero"`` (DDRM).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LinearOperator, OperatorError
from .common import (
    PADDING_MODES,
    cast_like,
    check_image_shape,
    correlation_matrix,
    no_overrides,
    pad_matrix,
)
from .kernels import gaussian_kernel_1d, motion_kernel, uniform_kernel_1d
from .kronecker import SeparableOperator
from .registry import register

DDRM_SVD_THRESHOLD = 3e-2


def _trim_zeros(k: Tensor) -> Tensor:
    """Drop symmetric all-zero tap pairs at both ends (exactly the same correlation)."""
    nz = torch.nonzero(k).flatten()
    r = k.numel() // 2
    reach = int(max(abs(int(nz.min()) - r), abs(int(nz.max()) - r)))
    return k[r - reach : r + reach + 1]


def separable_blur(C: int, H: int, W: int, k_h: Tensor, k_w: Tensor, padding: str) -> SeparableOperator:
    """Per-channel 2-D correlation with ``outer(k_h, k_w)`` and ``padding``, as a separable operator."""
    if padding not in PADDING_MODES:
        raise OperatorError(f"unknown padding {padding!r}; valid: {', '.join(PADDING_MODES)}")
    k_h, k_w = _trim_zeros(k_h), _trim_zeros(k_w)
    return SeparableOperator(C, correlation_matrix(k_h, H, padding), correlation_matrix(k_w, W, padding))


@register("deblur_gauss", family="deblurring")
def build_gauss(image_shape, generator: torch.Generator, *, kernel_size: int = 61, std: float = 3.0,
                padding: str = "reflect", svd_threshold: float = DDRM_SVD_THRESHOLD,
                **overrides) -> SeparableOperator:
    """DPS Gaussian deblur: 61×61 kernel, std 3.0 (``gaussian_filter`` of a centred delta),
    reflect padding. Exact separable SVD of exactly this operator."""
    no_overrides("deblur_gauss", overrides)
    C, H, W = check_image_shape("deblur_gauss", image_shape, min_hw=2 if padding == "reflect" else 1)
    k1 = gaussian_kernel_1d(kernel_size, std)
    op = separable_blur(C, H, W, k1, k1, padding)
    op.params = {"kernel": torch.outer(k1, k1), "kernel_1d": k1, "kernel_size": kernel_size, "std": float(std),
                 "padding": padding, "svd_threshold": float(svd_threshold)}
    return op


@register("deblur_uniform", family="deblurring")
def build_uniform(image_shape, generator: torch.Generator, *, kernel_size: int = 9, padding: str = "zero",
                  svd_threshold: float = DDRM_SVD_THRESHOLD, ddrm_truncated: bool = False,
                  **overrides) -> SeparableOperator:
    """DDRM ``deblur_uni``: 1-D kernel ``[1/9]*9`` in both directions (a 9×9 box), zero padding.

    ``ddrm_truncated=True`` reproduces a quirk of DDRM's ``Deblurring`` matrix builder
    (``range(i - k//2, i + k//2)`` stops one tap early): only taps ``-4..3`` (8 × 1/9) are used.
    """
    no_overrides("deblur_uniform", overrides)
    C, H, W = check_image_shape("deblur_uniform", image_shape, min_hw=2 if padding == "reflect" else 1)
    k1 = uniform_kernel_1d(kernel_size)
    if ddrm_truncated:
        k1 = k1.clone()
        k1[-1] = 0.0
    op = SeparableOperator(C, correlation_matrix(k1, H, padding), correlation_matrix(k1, W, padding))
    op.params = {"kernel": torch.outer(k1, k1), "kernel_1d": k1, "kernel_size": kernel_size, "padding": padding,
                 "svd_threshold": float(svd_threshold), "ddrm_truncated": bool(ddrm_truncated)}
    return op


class ConvOperator(LinearOperator):
    """Per-channel 'same' 2-D cross-correlation with an odd ``K×K`` kernel and ``padding``.

    ``forward``: pad by ``K//2`` (dense 0/1 padding matrices ``P_h X P_wᵀ``), then valid
    correlation through real FFTs of the padded size (the circular correlation equals the linear
    one on the kept window, so this is exact up to FFT round-off ~1e-16 relative in float64).
    ``adjoint``: the transposes in reverse order. ``pinv``: CGLS (see :meth:`pinv`).
    """

    def __init__(self, C: int, H: int, W: int, kernel: Tensor, padding: str):
        super().__init__((C, H, W), (C, H, W))
        K = kernel.shape[-1]
        if kernel.shape != (K, K) or K % 2 != 1:
            raise OperatorError(f"blur kernel must be square with odd size, got {tuple(kernel.shape)}")
        r = K // 2
        self.kernel = kernel.to(torch.float64)
        self.padding = padding
        self.Ph, self.Pw = pad_matrix(H, r, r, padding), pad_matrix(W, r, r, padding)
        self.Hp, self.Wp = H + 2 * r, W + 2 * r
        kp = torch.zeros(self.Hp, self.Wp, dtype=torch.float64)
        kp[:K, :K] = self.kernel
        self.k_fft = torch.fft.rfft2(kp)

    def state(self) -> dict:
        """Shape, kernel, padding mode and the parameters (padding matrices and the kernel's FFT
        are derived from them)."""
        return {"in_shape": self.in_shape, "kernel": self.kernel, "padding": self.padding,
                "params": self.params}

    def _kfft(self, like: Tensor) -> Tensor:
        cd = torch.complex128 if like.dtype == torch.float64 else torch.complex64
        k = self.k_fft
        return k if (k.dtype == cd and k.device == like.device) else k.to(device=like.device, dtype=cd)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        _, H, W = self.in_shape
        xp = cast_like(self.Ph, x) @ x @ cast_like(self.Pw, x).T
        c = torch.fft.irfft2(torch.fft.rfft2(xp) * self._kfft(x).conj(), s=(self.Hp, self.Wp))
        return c[..., :H, :W]

    def adjoint(self, y: Tensor) -> Tensor:
        _, H, W = self.in_shape
        yp = torch.nn.functional.pad(y, (0, self.Wp - W, 0, self.Hp - H))
        zp = torch.fft.irfft2(torch.fft.rfft2(yp) * self._kfft(y), s=(self.Hp, self.Wp))
        return cast_like(self.Ph, y).T @ zp @ cast_like(self.Pw, y)

    DENSE_MAX_PIXELS = 1024

    def _dense_pinv(self) -> Tensor:
        """Exact ``(HW, HW)`` float64 pseudo-inverse of the per-channel operator (built once)."""
        if getattr(self, "_pinv_dense", None) is None:
            _, H, W = self.in_shape
            n = H * W
            eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W)
            saved, self.in_shape = self.in_shape, (1, H, W)
            try:
                A = self.forward(eye).reshape(n, n).T  # column j = A e_j
            finally:
                self.in_shape = saved
            self._pinv_dense = torch.linalg.pinv(A, rtol=n * torch.finfo(torch.float64).eps)
        return self._pinv_dense

    def pinv(self, y: Tensor, *, rtol: float | None = None, max_iter: int = 1000) -> Tensor:
        """``A⁺ y``. Exact for ``H·W <= DENSE_MAX_PIXELS`` (1024): the per-channel matrix is
        built once and pseudo-inverted in float64 (rank cutoff ``n·eps·s_max``). Larger images:
        minimum-norm least squares by CGLS started at 0 (iterates stay in ``range(Aᵀ)``, so the
        limit is ``A⁺ y``), stopped per batch item when ``‖Aᵀ(y - A x)‖ <= rtol ‖Aᵀ y‖``
        (default ``rtol`` 1e-10 in float64, 1e-5 in float32) or after ``max_iter`` iterations;
        motion kernels have near-zero frequency responses, so this is an approximation whose
        quality is the CGLS residual: measured at 48×48 (seed 1), ``‖A A⁺ A x - A x‖ / ‖A x‖`` is
        2.5e-2 after 50, 3.5e-3 after 200 and 3.7e-4 after 1000 iterations (tests assert <= 1e-2
        after 200 at 40×40)."""
        _, H, W = self.in_shape
        if H * W <= self.DENSE_MAX_PIXELS and rtol is None:
            P = cast_like(self._dense_pinv(), y)
            B, C = y.shape[0], y.shape[1]
            return (y.reshape(B * C, H * W) @ P.T).reshape(B, C, H, W)
        return self.pinv_cgls(y, rtol=rtol, max_iter=max_iter)

    def pinv_cgls(self, y: Tensor, *, rtol: float | None = None, max_iter: int = 1000) -> Tensor:
        """CGLS approximation of ``A⁺ y`` (see :meth:`pinv`)."""
        if rtol is None:
            rtol = 1e-10 if y.dtype == torch.float64 else 1e-5
        dims = tuple(range(1, y.dim()))
        x = torch.zeros((y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device)
        r = y.clone()
        s = self.adjoint(r)
        p = s.clone()
        gamma = (s * s).sum(dim=dims, keepdim=True)
        stop = rtol**2 * gamma
        for _ in range(max_iter):
            if bool((gamma <= stop).all()):
                break
            q = self.forward(p)
            qq = (q * q).sum(dim=dims, keepdim=True)
            alpha = torch.where(qq > 0, gamma / torch.where(qq > 0, qq, torch.ones_like(qq)), torch.zeros_like(qq))
            alpha = torch.where(gamma <= stop, torch.zeros_like(alpha), alpha)
            x = x + alpha * p
            r = r - alpha * q
            s = self.adjoint(r)
            gamma_new = (s * s).sum(dim=dims, keepdim=True)
            beta = torch.where(gamma > 0, gamma_new / torch.where(gamma > 0, gamma, torch.ones_like(gamma)),
                               torch.zeros_like(gamma))
            p = s + beta * p
            gamma = gamma_new
        return x


@register("deblur_motion", family="deblurring")
def build_motion(image_shape, generator: torch.Generator, *, kernel_size: int = 61, intensity: float = 0.5,
                 padding: str = "reflect", kernel: Tensor | None = None, **overrides) -> ConvOperator:
    """DPS motion deblur: a 61×61 kernel of intensity 0.5 drawn once from ``generator``
    (:func:`invbench.operators.kernels.motion_kernel`), reflect padding, no SVD. ``kernel=`` overrides
    the drawn kernel (any odd square kernel)."""
    no_overrides("deblur_motion", overrides)
    C, H, W = check_image_shape("deblur_motion", image_shape, min_hw=2 if padding == "reflect" else 1)
    if padding not in PADDING_MODES:
        raise OperatorError(f"unknown padding {padding!r}; valid: {', '.join(PADDING_MODES)}")
    k = (motion_kernel(generator, kernel_size, intensity) if kernel is None
         else torch.as_tensor(kernel, dtype=torch.float64))
    op = ConvOperator(C, H, W, k, padding)
    op.params = {"kernel": k.clone(), "kernel_size": int(k.shape[-1]), "intensity": float(intensity),
                 "padding": padding}
    return op
