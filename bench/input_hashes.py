"""Content hashes of every input that shapes a result, recorded in a run's metadata.

The config hash covers *names and paths*; these hashes cover *contents*, so ``--resume`` can
refuse to add rows computed on other data or weights to a run (:func:`changed`).

Keys (all sha256 hex):

* ``datasets.<name>.images``: image ids and the float64 pixel values as loaded (after crop /
  resize), in dataset order; ``datasets.<name>.manifest`` / ``.list``: the manifest / name-list
  file bytes where the dataset has one;
* ``priors.<label>.checkpoint``: the checkpoint file bytes (a ``checkpoint`` set in the config),
  else ``priors.<label>.state``: every tensor / array / number of the built prior (bundled
  weights such as the small CPU network or the fitted GMM files);
* ``tasks.<name>.operator<shape>``: the operator's state built with generator seed 0 for each
  dataset image shape (kernels, masks, parameters; per-image random parts are derived from seeds);
* ``metrics.<metric>.<option>``: bytes of a weights file named by a metric option.

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

__all__ = ["changed", "file_sha256", "pixels_hasher", "state_sha256"]

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


class pixels_hasher:  # noqa: N801 - used like a function returning a hash object
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
            if not str(k).startswith("_"):
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


def state_sha256(obj: Any) -> str:
    """sha256 of every tensor, array and number reachable from ``obj`` (module state dicts,
    attributes, dicts and lists; attributes starting with ``_`` (caches) and strings are left out)."""
    h = hashlib.sha256()
    _feed(h, obj, 0, set())
    return h.hexdigest()


def changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Keys whose hash differs between ``old`` and ``new`` (or is present in only one), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
