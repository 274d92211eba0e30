"""``priors.build("gmm-crops32")``: the low-rank-plus-isotropic Gaussian mixture fitted to 32×32 RGB
crops of the bundled training images (docs/priors-gmm.md, "Image-scale mixture"), and the file
format of such mixtures.

File ``priors/data/gmm_crops32.npz`` (written by ``scripts/fit_gmm_crops32.py``): ``weights``,
``means`` (float32), ``basis`` (K, d, r) float16, ``eigvals``/``tau2`` float64, ``image_shape``
and ``meta`` (JSON: data, grid, chosen K and r, held-out log-likelihood). Loading casts to
float64 and re-orthonormalises the basis, so the loaded mixture is exact in float64.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .base import PriorError
from .gmm_lowrank import LowRankGaussianMixturePrior
from .registry import register

__all__ = ["CROPS32_FILE", "load_lowrank_npz", "save_lowrank_npz"]

CROPS32_FILE = Path(__file__).resolve().parent / "data" / "gmm_crops32.npz"


def save_lowrank_npz(path, params: dict, image_shape, meta: dict) -> None:
    """Write ``params`` (``weights``, ``means``, ``basis``, ``eigvals``, ``tau2``) to ``path``."""
    np.savez_compressed(
        path,
        weights=np.asarray(params["weights"], dtype=np.float64),
        means=np.asarray(params["means"], dtype=np.float32),
        basis=np.asarray(params["basis"], dtype=np.float16),
        eigvals=np.asarray(params["eigvals"], dtype=np.float64),
        tau2=np.asarray(params["tau2"], dtype=np.float64),
        image_shape=np.asarray(image_shape, dtype=np.int64),
        meta=np.array(json.dumps(meta)),
    )


def load_lowrank_npz(path) -> LowRankGaussianMixturePrior:
    """Read a mixture written by :func:`save_lowrank_npz` (float64, basis re-orthonormalised)."""
    path = Path(path)
    if not path.is_file():
        raise PriorError(f"low-rank GMM parameter file {path} is missing; regenerate it with "
                         f"`python scripts/fit_gmm_crops32.py`")
    with np.load(path, allow_pickle=False) as z:
        arrs = {k: torch.from_numpy(z[k].astype(np.float64)) for k in ("weights", "means", "basis", "eigvals", "tau2")}
        shape = tuple(int(s) for s in z["image_shape"])
        meta = json.loads(str(z["meta"]))
    p = LowRankGaussianMixturePrior(arrs["weights"], arrs["means"], arrs["basis"], arrs["eigvals"], arrs["tau2"], shape)
    p.meta = meta
    return p


@lru_cache(maxsize=1)
def _crops32_cached() -> LowRankGaussianMixturePrior:
    return load_lowrank_npz(CROPS32_FILE)


@register("gmm-crops32")
def _build_crops32() -> LowRankGaussianMixturePrior:
    p = _crops32_cached()
    q = LowRankGaussianMixturePrior.__new__(LowRankGaussianMixturePrior)
    q.__dict__.update(p.__dict__)  # shared read-only parameters; a fresh object per build
    q.meta = dict(p.meta)
    return q
