"""Operator contract (docs/design.md §3): forward models ``y = A(x) + sigma_y n`` in model space.

Images are NCHW tensors in model space [-1, 1] with shape ``(B, *in_shape)``; measurements have
shape ``(B, *out_shape)``. Capabilities are declared in ``capabilities`` (``"linear"``,
``"svd"``, ``"grad"``) and never probed with ``hasattr``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor


class OperatorError(ValueError):
    """Bad operator name, parameter or input shape (one readable line)."""


class Operator(ABC):
    """A forward model ``A``: ``forward(x)`` maps ``(B, *in_shape)`` -> ``(B, *out_shape)``.

    Attributes
    ----------
    name: preset name that built it (``""`` for ad-hoc operators).
    in_shape: image shape ``(C, H, W)``.
    out_shape: measurement shape (without batch).
    is_linear: whether ``A`` is linear.
    capabilities: declared capabilities, a subset of ``{"linear", "svd", "grad"}``;
        every operator here is differentiable (``"grad"``).
    params: the operator's parameters (kernel, mask, ...) for records and re-derivation.

    Every operator declares what defines it in :meth:`state`.
    """

    is_linear: ClassVar[bool] = False

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], name: str = ""):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.name = name
        self.params: dict = {}

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"grad"})

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Apply ``A`` to a batch ``x`` of shape ``(B, *in_shape)``."""

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def state(self) -> dict[str, Any]:
        """The inputs that define this operator: its image shape, the tensors and numbers its
        ``forward`` is built from (mask, kernel and padding, resize matrices, factor, ...) and its
        :attr:`params` (solvers read some of them, e.g. ``svd_threshold``), as tensors, numbers,
        strings and tuples/dicts of them. Quantities *derived* from these (SVD factors,
        pseudo-inverses, FFTs) are left out.

        Two operators of the same type with equal states are the same operator: the harness
        batches images only while their operators' states are equal and records a hash of the
        state of each task's operator (docs/design.md §3). Every operator class declares it."""
        raise NotImplementedError(f"{type(self).__name__} declares no state() (docs/design.md §3)")

    def check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise OperatorError(
                f"operator {self.name or type(self).__name__}: input shape {tuple(x.shape[1:])} "
                f"does not match in_shape {self.in_shape}"
            )

    def measure(self, x: Tensor, sigma_y: float, generator: torch.Generator | None = None) -> Tensor:
        """Noisy measurement ``y = A(x) + sigma_y * n`` with ``n ~ N(0, I)`` drawn from ``generator``.

        ``sigma_y`` is in model units (``invbench.operators.conventions.noise_sigma_to_model`` converts
        a pixel-unit ``noise_sigma``). The noise is drawn on the generator's device (CPU for a
        CPU generator) and moved to ``x.device``, so results do not depend on the device.
        """
        y = self.forward(x)
        if sigma_y < 0:
            raise OperatorError(f"sigma_y must be >= 0, got {sigma_y}")
        if sigma_y == 0:
            return y
        gen_device = generator.device if generator is not None else torch.device("cpu")
        n = torch.randn(y.shape, generator=generator, device=gen_device, dtype=y.dtype)
        return y + sigma_y * n.to(y.device)

    def to(self, device=None, dtype=None) -> Operator:
        """Move tensor parameters to ``device``/``dtype`` in place; returns ``self``."""
        for k, v in list(vars(self).items()):
            if isinstance(v, Tensor):
                kw = {}
                if device is not None:
                    kw["device"] = device
                if dtype is not None and v.is_floating_point():
                    kw["dtype"] = dtype
                setattr(self, k, v.to(**kw))
            elif isinstance(v, SVD):
                v.to(device=device, dtype=dtype)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, in={self.in_shape}, out={self.out_shape})"


def same_operator(a: Operator, b: Operator) -> bool:
    """True when ``a`` and ``b`` are the same operator: one type and equal
    :meth:`Operator.state` (tensors equal exactly, with the same shape, dtype and device)."""
    return a is b or (type(a) is type(b) and _same_state(a.state(), b.state()))


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return bool(a == b)


class SVD(ABC):
    """Exact singular value decomposition ``A = U diag(s) Vᵀ`` in flattened coordinates.

    Shapes (docs/design.md §9): ``Vt(x)`` maps ``(B, *in_shape)`` -> ``(B, n)`` spectral coefficients and
    ``V`` inverts it; ``Ut(y)`` maps ``(B, *out_shape)`` -> ``(B, m)`` and ``U`` inverts it;
    ``singular_values`` has shape ``(m,)``, ``m <= n``, and
    ``A.forward(x) == U(s * Vt(x)[:, :m])``. Singular values are non-negative; they are sorted
    so that the first ``m`` spectral coordinates correspond to them (zeros allowed where a
    reference implementation thresholds them).
    """

    singular_values: Tensor

    def thresholded(self, threshold: float) -> SVD:
        """A shallow copy whose singular values ``< threshold`` are set to 0 (DDRM-style
        truncation; e.g. ``A.svd.thresholded(A.params.get("svd_threshold", 0.0))``). The copy
        shares U and V; it no longer reproduces ``forward`` when anything was zeroed."""
        import copy

        new = copy.copy(self)
        s = self.singular_values
        new.singular_values = torch.where(s < threshold, torch.zeros_like(s), s)
        return new

    @abstractmethod
    def V(self, z: Tensor) -> Tensor: ...

    @abstractmethod
    def Vt(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def U(self, z: Tensor) -> Tensor: ...

    @abstractmethod
    def Ut(self, y: Tensor) -> Tensor: ...

    def to(self, device=None, dtype=None) -> SVD:
        for k, v in list(vars(self).items()):
            if isinstance(v, Tensor):
                kw = {}
                if device is not None:
                    kw["device"] = device
                if dtype is not None and v.is_floating_point():
                    kw["dtype"] = dtype
                setattr(self, k, v.to(**kw))
        return self


class LinearOperator(Operator):
    """A linear forward model with ``adjoint`` and ``pinv``; ``svd`` is an :class:`SVD` or None."""

    is_linear: ClassVar[bool] = True
    svd: SVD | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"grad", "linear"}
        if self.svd is not None:
            caps.add("svd")
        return frozenset(caps)

    @abstractmethod
    def adjoint(self, y: Tensor) -> Tensor:
        """``Aᵀ y``: ``(B, *out_shape)`` -> ``(B, *in_shape)``."""

    def pinv(self, y: Tensor) -> Tensor:
        """Moore–Penrose pseudo-inverse ``A⁺ y`` (through the SVD; zero singular values dropped)."""
        if self.svd is None:
            raise NotImplementedError(f"{type(self).__name__} has no SVD; override pinv")
        return svd_pinv(self.svd, y, self.in_shape)


def residual_gradient(operator: Operator, x: Tensor, y: Tensor) -> Tensor:
    """``∇_x ½‖A(x) − y‖²`` per batch item: ``Aᵀ(A x − y)`` through the adjoint of a linear
    operator (no autograd graph), the operator's autograd VJP otherwise."""
    if operator.is_linear:
        return operator.adjoint(operator.forward(x) - y)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        r = operator.forward(xg) - y
        (g,) = torch.autograd.grad(0.5 * (r * r).sum(), xg)
    return g


def safe_div(num: Tensor | float, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0`` and 0 elsewhere (broadcasting), without a 0/0 ever being
    evaluated: the suite's one zero-safe reciprocal (``safe_div(1.0, s)`` is ``Σ⁺``). A float
    ``num`` stays a Python scalar (torch then evaluates ``num · (1/den)``)."""
    pos = den > 0
    return torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(den))


def svd_pinv(svd: SVD, y: Tensor, in_shape: tuple[int, ...], singular_values: Tensor | None = None) -> Tensor:
    """``A⁺ y = V Σ⁺ Uᵀ y`` from an SVD, zero singular values dropped: ``(B, *out_shape)`` ->
    ``(B, *in_shape)``. ``singular_values`` replaces ``svd.singular_values`` (e.g. a thresholded
    copy, as DDRM's and ΠGDM's code use)."""
    s = svd.singular_values if singular_values is None else singular_values
    z = svd.Ut(y)
    coeff = torch.zeros(y.shape[0], _numel(in_shape), dtype=z.dtype, device=z.device)
    coeff[:, : s.numel()] = z * safe_div(1.0, s)
    return svd.V(coeff).reshape(y.shape[0], *in_shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for k in shape:
        n *= int(k)
    return n
