"""Fit the committed Gaussian-mixture priors (priors/data/gmm_*.npz) with scikit-learn.

Usage (from the repository root; deterministic, no downloads)::

    OMP_NUM_THREADS=1 python scripts/fit_gmm.py [--which digits patches patches-rgb] [--out priors/data]

* digits: ``sklearn.datasets.load_digits`` (1797 images 8×8, values 0..16), pixel = v/16,
  model = 2·pixel - 1. Fitted on images 0..1499, held out 1500..1796.
* patches / patches-rgb: 8×8 patches (full resolution, pixel values /255) at uniformly random
  positions (``numpy.random.default_rng(seed)``) of training images skimage.data ``astronaut``,
  ``chelsea``, ``coffee``, ``rocket`` and scikit-learn ``china.jpg``; held-out images
  scikit-learn ``flower.jpg`` and matplotlib ``grace_hopper.jpg``. Grayscale via
  ``skimage.color.rgb2gray``.

Every fit: ``sklearn.mixture.GaussianMixture(covariance_type="full", random_state=0)`` with the
K and ``reg_covar`` (model units²) below; the mean held-out log-likelihood per image (nats, model
space) is stored in the file's metadata and printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from invbench.operators.conventions import pixel_to_model
from invbench.priors.gmm_library import save_npz

TRAIN_IMAGES = ["skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket",
                "sklearn:china.jpg"]
HELDOUT_IMAGES = ["sklearn:flower.jpg", "matplotlib:grace_hopper.jpg"]

CONFIGS = {
    "digits": {"file": "gmm_digits.npz", "K": 10, "reg_covar": 1e-4, "max_iter": 500, "n_init": 1},
    "patches": {"file": "gmm_patches.npz", "K": 20, "reg_covar": 1e-4, "max_iter": 300, "n_init": 1,
                    "n_per_image": 8000, "seed": 0, "gray": True},
    "patches-rgb": {"file": "gmm_patches_rgb.npz", "K": 16, "reg_covar": 1e-4, "max_iter": 300, "n_init": 1,
                        "n_per_image": 4000, "seed": 0, "gray": False},
}


def load_image(spec: str) -> np.ndarray:
    """A bundled RGB image as float64 (H, W, 3) in pixel units [0, 1]."""
    src, name = spec.split(":")
    if src == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
    elif src == "sklearn":
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name)
    elif src == "matplotlib":
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data(name) as f:
            img = np.asarray(Image.open(f).convert("RGB"))
    else:
        raise ValueError(spec)
    return np.asarray(img, dtype=np.float64) / 255.0


def extract_patches(specs: list[str], n_per_image: int, seed: int, gray: bool, p: int = 8) -> np.ndarray:
    """Random p×p patches, flattened in CHW order, pixel units. Shape (len(specs)·n, C·p·p)."""
    from skimage.color import rgb2gray

    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        img = load_image(spec)
        img = rgb2gray(img)[None] if gray else img.transpose(2, 0, 1)  # (C, H, W)
        _, H, W = img.shape
        ii = rng.integers(0, H - p + 1, size=n_per_image)
        jj = rng.integers(0, W - p + 1, size=n_per_image)
        for i, j in zip(ii, jj):
            out.append(img[:, i : i + p, j : j + p].reshape(-1))
    return np.stack(out)


def to_model(x_pixel: np.ndarray) -> np.ndarray:
    import torch

    return pixel_to_model(torch.from_numpy(x_pixel)).numpy()


def fit(which: str, out_dir: Path) -> None:
    from sklearn.mixture import GaussianMixture

    cfg = CONFIGS[which]
    if which == "digits":
        from sklearn.datasets import load_digits

        X = to_model(load_digits().data / 16.0)
        Xtr, Xte = X[:1500], X[1500:]
        shape = (1, 8, 8)
        data = {"source": "sklearn.datasets.load_digits", "train": "images 0..1499",
                "heldout": "images 1500..1796", "pixel": "value / 16"}
    else:
        gray = cfg["gray"]
        Xtr = to_model(extract_patches(TRAIN_IMAGES, cfg["n_per_image"], cfg["seed"], gray))
        Xte = to_model(extract_patches(HELDOUT_IMAGES, 2000, cfg["seed"] + 1, gray))
        shape = (1, 8, 8) if gray else (3, 8, 8)
        data = {"source": "8x8 patches at random positions, full resolution, pixel = uint8 / 255"
                          + (", skimage.color.rgb2gray" if gray else ", RGB (CHW order)"),
                "train_images": TRAIN_IMAGES, "heldout_images": HELDOUT_IMAGES,
                "n_per_image": cfg["n_per_image"], "n_heldout_per_image": 2000,
                "patch_seed": cfg["seed"], "heldout_patch_seed": cfg["seed"] + 1}
    t0 = time.time()
    gm = GaussianMixture(n_components=cfg["K"], covariance_type="full", reg_covar=cfg["reg_covar"],
                         max_iter=cfg["max_iter"], n_init=cfg["n_init"], random_state=0)
    gm.fit(Xtr)
    secs = time.time() - t0
    meta = {
        "name": "gmm-" + which, "image_shape": list(shape), "K": cfg["K"],
        "reg_covar_model_units2": cfg["reg_covar"], "sklearn_random_state": 0,
        "covariance_type": "full", "max_iter": cfg["max_iter"], "converged": bool(gm.converged_),
        "n_iter": int(gm.n_iter_), "n_train": len(Xtr), "n_heldout": len(Xte),
        "train_loglik_per_image": float(gm.score(Xtr)), "heldout_loglik_per_image": float(gm.score(Xte)),
        "model_space": "x_model = 2 x_pixel - 1", "command": f"python scripts/fit_gmm.py --which {which}",
        **data,
    }
    out = out_dir / cfg["file"]
    save_npz(out, gm.weights_, gm.means_, gm.covariances_, shape, meta)
    print(f"{which}: K={cfg['K']} d={Xtr.shape[1]} n_train={len(Xtr)} iters={gm.n_iter_} "
          f"converged={gm.converged_} train ll={meta['train_loglik_per_image']:.2f} "
          f"held-out ll={meta['heldout_loglik_per_image']:.2f} ({secs:.0f}s) -> {out} "
          f"({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", type=Path, default=ROOT / "priors" / "data")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for w in args.which:
        fit(w, args.out)


if __name__ == "__main__":
    main()
