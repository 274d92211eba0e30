"""Content hashes of every input that shapes a result, recorded in a run's metadata.

The config hash covers *names and paths*; these hashes cover *contents*, so ``--resume`` can
refuse to add rows computed on other data or weights to a run (:func:`changed`).

Keys (all sha256 hex):

* ``datasets.<name>.images``: image ids and the float64 pixel values as loaded (after crop /
  resize), in dataset order; ``datasets.<name>.manifest`` / ``.list``: the manifest / name-list
  file bytes where the dataset has one;
* ``priors.<label>.checkpoint`` / ``.weights_file`` / ``.state``: see :func:`prior_hashes`;
* ``tasks.<name>.operator<shape>``: the operator's declared state
  (:meth:`invbench.operators.Operator.state`: kernels, masks, factors, parameters) built with
  generator seed 0 for each dataset image shape (per-image random parts are derived from seeds);
* ``metrics.<metric>.<option>``: bytes of a weights file named by a metric option.

Quantities derived by LAPACK/FFT (SVD factors, pseudo-inverses) are not part of an operator's
state: they differ in their last bits between CPU thread counts, and hashing them would refuse a
legitimate resume.

Files are hashed once per process: :func:`file_sha256` caches by (resolved path, size, mtime).
Nothing is skipped on ``--resume``: every run start hashes again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["changed", "file_sha256", "operator_sha256", "pixels_hasher", "prior_hashes",
           "state_sha256"]

_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes; cached per process by (resolved path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


class pixels_hasher:
    """sha256 over (image id, float64 pixel bytes) pairs, fed in dataset order."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, image_id: str, x: torch.Tensor) -> None:
        a = np.ascontiguousarray(x.detach().cpu().to(torch.float64).numpy())
        self.h.update(str(image_id).encode() + b"\0" + str(a.shape).encode() + b"\0" + a.tobytes())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _tag(h, kind: bytes, n: int) -> None:
    """A type tag and a count: every value is framed, so no two states share an encoding."""
    h.update(kind + str(n).encode() + b":")


def _feed(h, obj: Any) -> None:
    """Feed ``obj`` to ``h`` in a canonical, prefix-free encoding (no reflection: only the values
    listed in :func:`state_sha256` are read): each value is a type tag, a length and its bytes, so
    ``[1, 23]`` and ``[12, 3]``, or ``{"ab": "c"}`` and ``{"a": "bc"}``, never hash alike."""
    if isinstance(obj, torch.nn.Module):
        items = sorted(obj.state_dict().items())
        _tag(h, b"M", len(items))
        for k, v in items:
            _feed(h, str(k))
            _feed(h, v)
    elif isinstance(obj, torch.Tensor):
        a = obj.detach().cpu()
        raw = a.contiguous().view(torch.uint8).numpy().tobytes() if a.numel() else b""
        _feed(h, f"{tuple(a.shape)}{a.dtype}")
        _tag(h, b"T", len(raw))
        h.update(raw)
    elif isinstance(obj, np.ndarray):
        raw = np.ascontiguousarray(obj).tobytes()
        _feed(h, f"{obj.shape}{obj.dtype}")
        _tag(h, b"A", len(raw))
        h.update(raw)
    elif obj is None or isinstance(obj, (bool, int, float, complex)):
        raw = f"{type(obj).__name__}={obj!r}".encode()
        _tag(h, b"N", len(raw))
        h.update(raw)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8", "surrogatepass")
        _tag(h, b"S", len(raw))
        h.update(raw)
    elif isinstance(obj, dict):
        _tag(h, b"D", len(obj))
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        _tag(h, b"L", len(obj))
        for v in obj:
            _feed(h, v)
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} as input state")


def state_sha256(obj: Any) -> str:
    """sha256 of a state: torch modules (their state dicts), tensors, arrays, numbers, strings,
    ``None`` and dicts (keys sorted), lists and tuples of these. Anything else is a TypeError:
    what is hashed is declared (e.g. :meth:`invbench.operators.Operator.state`), never found by
    walking an object's attributes."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def operator_sha256(op: Any) -> str:
    """sha256 of an operator's type name and its declared :meth:`~invbench.operators.Operator.state`
    (the inputs that define it; derived SVD factors, pseudo-inverses and FFTs are not part of a
    state, so the hash is equal across CPU thread counts)."""
    return state_sha256({"type": type(op).__name__, "state": op.state()})


def prior_hashes(label: str, name: str, prior: Any, checkpoint: str | None) -> dict[str, str]:
    """Hashes of a prior's weights: the checkpoint file given in the config; else the fitted-GMM
    file a named GMM prior loads (``priors/data/gmm_*.npz``); else the state dicts of its networks
    (:meth:`invbench.priors.base.Prior.networks`: exact copies of the weights file, e.g. the small
    CPU prior). Priors defined wholly in code
    (synthetic GMMs, test priors) have none: the code version covers them."""
    if checkpoint is not None:
        return {f"priors.{label}.checkpoint": file_sha256(checkpoint)}
    from invbench.priors import gmm_library

    if name in gmm_library.FITTED:
        return {f"priors.{label}.weights_file": file_sha256(gmm_library.DATA_DIR / gmm_library.FITTED[name])}
    mods = prior.networks()
    return {f"priors.{label}.state": state_sha256(mods)} if mods else {}


def changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Keys whose hash differs between ``old`` and ``new`` (or is present in only one), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
