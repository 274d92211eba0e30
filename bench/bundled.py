"""Natural images bundled inside installed packages (no download), with a fixed train/held-out split.

Sources: ``skimage.data`` (scikit-image), ``sklearn.datasets.load_sample_images`` (scikit-learn)
and matplotlib's ``sample_data/grace_hopper.jpg``. Grayscale images are replicated to 3 channels.
All arrays returned here are **pixel space [0, 1]**, float32, channel-first ``(3, H, W)``.

Split (declared by image name; a held-out image never contributes a training crop):

* ``HELDOUT = ("chelsea", "coffee", "grace_hopper")``
* ``TRAIN`` = every other name in ``NAMES``.
* Solver benchmarking splits the held-out images once more (``HELDOUT_SPLITS``):
  ``test`` = chelsea, coffee; ``validation`` = grace_hopper (solver hyperparameters are tuned on
  ``validation`` crops only, so tuning never sees a test image).

``MANIFEST`` pins each decoded ``uint8`` array (``name -> (shape, sha256 of the C-contiguous
bytes)``) so a change of package data (a new scikit-image release, a different JPEG decoder) is
detected by :func:`verify_manifest` instead of silently changing results.

Each image is also used at half resolution (2x2 block mean), ``SCALES = (1, 2)``: 32x32 crops of
the half-resolution copy carry more structure per crop.
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np
import torch
from torch import Tensor

_SKIMAGE_RGB = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
_SKIMAGE_GRAY = ("camera", "moon", "coins", "brick", "grass", "gravel")

NAMES: tuple[str, ...] = (
    *_SKIMAGE_RGB,
    "motorcycle_left",
    *_SKIMAGE_GRAY,
    "china",
    "flower",
    "grace_hopper",
)
HELDOUT: tuple[str, ...] = ("chelsea", "coffee", "grace_hopper")
TRAIN: tuple[str, ...] = tuple(n for n in NAMES if n not in HELDOUT)
HELDOUT_SPLITS: dict[str, tuple[str, ...]] = {
    "all": HELDOUT,
    "test": ("chelsea", "coffee"),
    "validation": ("grace_hopper",),
}
SCALES: tuple[int, ...] = (1, 2)

# name -> (shape of the decoded uint8 array, sha256 of its bytes); regenerate with
# `python -m invbench.bench.bundled` after checking why the data changed.
MANIFEST: dict[str, tuple[tuple[int, ...], str]] = {}  # filled below


class BundledDataError(RuntimeError):
    """Bundled image missing or different from the pinned manifest."""


def _load_uint8(name: str) -> np.ndarray:
    """Decode one bundled image as a uint8 array (H, W) or (H, W, 3), exactly as shipped."""
    if name in _SKIMAGE_RGB or name in _SKIMAGE_GRAY:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())
    if name == "motorcycle_left":
        import skimage.data

        return np.asarray(skimage.data.stereo_motorcycle()[0])
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(f"{name}.jpg"))
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    raise BundledDataError(f"unknown bundled image {name!r}; valid: {', '.join(NAMES)}")


def sha256_of(arr: np.ndarray) -> str:
    """sha256 of a C-contiguous array's bytes."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def compute_manifest() -> dict[str, tuple[tuple[int, ...], str]]:
    """Decode every image and return ``name -> (shape, sha256)``."""
    out = {}
    for n in NAMES:
        a = _load_uint8(n)
        out[n] = (tuple(a.shape), sha256_of(a))
    return out


def verify_manifest() -> None:
    """Raise :class:`BundledDataError` naming the first image whose data differs from MANIFEST."""
    for n in NAMES:
        a = _load_uint8(n)
        shape, digest = MANIFEST[n]
        if tuple(a.shape) != shape or sha256_of(a) != digest:
            raise BundledDataError(
                f"bundled image {n!r} changed: got shape {a.shape} sha256 {sha256_of(a)[:12]}, "
                f"manifest {shape} {digest[:12]}"
            )


def _half(img: np.ndarray) -> np.ndarray:
    """2x2 block mean of a (3, H, W) float array (odd trailing row/column dropped)."""
    c, h, w = img.shape
    h2, w2 = h // 2, w // 2
    return img[:, : 2 * h2, : 2 * w2].reshape(c, h2, 2, w2, 2).mean(axis=(2, 4))


@cache
def load_image(name: str, scale: int = 1) -> np.ndarray:
    """One bundled image, float32 pixel space [0, 1], (3, H, W); ``scale`` 1 or 2 (half size).

    Cached and read-only (copy before modifying).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")
    if scale == 2:
        out = _half(load_image(name, 1)).astype(np.float32)
    else:
        a = _load_uint8(name)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        out = (a.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()
    out.setflags(write=False)
    return out


def train_images() -> list[np.ndarray]:
    """All TRAIN images at every scale in ``SCALES`` (pixel space [0, 1], (3, H, W) float32)."""
    return [load_image(n, s) for n in TRAIN for s in SCALES]


def heldout_images(split: str = "all") -> list[np.ndarray]:
    """HELDOUT images of ``split`` (``HELDOUT_SPLITS``: all | test | validation) at every scale."""
    if split not in HELDOUT_SPLITS:
        raise BundledDataError(f"held-out split must be one of {', '.join(HELDOUT_SPLITS)}, got {split!r}")
    return [load_image(n, s) for n in HELDOUT_SPLITS[split] for s in SCALES]


def crop_boxes(shapes: list[tuple[int, ...]], n: int, size: int,
               rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Where the ``n`` crops of :func:`random_crops` come from: ``(image index, row, column)`` of
    each, for images of ``shapes`` (C, H, W): image chosen uniformly, position uniformly."""
    out = []
    for _ in range(n):
        k = int(rng.integers(len(shapes)))
        _, h, w = shapes[k]
        r = int(rng.integers(h - size + 1))
        c = int(rng.integers(w - size + 1))
        out.append((k, r, c))
    return out


def random_crops(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> Tensor:
    """``n`` crops at :func:`crop_boxes` from a numpy Generator.

    Returns (n, 3, size, size) float32 pixel space [0, 1].
    """
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i, (k, r, c) in enumerate(crop_boxes([im.shape for im in images], n, size, rng)):
        out[i] = images[k][:, r : r + size, c : c + size]
    return torch.from_numpy(out)


def heldout_crop_sources(n: int, size: int = 32, seed: int = 0, split: str = "all") -> list[tuple[str, int, int, int]]:
    """``(image name, scale, row, column)`` of each crop of :func:`heldout_crops` (same arguments):
    which held-out image, at which scale, each crop was cut from."""
    names = [(name, s) for name in HELDOUT_SPLITS[split] for s in SCALES]
    boxes = crop_boxes([im.shape for im in heldout_images(split)], n, size, np.random.default_rng(seed))
    return [(*names[k], r, c) for k, r, c in boxes]


def heldout_crops(n: int, size: int = 32, seed: int = 0, split: str = "all") -> Tensor:
    """Deterministic held-out crops: (n, 3, size, size) float32 pixel space [0, 1].

    Drawn only from the HELDOUT images of ``split`` (both scales; ``"all"`` for evaluating the
    prior, ``"test"`` / ``"validation"`` for solver benchmarks / tuning), with
    ``numpy.random.default_rng(seed)``; the first k crops of a call with n > k equal a call with
    n = k.
    """
    return random_crops(heldout_images(split), n, size, np.random.default_rng(seed))


def train_crops(n: int, size: int = 32, seed: int = 0) -> Tensor:
    """Deterministic crops of TRAIN images (used e.g. to tune baselines), like ``heldout_crops``."""
    return random_crops(train_images(), n, size, np.random.default_rng(seed))


MANIFEST.update(
    {
        # generated by `python -m invbench.bench.bundled` (scikit-image 0.26.0, scikit-learn 1.9.1,
        # matplotlib / Pillow of the project venv)
        "astronaut": ((512, 512, 3), "a8c429c18afa7b0fd5673e598d73a21225d94c864a71bbb3885126fdecb41071"),
        "coffee": ((400, 600, 3), "0ce2b51640b9c95f19617f03eabf40c3f0368589cc1ee1190b70966165ac184f"),
        "chelsea": ((300, 451, 3), "416b729128bfb2c3d1eb69bf9b1734a796293abc17939267b2dc94f8a5784031"),
        "rocket": ((427, 640, 3), "3d4435cc745752b7f9724df88c6e18817de3ce7e3d2d71c55f85f7831e68f197"),
        "immunohistochemistry": ((512, 512, 3), "c5b3ef509a92f16d4c29be8cf0300fe75d53e13a3ce650159db932caea8dcc1b"),
        "hubble_deep_field": ((872, 1000, 3), "9a3ea9548188f81e63435188456e74de45a981ebeb791e265abe79a26d3b528b"),
        "retina": ((1411, 1411, 3), "3670e389d0dae9f755cc1bb7e4da4c3d2cdf10eba2dc3060836d8d4b8024d860"),
        "motorcycle_left": ((500, 741, 3), "ca829467c1d4f427da9c4862ba43829da6ac90afe1f75735e95dba9e3fd9620b"),
        "camera": ((512, 512), "5cb24482a53416f99052258be2b1ee38cd31c559a70c8a8b321cba231b332e21"),
        "moon": ((512, 512), "a20362266d5b01021f6f0f54bd603c3137f921b741770420deeb5ea0141716c0"),
        "coins": ((303, 384), "e080cc03805f1fa70516c3cb84883d4633bda2a1b51841da7c22f3d14c072451"),
        "brick": ((512, 512), "664a145c5253f0d66db1a12776785f0ea35a44cc7447ffc933f6d6118dc58643"),
        "grass": ((512, 512), "b18dae4c68bf850a7a7b28a29d1846c76be890665117b57fd125fe29c4d4ede6"),
        "gravel": ((512, 512), "3d51ad45f789cd8b98534b7af6bce774e499ead45421135afd757358c7230009"),
        "china": ((427, 640, 3), "e701459344fd69797154c91add3bb5d70e5ed1a61d8bed889bab3a796104698d"),
        "flower": ((427, 640, 3), "3202904ed246795bf616c66d7859cd7c6080eff736c6e38dc5cc62779742033f"),
        "grace_hopper": ((600, 512, 3), "f7f982de68dd296af67ee51b2a95a2e5658f7bf064c6536520b66bae8d01fc34"),
    }
)


if __name__ == "__main__":  # print the manifest in the literal form used above
    for k, (shape, digest) in compute_manifest().items():
        print(f'        "{k}": ({shape}, "{digest}"),')
