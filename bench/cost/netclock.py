"""Time spent inside the network during a solve, measured in the solve itself.

:class:`ClockedPrior` is the :class:`priors.CountingPrior` the runner hands to solvers: besides
NFE and VJP it clocks

* ``forward`` — seconds inside ``denoise`` / ``denoise_with_variance`` of the wrapped prior;
* ``backward`` — seconds between the gradient reaching a denoiser output and leaving its input
  (the network's share of a VJP).

On CPU each interval is two ``time.perf_counter`` calls. On CUDA each interval is a pair of
CUDA events recorded on the current stream (no host synchronisation during the solve); they are
read by :meth:`ClockedPrior.network_seconds` after the runner's timer has synchronised the
device. ``solve seconds ÷ network seconds`` of the same call is the in-run floor ratio: both
parts slow down together when another process takes the machine, so their ratio moves far less
with machine load or machine speed than the wall time does.
"""

from __future__ import annotations

import time

import torch
from invbench.priors import CountingPrior
from torch import Tensor

__all__ = ["ClockedPrior"]


class _Mark(torch.autograd.Function):
    """Identity whose backward stamps the owner's clock (``which``: ``"out"`` = the gradient
    reached the denoiser output, ``"in"`` = it left the denoiser input)."""

    @staticmethod
    def forward(ctx, x: Tensor, owner: ClockedPrior, which: str) -> Tensor:
        ctx.owner, ctx.which = owner, which
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        ctx.owner._backward_mark(ctx.which, g)
        return g, None, None


class ClockedPrior(CountingPrior):
    """A :class:`priors.CountingPrior` that also clocks the network's forward and backward time
    (seconds; see the module docstring). ``reset()`` clears counters and clocks."""

    def __init__(self, prior):
        super().__init__(prior)
        self._clear()

    def _clear(self) -> None:
        self._fwd_s = 0.0
        self._bwd_s = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._b0: float | torch.cuda.Event | None = None

    def reset(self) -> None:
        super().reset()
        self._clear()

    # -- clock primitives -------------------------------------------------------------
    @staticmethod
    def _stamp(like: Tensor) -> float | torch.cuda.Event:
        if like.is_cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _add(self, t0: float | torch.cuda.Event, t1: float | torch.cuda.Event, backward: bool) -> None:
        if isinstance(t0, float) and isinstance(t1, float):
            if backward:
                self._bwd_s += t1 - t0
            else:
                self._fwd_s += t1 - t0
        else:
            self._events.append((t0, t1))  # type: ignore[arg-type]

    def _backward_mark(self, which: str, g: Tensor) -> None:
        if which == "out":
            self.vjp += 1
            self._b0 = self._stamp(g)
        elif self._b0 is not None:
            self._add(self._b0, self._stamp(g), backward=True)
            self._b0 = None

    def network_seconds(self) -> float:
        """Seconds spent inside the network since the last ``reset`` (forward + backward). On
        CUDA the device must be synchronised first (the runner's timer does that)."""
        gpu = sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
        return self._fwd_s + self._bwd_s + gpu

    # -- wrapped calls ----------------------------------------------------------------
    def _wrap_out(self, out: Tensor) -> Tensor:
        return _Mark.apply(out, self, "out") if out.requires_grad else out

    def denoise(self, x: Tensor, sigma) -> Tensor:
        self.nfe += 1
        if torch.is_grad_enabled() and x.requires_grad:
            x = _Mark.apply(x, self, "in")
        t0 = self._stamp(x)
        out = self.inner.denoise(x, sigma)
        self._add(t0, self._stamp(x), backward=False)
        return self._wrap_out(out)

    def denoise_with_variance(self, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
        self.nfe += 1
        if torch.is_grad_enabled() and x.requires_grad:
            x = _Mark.apply(x, self, "in")
        t0 = self._stamp(x)
        d, v = self.inner.denoise_with_variance(x, sigma)
        self._add(t0, self._stamp(x), backward=False)
        return self._wrap_out(d), v
