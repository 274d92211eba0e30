"""Opt-in fast paths for network priors under the VP adapter (measured in reports/perf/README.md).

Every switch is explicit and **off by default**; with every switch off, :func:`with_fast_paths`
returns a prior whose outputs are bitwise those of the prior it wraps (tested in
``tests/priors/test_fast_paths.py``). The switches act on the network call only — the VP
formulas ``x_t = x / sqrt(1 + σ²)`` and ``D = x − σ ε`` stay in the caller's dtype (float32 or
float64), so reduced precision touches ε and nothing else.

=================  ===========================================================================
switch             effect, when it is safe
=================  ===========================================================================
``autocast``       ``"bf16"`` | ``"fp16"``: ``torch.autocast`` around the network call
                   (matmuls/convs in 16 bit, reductions in float32); ε is cast back to the input
                   dtype. CUDA: both; CPU: bf16 only (fp16 autocast on CPU is slow/partial).
                   Safe for sampling; it changes D by ~1e-2 relative on ADM-size nets (measure:
                   ``invbench perf``/``scripts/gpu_perf.py`` record the max |ΔD|). Not for
                   float64 exactness tests. VJPs run through the autocast graph (16-bit
                   backward).
``tf32``           CUDA only (no-op elsewhere): allow TF32 for float32 matmuls *and* cuDNN
                   convolutions during the network call, restored afterwards. PyTorch's default
                   is matmul: off, cuDNN conv: on — "off" leaves those defaults untouched.
                   ~1e-3 relative error per matmul; safe for sampling.
``channels_last``  the network (a private deep copy — the wrapped prior is not modified) and its
                   input in ``torch.channels_last`` memory format. Values are the same operations
                   in another memory layout: differences are float rounding (different
                   convolution kernels), ~1e-6 relative in float32. Safe everywhere; pays off
                   on CUDA with 16-bit autocast (tensor cores), rarely on CPU.
``compile``        ``torch.compile`` of the network (``compile_backend``, default
                   ``"inductor"``; ``compile_mode`` e.g. ``"max-autotune"``). First call per input
                   shape compiles (seconds to minutes; excluded as warm-up by the perf harness).
                   Fused kernels change rounding (~1e-6 relative in float32). Needs a C++/Triton
                   toolchain; ``compile_backend="eager"`` checks the plumbing without one.
=================  ===========================================================================
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import CountingPrior, PriorError
from .vp import VPPrior

__all__ = ["AUTOCAST_DTYPES", "FastNet", "FastPaths", "with_fast_paths"]

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FastPaths:
    """Fast-path switches (all off by default; see the module docstring).

    autocast: None | "bf16" | "fp16".
    tf32: allow TF32 in the network call (CUDA only).
    channels_last: network weights and input in channels_last memory format.
    compile: ``torch.compile`` the network.
    compile_backend, compile_mode: passed to ``torch.compile``.
    """

    autocast: str | None = None
    tf32: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None

    def __post_init__(self):
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise PriorError(f"fast_paths.autocast must be None, 'bf16' or 'fp16', got {self.autocast!r}")

    @property
    def any(self) -> bool:
        """Whether any switch is on."""
        return bool(self.autocast or self.tf32 or self.channels_last or self.compile)

    def label(self) -> str:
        """Short name, e.g. ``"bf16+channels_last"``; ``"default"`` when every switch is off."""
        parts = [self.autocast] if self.autocast else []
        parts += [k for k in ("tf32", "channels_last", "compile") if getattr(self, k)]
        return "+".join(parts) or "default"

    @classmethod
    def from_dict(cls, d: dict | None) -> FastPaths:
        """Build from a config mapping; unknown keys are errors (one readable line)."""
        d = dict(d or {})
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - valid)
        if bad:
            raise PriorError(f"unknown fast_paths key(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
        return cls(**d)


@contextlib.contextmanager
def _tf32_enabled(device: torch.device):
    """Allow TF32 for CUDA matmuls and cuDNN convolutions inside the block, then restore."""
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class FastNet(nn.Module):
    """``net(x_t, t)`` with the fast paths of ``fast`` applied around the call.

    The output has the input's dtype (ε cast back from 16 bit under autocast) and the default
    (contiguous) memory format is not forced: downstream code is elementwise.
    """

    def __init__(self, net: nn.Module, fast: FastPaths):
        super().__init__()
        if fast.channels_last:
            net = copy.deepcopy(net).to(memory_format=torch.channels_last)
        self.net = net
        self.fast = fast
        self._call = torch.compile(net, backend=fast.compile_backend, mode=fast.compile_mode) if fast.compile else net

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        f = self.fast
        dtype_in = x_t.dtype
        if f.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        ctx = contextlib.ExitStack()
        with ctx:
            if f.tf32:
                ctx.enter_context(_tf32_enabled(x_t.device))
            if f.autocast:
                ctx.enter_context(torch.autocast(device_type=x_t.device.type, dtype=AUTOCAST_DTYPES[f.autocast]))
            out = self._call(x_t, t)
        return out.to(dtype_in) if out.dtype != dtype_in else out


def with_fast_paths(prior, fast: FastPaths | dict | None = None):
    """A VP-adapter prior whose network call uses ``fast`` (a :class:`FastPaths` or a mapping).

    ``prior``: a :class:`invbench.priors.vp.VPPrior` (or a :class:`CountingPrior` around one, which is
    re-wrapped so counting still works). The returned prior shares the schedule, the grid and —
    unless ``channels_last`` — the network's weights with ``prior``; ``prior`` itself is not
    modified. With every switch off :class:`FastNet` calls the very same network on the very
    same tensors, so the outputs are bitwise those of ``prior``.
    """
    fast = fast if isinstance(fast, FastPaths) else FastPaths.from_dict(fast)
    if isinstance(prior, CountingPrior):
        return CountingPrior(with_fast_paths(prior.inner, fast))
    if not isinstance(prior, VPPrior):
        raise PriorError(f"fast paths apply to network priors under the VP adapter, not {type(prior).__name__}")
    if not isinstance(prior.net, nn.Module):
        raise PriorError("fast paths need the VP prior's network to be a torch.nn.Module")
    new = copy.copy(prior)  # shallow: betas, sigmas, grid shared
    new.net = FastNet(prior.net, fast)
    new.fast_paths = fast
    return new
