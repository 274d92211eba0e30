"""Content hashes of every input that shapes a result, recorded in a run's metadata.

The config hash covers *names and paths*; these hashes cover *contents*, so ``--resume`` can
refuse to add rows computed on other data or weights to a run (:func:`changed`).

Keys (all sha256 hex):

* ``datasets.<name>.images``: image ids and the float64 pixel values as loaded (after crop /
  resize), in dataset order; ``datasets.<name>.manifest`` / ``.list``: the manifest / name-list
  file bytes where the dataset has one;
* ``priors.<label>.checkpoint`` / ``.weights_file`` / ``.state``: see :func:`prior_hashes`;
* ``tasks.<name>.operator<shape>``: the operator's state built with generator seed 0 for each
  dataset image shape (kernels, masks, matrices, parameters; per-image random parts are derived
  from seeds);
* ``metrics.<metric>.<option>``: bytes of a weights file named by a metric option.

Quantities derived by LAPACK/FFT (:data:`DERIVED`) are left out of state hashes: they differ in
their last bits between CPU thread counts, and hashing them would refuse a legitimate resume.

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

__all__ = ["changed", "file_sha256", "pixels_hasher", "prior_hashes", "state_sha256"]

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


def _feed(h, obj: Any, depth: int, seen: set[int]) -> None:
    if depth > 6 or id(obj) in seen:
        return
    if isinstance(obj, torch.nn.Module):
        seen.add(id(obj))
        for k, v in sorted(obj.state_dict().items()):
            h.update(k.encode())
            _feed(h, v, depth + 1, seen)
        return
    if isinstance(obj, torch.Tensor):
        a = obj.detach().cpu()
        h.update(f"T{tuple(a.shape)}{a.dtype}".encode())
        h.update(a.contiguous().view(torch.uint8).numpy().tobytes() if a.numel() else b"")
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype != object:
            h.update(f"A{obj.shape}{obj.dtype}".encode() + np.ascontiguousarray(obj).tobytes())
        return
    if isinstance(obj, (bool, int, float, complex)):
        h.update(repr(obj).encode())
        return
    if isinstance(obj, dict):
        seen.add(id(obj))
        for k in sorted(obj, key=str):
            if not str(k).startswith("_") and not any(w in str(k).lower() for w in DERIVED):
                h.update(str(k).encode())
                _feed(h, obj[k], depth + 1, seen)
        return
    if isinstance(obj, (list, tuple)):
        seen.add(id(obj))
        for v in obj:
            _feed(h, v, depth + 1, seen)
        return
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        seen.add(id(obj))
        _feed(h, vars(obj), depth + 1, seen)


DERIVED = ("svd", "pinv", "fft", "eig")
"""Attribute-name parts of quantities *derived* by LAPACK/FFT (SVD factors, pseudo-inverses,
eigen-decompositions): their last bits depend on the CPU thread count, so they are left out; the
inputs they are computed from are hashed."""


def state_sha256(obj: Any) -> str:
    """sha256 of every tensor, array and number reachable from ``obj`` (module state dicts,
    attributes, dicts and lists). Left out: attributes starting with ``_`` (caches), names
    containing a :data:`DERIVED` part, and strings (paths differ between checkouts)."""
    h = hashlib.sha256()
    _feed(h, obj, 0, set())
    return h.hexdigest()


def _module_states(obj: Any, depth: int = 0, seen: set[int] | None = None) -> list[torch.nn.Module]:
    seen = set() if seen is None else seen
    if depth > 4 or id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        return [obj]
    out: list[torch.nn.Module] = []
    if hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.Tensor)):
        for k, v in sorted(vars(obj).items()):
            if not k.startswith("_"):
                out += _module_states(v, depth + 1, seen)
    return out


def prior_hashes(label: str, name: str, prior: Any, checkpoint: str | None) -> dict[str, str]:
    """Hashes of a prior's weights: the checkpoint file given in the config; else the fitted-GMM
    file a named GMM prior loads (``priors/data/gmm_*.npz``); else the state dicts of its networks
    (exact copies of the weights file, e.g. the small CPU prior). Priors defined wholly in code
    (synthetic GMMs, test priors) have none: the code version covers them."""
    if checkpoint is not None:
        return {f"priors.{label}.checkpoint": file_sha256(checkpoint)}
    from invbench.priors import gmm_library

    if name in gmm_library.FITTED:
        return {f"priors.{label}.weights_file": file_sha256(gmm_library.DATA_DIR / gmm_library.FITTED[name])}
    mods = _module_states(prior)
    return {f"priors.{label}.state": state_sha256(mods)} if mods else {}


def changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Keys whose hash differs between ``old`` and ``new`` (or is present in only one), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
