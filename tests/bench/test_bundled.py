"""Bundled natural images: pinned data, disjoint split, held-out crops come from held-out images."""

import numpy as np
import pytest
import torch
from invbench.bench import bundled


def test_manifest_matches_installed_package_data():
    bundled.verify_manifest()  # raises BundledDataError naming the image if anything changed
    assert set(bundled.MANIFEST) == set(bundled.NAMES)


def test_manifest_detects_a_change(monkeypatch):
    name = bundled.NAMES[0]
    shape, _ = bundled.MANIFEST[name]
    monkeypatch.setitem(bundled.MANIFEST, name, (shape, "0" * 64))
    with pytest.raises(bundled.BundledDataError, match=name):
        bundled.verify_manifest()


def test_split_is_disjoint_and_complete():
    assert set(bundled.TRAIN).isdisjoint(bundled.HELDOUT)
    assert set(bundled.TRAIN) | set(bundled.HELDOUT) == set(bundled.NAMES)
    assert len(bundled.HELDOUT) >= 2


def _locate(crop: np.ndarray, images) -> list[int]:
    """Indices of images containing ``crop`` exactly somewhere."""
    hits = []
    for k, img in enumerate(images):
        _, h, w = img.shape
        s = crop.shape[-1]
        cand = np.argwhere(np.all(img[:, : h - s + 1, : w - s + 1] == crop[:, :1, :1], axis=0))
        if any(np.array_equal(img[:, r : r + s, c : c + s], crop) for r, c in cand):
            hits.append(k)
    return hits


def test_heldout_crops_are_deterministic_and_come_only_from_heldout_images():
    x = bundled.heldout_crops(6, 32, seed=0)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    torch.testing.assert_close(bundled.heldout_crops(3, 32, seed=0), x[:3], rtol=0, atol=0)
    assert not torch.equal(bundled.heldout_crops(3, 32, seed=1), x[:3])
    held, train = bundled.heldout_images(), bundled.train_images()
    for crop in x.numpy()[:3]:
        assert _locate(crop, held), "held-out crop not found in a held-out image"
        assert not _locate(crop, train), "held-out crop found in a training image"


def test_half_scale_is_block_mean():
    full, half = bundled.load_image("coins", 1), bundled.load_image("coins", 2)
    assert half.shape == (3, full.shape[1] // 2, full.shape[2] // 2)
    np.testing.assert_allclose(half[:, 3, 5], full[:, 6:8, 10:12].mean(axis=(1, 2)), rtol=1e-6)


def test_solver_splits_partition_the_heldout_images():
    from invbench.bench import bundled as b

    test, val = set(b.HELDOUT_SPLITS["test"]), set(b.HELDOUT_SPLITS["validation"])
    assert test.isdisjoint(val) and test | val == set(b.HELDOUT) == set(b.HELDOUT_SPLITS["all"])
    assert test.isdisjoint(b.TRAIN) and val.isdisjoint(b.TRAIN)
    # crops of one split are never crops of an image of the other split
    vimgs = b.heldout_images("validation")
    for crop in b.heldout_crops(4, 32, seed=3, split="test").numpy():
        for img in vimgs:
            win = np.lib.stride_tricks.sliding_window_view(img, crop.shape)
            # every window whose top-left pixel matches the crop's, compared in full
            first = np.all(win[..., 0, 0] == crop[:, 0, 0], axis=-1)
            assert not any(np.array_equal(win[idx], crop) for idx in zip(*np.nonzero(first), strict=True))


def test_heldout_crop_sources_say_where_each_crop_was_cut():
    crops = bundled.heldout_crops(24, 32, 0, "test")
    for i, (name, scale, r, c) in enumerate(bundled.heldout_crop_sources(24, 32, 0, "test")):
        assert name in bundled.HELDOUT_SPLITS["test"] and scale in bundled.SCALES
        img = torch.as_tensor(bundled.load_image(name, scale))
        assert torch.equal(crops[i], img[:, r : r + 32, c : c + 32].to(crops.dtype))
