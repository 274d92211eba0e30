"""Safe loading of plain state-dict checkpoints from a local file (never downloads).

Every failure is a :class:`~invbench.priors.base.PriorError` with one readable line naming the file and
the expected model.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import PriorError


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _load_failure_reason(e: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file. For a refused pickle
    torch's first line is generic advice (to disable ``weights_only``, which we never do); the
    specific line (``unsupported GLOBAL posix.system``, ``Unsupported operand``) is used instead."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if isinstance(e, pickle.UnpicklingError) and len(lines) > 1:
        specific = [ln for ln in lines[1:] if not ln.startswith(("Check the documentation", "Please file an issue"))]
        if specific:
            return f"{specific[0]} (refused; nothing in the file was executed)"
    return lines[0] if lines else ""


def load_state_dict_file(path: str | Path, expected: str, sha256: str | None = None) -> dict[str, Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` returning a dict of tensors.

    ``expected`` describes the model the file should hold (used in error messages). With
    ``sha256`` the file's digest must match. Raises PriorError for a missing file, a digest
    mismatch, a file ``weights_only`` refuses (pickled code, custom classes), a truncated or
    corrupt file, or content that is not a flat ``{name: Tensor}`` mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise PriorError(f"checkpoint file not found: {p} (expected {expected})")
    if sha256 is not None:
        got = sha256_file(p)
        if got.lower() != sha256.lower():
            raise PriorError(f"checkpoint {p}: sha256 {got} does not match pinned {sha256} "
                             f"(expected {expected})")
    try:
        with warnings.catch_warnings():   # e.g. "Detected pickle protocol 4": not our user's concern
            warnings.simplefilter("ignore", UserWarning)
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError,
            TypeError, KeyError, ImportError) as e:
        msg = _load_failure_reason(e)
        raise PriorError(f"checkpoint {p} cannot be loaded as a plain state dict with "
                         f"weights_only=True (expected {expected}): {type(e).__name__}: {msg[:200]}") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                           for k, v in sd.items()):
        raise PriorError(f"checkpoint {p} is not a state dict of tensors (got {type(sd).__name__}; "
                         f"expected {expected})")
    return sd


def check_state_dict(model: nn.Module | dict[str, Tensor], sd: dict[str, Tensor], path: str | Path,
                     expected: str, show: int = 3) -> None:
    """Raise one-line PriorError unless ``sd`` has exactly the keys and shapes of ``model`` (a
    module, or a reference ``{name: tensor}`` dict)."""
    ref = model.state_dict() if isinstance(model, nn.Module) else model
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    mismatched = [f"{k} {tuple(sd[k].shape)}!={tuple(ref[k].shape)}"
                  for k in ref if k in sd and sd[k].shape != ref[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("shape mismatch", mismatched)):
            if items:
                more = f" (+{len(items) - show} more)" if len(items) > show else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:show])}{more}")
        raise PriorError(f"checkpoint {path} does not match {expected}: " + "; ".join(parts))
