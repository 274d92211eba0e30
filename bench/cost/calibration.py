"""Device calibration recorded by every run: how fast this device evaluates each prior's network.

At the start of a run, in the same process, for every prior of the experiment:
``t_forward`` = median seconds of one ``denoise`` call under ``torch.no_grad`` and
``t_forward_backward`` = median seconds of one ``denoise`` call followed by one vector–Jacobian
product, both on a ``(batch_size, *image_shape)`` input at sigma 1 in the run's dtype, after one
warm-up round; ``reps`` interleaved repetitions of ``calls`` calls each (CUDA synchronised around
each repetition). The result goes to the run's ``meta`` as JSON under ``calibration``.

It tells a reader of two runs how fast each device was at the start of each run
(``invbench compare`` prints the ratio) and lets network counts be converted into seconds on
that device: ``floor = (NFE − VJP)·t_forward + VJP·t_forward_backward``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from . import synchronize

__all__ = ["calibrate", "calibrate_prior"]


def _time(fn, device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def calibrate_prior(prior: Any, batch_size: int, device: torch.device | str, dtype: torch.dtype,
                    reps: int = 3, calls: int = 1) -> dict[str, Any]:
    """Forward and forward+backward seconds per network call of ``prior`` (see module docstring).

    Returns ``{"batch": B, "t_forward_s": .., "t_forward_backward_s": .., "reps": .., "calls": ..}``;
    ``t_forward_backward_s`` is None (with a ``note``) when the network cannot be differentiated.
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(123)
    shape = (int(batch_size), *prior.image_shape)
    x = torch.randn(shape, generator=g, dtype=dtype).to(device)
    v = torch.randn(shape, generator=g, dtype=dtype).to(device)
    s = torch.full((int(batch_size),), 1.0, dtype=dtype, device=device)

    def fwd() -> None:
        with torch.no_grad():
            for _ in range(calls):
                prior.denoise(x, s)

    def fwd_bwd() -> None:
        for _ in range(calls):
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                d = prior.denoise(xr, s)
                torch.autograd.grad(d, xr, grad_outputs=v)

    out: dict[str, Any] = {"batch": int(batch_size), "reps": int(reps), "calls": int(calls)}
    try:
        fwd_bwd()   # warm-up (and the differentiability check)
        can_bwd = True
    except RuntimeError as e:
        can_bwd = False
        out["note"] = f"no backward: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    fwd()
    tf, tfb = [], []
    for _ in range(reps):
        tf.append(_time(fwd, device) / calls)
        if can_bwd:
            tfb.append(_time(fwd_bwd, device) / calls)
    out["t_forward_s"] = statistics.median(tf)
    out["t_forward_backward_s"] = statistics.median(tfb) if tfb else None
    return out


def calibrate(priors: dict[str, Any], batch_size: int, device: torch.device | str, dtype: torch.dtype,
              reps: int = 3, calls: int = 1) -> dict[str, dict[str, Any]]:
    """:func:`calibrate_prior` for each ``{label: prior}``; a prior whose network fails is recorded
    as ``{"error": "<one line>"}`` (a calibration never stops a run)."""
    out: dict[str, dict[str, Any]] = {}
    for label, prior in priors.items():
        inner = getattr(prior, "inner", prior)  # time the network, not the counting wrapper
        try:
            out[label] = calibrate_prior(inner, batch_size, device, dtype, reps, calls)
        except Exception as e:  # noqa: BLE001 - recorded, never fatal
            msg = str(e).strip().splitlines()
            out[label] = {"error": f"{type(e).__name__}: {msg[0] if msg else ''}"}
    return out
