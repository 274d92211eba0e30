"""Ready-made GMM priors: registry names, committed files (size, content vs. their metadata and
the data they were fitted to), synthetic-instance properties."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from invbench.priors import GaussianMixturePrior, PriorError
from invbench.priors.gmm_library import DATA_DIR, FITTED, synthetic_image_shape

from invbench import priors

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(FITTED))
def test_fitted_files_load_and_are_small(name):
    path = DATA_DIR / FITTED[name]
    assert path.stat().st_size < 2_000_000
    p = priors.build(name)
    assert isinstance(p, GaussianMixturePrior) and p.name == name
    assert p.image_shape == tuple(p.meta["image_shape"]) and p.K == p.meta["K"]
    assert p.means.dtype == torch.float64
    assert abs(p.weights.sum().item() - 1) < 1e-12
    assert p.eigvals.min().item() > 0.99 * p.meta["reg_covar_model_units2"]
    assert p.meta["converged"]


def test_digits_file_reproduces_recorded_heldout_likelihood():
    """The committed digits mixture scores the held-out digits (model space) exactly as sklearn
    did at fit time (up to the float32 storage of the covariances)."""
    from sklearn.datasets import load_digits

    p = priors.build("gmm-digits")
    X = 2.0 * load_digits().data[1500:] / 16.0 - 1.0
    ll = p.log_prob(torch.from_numpy(X).reshape(-1, 1, 8, 8)).mean().item()
    assert abs(ll - p.meta["heldout_loglik_per_image"]) < 1e-2
    assert ll > 0  # far above e.g. an isotropic Gaussian fit; sanity of the scaling


def test_patches_file_reproduces_recorded_heldout_likelihood():
    spec = importlib.util.spec_from_file_location("fit_gmm", ROOT / "scripts" / "fit_gmm.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    p = priors.build("gmm-patches")
    X = 2.0 * fit.extract_patches(fit.HELDOUT_IMAGES, 2000, p.meta["heldout_patch_seed"], True) - 1.0
    ll = p.log_prob(torch.from_numpy(X).reshape(-1, 1, 8, 8)).mean().item()
    assert abs(ll - p.meta["heldout_loglik_per_image"]) < 1e-2


@pytest.mark.parametrize("d", [2, 10, 16, 64])
def test_synthetic_instances(d):
    p = priors.build(f"gmm-synthetic-{d}")
    q = priors.build(f"gmm-synthetic-{d}")
    assert torch.equal(p.means, q.means) and torch.equal(p.covariances, q.covariances)
    assert p.image_shape == synthetic_image_shape(d)
    assert p.image_shape == ((1, math.isqrt(d), math.isqrt(d)) if math.isqrt(d) ** 2 == d else (1, 1, d))
    assert p.K == 8
    # well separated: along the segment between any two means, both components' standard
    # deviations are far smaller than the distance
    m, C = p.means.numpy(), p.covariances.numpy()
    for i in range(8):
        for j in range(i + 1, 8):
            u = m[j] - m[i]
            dist = np.linalg.norm(u)
            u /= dist
            assert dist > 4 * (np.sqrt(u @ C[i] @ u) + np.sqrt(u @ C[j] @ u))
    # structured covariances: not diagonal
    off = C - np.einsum("kii->ki", C)[:, :, None] * np.eye(d)
    assert np.abs(off).max() > 1e-3


def test_synthetic_errors_and_unknown_names():
    for bad in ("gmm-synthetic-1", "gmm-synthetic-2048", "gmm-synthetic-abc"):
        with pytest.raises(PriorError):
            priors.build(bad)
    with pytest.raises(PriorError):
        priors.build("gmm-nonexistent")
