"""Ready-made Gaussian-mixture priors, registered with :func:`priors.build` (docs/design.md §4.1).

* ``gmm-synthetic-<d>``: seeded, well-separated synthetic mixture (K = 8), 2 <= d <= 1024.
* ``gmm-digits``: fitted to scikit-learn's 8×8 digits (image_shape (1, 8, 8)).
* ``gmm-patches``: fitted to 8×8 grayscale patches of bundled natural images (1, 8, 8).
* ``gmm-patches-rgb``: fitted to 8×8 RGB patches of the same images (3, 8, 8).

Fitted parameters are read from ``priors/data/gmm_*.npz`` (written by ``scripts/fit_gmm.py``;
nothing is refitted at run time). See docs/priors-gmm.md for sources, seeds and fit quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from .base import PriorError
from .gmm import GaussianMixturePrior
from .registry import register

__all__ = ["DATA_DIR", "FITTED", "load_npz", "save_npz", "synthetic_gmm", "synthetic_parameters"]

DATA_DIR = Path(__file__).resolve().parent / "data"
FITTED = {
    "gmm-digits": "gmm_digits.npz",
    "gmm-patches": "gmm_patches.npz",
    "gmm-patches-rgb": "gmm_patches_rgb.npz",
}
SYNTHETIC_K = 8
SYNTHETIC_SEED_BASE = 20_000  # the seed of gmm-synthetic-<d> is SYNTHETIC_SEED_BASE + d


def synthetic_image_shape(d: int) -> tuple[int, int, int]:
    """``(1, √d, √d)`` when ``d`` is a perfect square, else ``(1, 1, d)``."""
    s = math.isqrt(d)
    return (1, s, s) if s * s == d else (1, 1, d)


def synthetic_parameters(d: int, K: int = SYNTHETIC_K, seed: int | None = None):
    """Weights (K,), means (K, d), covariances (K, d, d) of the synthetic mixture (float64 numpy).

    Covariances: ``F Fᵀ + diag(δ²)`` with ``F`` of rank ``r = max(1, d//8)``, entries
    ``N(0, 0.05²/r)``, and ``δ ~ U(0.02, 0.04)`` per pixel (a component's standard deviation
    along a direction is about 0.02–0.1). Means: random sequential placement in
    ``[-0.75, 0.75]^d``; a candidate is accepted when, for every mean already placed, the
    distance is >= ``0.35·√(d/2)`` and >= 4 × (sum of the two components' standard deviations
    along the connecting direction). Weights
    ``∝ 0.5 + U(0, 1)``. Random numbers: ``numpy.random.default_rng(seed)``, default seed
    ``20000 + d``.
    """
    if not 2 <= d <= 1024:
        raise PriorError(f"gmm-synthetic-<d>: d must be in [2, 1024], got {d}")
    rng = np.random.default_rng(SYNTHETIC_SEED_BASE + d if seed is None else seed)
    r = max(1, d // 8)
    covs = np.empty((K, d, d))
    for k in range(K):
        F = rng.normal(0.0, 0.05 / math.sqrt(r), size=(d, r))
        delta = rng.uniform(0.02, 0.04, size=d)
        covs[k] = F @ F.T + np.diag(delta**2)
    dmin = 0.35 * math.sqrt(d / 2)
    means: list[np.ndarray] = []
    for _ in range(200_000):
        c = rng.uniform(-0.75, 0.75, size=d)
        k = len(means)
        ok = True
        for j, mj in enumerate(means):
            u = c - mj
            dist = float(np.linalg.norm(u))
            u /= max(dist, 1e-300)
            sep = 4 * (math.sqrt(u @ covs[k] @ u) + math.sqrt(u @ covs[j] @ u))
            if dist < max(dmin, sep):
                ok = False
                break
        if ok:
            means.append(c)
            if len(means) == K:
                break
    else:
        raise PriorError(f"could not place {K} separated means in d={d}")
    w = 0.5 + rng.uniform(size=K)
    return w / w.sum(), np.stack(means), covs


def synthetic_gmm(d: int, K: int = SYNTHETIC_K, seed: int | None = None) -> GaussianMixturePrior:
    """The synthetic prior of :func:`synthetic_parameters` as a :class:`GaussianMixturePrior`."""
    w, m, C = synthetic_parameters(d, K, seed)
    p = GaussianMixturePrior(w, m, C, synthetic_image_shape(d))
    p.meta = {"source": "synthetic", "d": d, "K": K,
              "seed": SYNTHETIC_SEED_BASE + d if seed is None else seed}
    return p


def save_npz(path, weights, means, covariances, image_shape, meta: dict) -> None:
    """Write a fitted mixture: covariances stored as packed lower triangles in float32."""
    C = np.asarray(covariances, dtype=np.float64)
    K, d, _ = C.shape
    il = np.tril_indices(d)
    np.savez_compressed(
        path,
        weights=np.asarray(weights, dtype=np.float64),
        means=np.asarray(means, dtype=np.float64).reshape(K, d),
        cov_tril=C[:, il[0], il[1]].astype(np.float32),
        image_shape=np.asarray(image_shape, dtype=np.int64),
        meta=np.array(json.dumps(meta)),
    )


def load_npz(path) -> GaussianMixturePrior:
    """Read a mixture written by :func:`save_npz` (covariances symmetrised, computed in float64)."""
    path = Path(path)
    if not path.is_file():
        raise PriorError(f"GMM parameter file {path} is missing; regenerate it with "
                         f"`python scripts/fit_gmm.py`")
    with np.load(path, allow_pickle=False) as z:
        w, m, tril = z["weights"], z["means"], z["cov_tril"].astype(np.float64)
        shape = tuple(int(s) for s in z["image_shape"])
        meta = json.loads(str(z["meta"]))
    K, d = m.shape
    il = np.tril_indices(d)
    C = np.zeros((K, d, d))
    C[:, il[0], il[1]] = tril
    C = C + np.tril(C, -1).transpose(0, 2, 1)
    p = GaussianMixturePrior(torch.from_numpy(w), torch.from_numpy(m), torch.from_numpy(C), shape)
    p.meta = meta
    return p


@register("gmm-synthetic-*")
def _build_synthetic(suffix: str, K: int = SYNTHETIC_K, seed: int | None = None) -> GaussianMixturePrior:
    try:
        d = int(suffix)
    except ValueError:
        raise PriorError(f"gmm-synthetic-<d>: <d> must be an integer, got {suffix!r}") from None
    return synthetic_gmm(d, K, seed)


def _fitted_builder(name: str):
    def build() -> GaussianMixturePrior:
        return load_npz(DATA_DIR / FITTED[name])

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


for _name in FITTED:
    register(_name)(_fitted_builder(_name))
