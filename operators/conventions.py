"""The suite's unit conventions, declared once (docs/design.md §2).

* Pixel space: images in [0, 1] (datasets, metrics, files).
* Model space: images in [-1, 1] (priors, operators, solvers): ``x_model = 2 x_pixel - 1``.
* Measurement noise: a task declares ``noise_sigma`` in pixel units; the standard deviation of
  the Gaussian noise added to a model-space measurement is ``sigma_y = 2 * noise_sigma``.

Nothing else in the code base rescales images or noise levels; every other module calls these.
"""

from __future__ import annotations

from torch import Tensor

PIXEL_RANGE = (0.0, 1.0)
MODEL_RANGE = (-1.0, 1.0)


def pixel_to_model(x: Tensor) -> Tensor:
    """Map pixel-space images in [0, 1] to model space [-1, 1]."""
    return 2.0 * x - 1.0


def model_to_pixel(x: Tensor) -> Tensor:
    """Map model-space images in [-1, 1] to pixel space [0, 1] (no clipping)."""
    return (x + 1.0) / 2.0


def noise_sigma_to_model(noise_sigma: float) -> float:
    """Pixel-unit measurement noise std -> model-space std ``sigma_y`` (factor 2)."""
    if noise_sigma < 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    return pixel_rms_to_model(noise_sigma)


def pixel_rms_to_model(rms: float) -> float:
    """A pixel-unit RMS error or standard deviation -> model units (factor 2, as for noise)."""
    return 2.0 * float(rms)


def model_sigma_to_pixel(sigma_y: float) -> float:
    """Model-space measurement noise std -> pixel units (inverse of ``noise_sigma_to_model``)."""
    return float(sigma_y) / 2.0


def minus_one_one_noise_to_pixel(sigma_pm1: float) -> float:
    """Noise stated on the [-1, 1] scale (DPS/DAPS/InverseBench convention) -> pixel units.

    DPS adds ``0.05 * N(0, I)`` to measurements of images scaled to [-1, 1]; that is 0.025 in
    pixel units.
    """
    return float(sigma_pm1) / 2.0
