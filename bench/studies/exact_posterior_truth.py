"""Ground truths of the exact-posterior validation (:mod:`invbench.bench.studies.exact_posterior`):
the problem ids and, per prior, where problem ``j``'s truth comes from (model space [-1, 1],
float64).

* synthetic priors: ``prior.sample(1, Generator(s))``;
* ``gmm-digits``: the test image ``digits_split_indices("test")[(32 * PRESET_INDEX + j) % 197]``;
* ``gmm-patches``: an 8x8 grayscale crop of a held-out image (``prior.meta["heldout_images"]``)
  at a position drawn by ``numpy.random.default_rng(s)``.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import torch
from invbench.operators.conventions import pixel_to_model
from torch import Tensor

PRIOR_INDEX = {"gmm-synthetic-64": 0, "gmm-synthetic-256": 1, "gmm-digits": 2, "gmm-patches": 3}
PRESET_INDEX = {"inpaint_random": 0, "inpaint_box": 1, "sr4_avgpool": 2, "deblur_uniform": 3,
                "inpaint_half": 4, "sr4_bicubic": 5, "deblur_gauss": 6, "denoise": 7}
DT = torch.float64


def problem_seed(prior_name: str, preset: str, j: int) -> int:
    """Id ``s = 1000 * PRIOR_INDEX + 100 * PRESET_INDEX + j`` of problem ``j`` (``j`` < 100)."""
    if not 0 <= j < 100:
        raise ValueError(f"problem index must be in 0..99, got {j}")
    return 1000 * PRIOR_INDEX[prior_name] + 100 * PRESET_INDEX[preset] + j


@cache
def _gray_image(spec: str) -> np.ndarray:
    """A bundled image ``"source:name"`` as grayscale float64 (H, W) in pixel units."""
    from skimage.color import rgb2gray

    src, name = spec.split(":")
    if src == "sklearn":
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name)
    elif src == "matplotlib":
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data(name) as f:
            img = np.asarray(Image.open(f).convert("RGB"))
    elif src == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
    else:
        raise ValueError(f"unknown image source {spec!r}")
    return rgb2gray(np.asarray(img, dtype=np.float64) / 255.0)


def heldout_patch(prior, s: int) -> Tensor:
    """Grayscale p x p crop (model space, (1, p, p)) of one of ``prior.meta["heldout_images"]``,
    image and position drawn by ``numpy.random.default_rng(s)``."""
    names = prior.meta["heldout_images"]
    _, p, _ = prior.image_shape
    rng = np.random.default_rng(s)
    img = _gray_image(names[int(rng.integers(len(names)))])
    i = int(rng.integers(0, img.shape[0] - p + 1))
    k = int(rng.integers(0, img.shape[1] - p + 1))
    return pixel_to_model(torch.from_numpy(img[i : i + p, k : k + p].copy())).reshape(1, p, p).to(DT)


@lru_cache(maxsize=1)
def _digits_test() -> tuple[list[int], np.ndarray]:
    from invbench.bench.datasets import digits_split_indices
    from sklearn.datasets import load_digits

    return digits_split_indices("test"), load_digits().images


def truth(prior_name: str, prior, preset: str, j: int) -> tuple[Tensor, str]:
    """Ground truth ``(C, H, W)`` (model space, float64) of problem ``j`` and its id."""
    s = problem_seed(prior_name, preset, j)
    if prior_name.startswith("gmm-synthetic"):
        return prior.sample(1, generator=torch.Generator().manual_seed(s))[0].to(DT), f"prior-sample-{s}"
    if prior_name == "gmm-digits":
        idx, images = _digits_test()
        i = idx[(32 * PRESET_INDEX[preset] + j) % len(idx)]
        return pixel_to_model(torch.from_numpy(images[i] / 16.0)).reshape(1, 8, 8).to(DT), f"digits{i:04d}"
    if prior_name == "gmm-patches":
        return heldout_patch(prior, s), f"heldout-crop-{s}"
    raise ValueError(f"no test images declared for prior {prior_name!r}")
