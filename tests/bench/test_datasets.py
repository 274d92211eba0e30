"""Datasets: manifests, validation errors naming the file, fixed order, preprocessing, lists."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from invbench.bench import datasets as D
from invbench.bench.datasets import DatasetError
from PIL import Image


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _rgb(seed: int, h: int = 12, w: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    arrs = {"b.png": _rgb(1), "a.png": _rgb(2), "sub/c.png": _rgb(3)}
    for rel, a in arrs.items():
        _png(root / rel, a)
    (root / "MANIFEST.sha256").write_text(D.make_manifest(root))
    return root, arrs


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_make_manifest_and_folder_roundtrip(folder, tmp_path):
    root, arrs = folder
    text = (root / "MANIFEST.sha256").read_text()
    entries = D.parse_manifest(text)
    assert entries == [(rel, _sha(root / rel)) for rel in ("a.png", "b.png", "sub/c.png")]
    ds = D.build({"type": "folder", "root": str(root)}, tmp_path)
    assert ds.ids == ["a", "b", "sub__c"] and len(ds) == 3 and ds.image_shape == (3, 12, 12)
    x = ds.get(2)
    assert x.dtype == torch.float64
    assert torch.equal(x, torch.from_numpy(arrs["sub/c.png"].transpose(2, 0, 1) / 255.0))
    src = ds.source()
    assert src["type"] == "folder" and src["manifest_sha256"] == _sha(root / "MANIFEST.sha256") and src["count"] == 3
    # the manifest order is the dataset order; limit keeps the first entries
    (root / "rev.txt").write_text("\n".join(reversed(text.strip().splitlines()[1:])) + "\n")
    rev = D.build({"type": "folder", "root": str(root), "manifest": str(root / "rev.txt"), "limit": 2}, tmp_path)
    assert rev.ids == ["sub__c", "b"]
    assert torch.equal(rev.get(1), ds.get(1))


def test_manifest_hash_mismatch_names_the_file(folder, tmp_path):
    root, _ = folder
    _png(root / "b.png", _rgb(99))
    with pytest.raises(DatasetError, match=r"^b.png: sha256 mismatch"):
        D.build({"type": "folder", "root": str(root)}, tmp_path)


def test_missing_file_and_escaping_paths(folder, tmp_path):
    root, _ = folder
    (root / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"^a.png: file not found"):
        D.build({"type": "folder", "root": str(root)}, tmp_path)
    outside = _png(tmp_path / "outside.png", _rgb(5))
    for rel in ("../outside.png", str(outside)):
        (root / "m.txt").write_text(f"{rel} {_sha(outside)}\n")
        with pytest.raises(DatasetError, match="escapes the dataset root|absolute path"):
            D.build({"type": "folder", "root": str(root), "manifest": str(root / "m.txt")}, tmp_path)
    (root / "link.png").symlink_to(outside)
    (root / "m.txt").write_text(f"link.png {_sha(outside)}\n")
    with pytest.raises(DatasetError, match="link.png: path escapes"):
        D.build({"type": "folder", "root": str(root), "manifest": str(root / "m.txt")}, tmp_path)


def _one_file_dataset(root: Path, name: str, tmp_path: Path, **extra):
    (root / "m.txt").write_text(f"{name} {_sha(root / name)}\n")
    return D.build({"type": "folder", "root": str(root), "manifest": str(root / "m.txt"), **extra}, tmp_path)


def test_corrupt_image_wrong_channels_nan_and_range(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=r"^bad.png: unreadable or corrupt image"):
        _one_file_dataset(root, "bad.png", tmp_path)
    _png(root / "gray.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"^gray.png: has 1 channels .* expected 3"):
        _one_file_dataset(root, "gray.png", tmp_path)
    Image.fromarray(np.zeros((8, 8, 4), dtype=np.uint8)).save(root / "rgba.png")
    with pytest.raises(DatasetError, match=r"^rgba.png: has 4 channels"):
        _one_file_dataset(root, "rgba.png", tmp_path)
    # declared conversion (the DPS/DDRM loaders' convert('RGB')) accepts the grayscale file
    ds = _one_file_dataset(root, "gray.png", tmp_path, to_rgb=True)
    assert ds.image_shape == (3, 8, 8)
    a = np.full((3, 4, 4), 0.5)
    a[1, 2, 3] = np.nan
    np.save(root / "nan.npy", a)
    with pytest.raises(DatasetError, match=r"^nan.npy: contains NaN or Inf"):
        _one_file_dataset(root, "nan.npy", tmp_path)
    np.save(root / "big.npy", np.full((3, 4, 4), 1.5))
    with pytest.raises(DatasetError, match=r"^big.npy: values outside \[0, 1\]"):
        _one_file_dataset(root, "big.npy", tmp_path)
    np.save(root / "ok.npy", np.full((3, 4, 4), 0.25))
    assert torch.all(_one_file_dataset(root, "ok.npy", tmp_path).get(0) == 0.25)
    # different image sizes without crop/resize
    _png(root / "s1.png", _rgb(1, 8, 8))
    _png(root / "s2.png", _rgb(2, 9, 9))
    (root / "m2.txt").write_text(f"s1.png {_sha(root / 's1.png')}\ns2.png {_sha(root / 's2.png')}\n")
    with pytest.raises(DatasetError, match="s2.png: image shape"):
        D.build({"type": "folder", "root": str(root), "manifest": str(root / "m2.txt")}, tmp_path)


def test_crop_and_resize_match_pil(tmp_path):
    root = tmp_path / "r"
    arr = _rgb(7, 20, 30)
    _png(root / "x.png", arr)
    ds = _one_file_dataset(root, "x.png", tmp_path, crop="center", resize=10)
    ref = Image.fromarray(arr).crop((5, 0, 25, 20)).resize((10, 10), Image.BICUBIC)
    assert torch.equal(ds.get(0), torch.from_numpy(np.asarray(ref).transpose(2, 0, 1) / 255.0))
    assert ds.source()["crop"] == "center" and ds.source()["resize"] == 10
    ds2 = _one_file_dataset(root, "x.png", tmp_path, crop=8)
    assert torch.equal(ds2.get(0), torch.from_numpy(arr[6:14, 11:19].transpose(2, 0, 1) / 255.0))


def test_unknown_fields_and_types_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown field.*rooot"):
        D.build({"type": "folder", "rooot": "x"}, tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset type"):
        D.build({"type": "folderz"}, tmp_path)
    with pytest.raises(DatasetError, match="limit"):
        D.build({"type": "digits", "limit": 0}, tmp_path)
    (tmp_path / "m.txt").write_text("a.png nothex\n")
    with pytest.raises(DatasetError, match="m.txt:1: expected"):
        D.parse_manifest((tmp_path / "m.txt").read_text(), str(tmp_path / "m.txt"))


def test_named_lists_content():
    ffhq = D.read_name_list(D.NAMED_LISTS["ffhq1k"])
    assert ffhq == [f"{i:05d}.png" for i in range(1000)]
    text = D.NAMED_LISTS["imagenet1k"].read_text()
    body = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    lines = body.splitlines()
    assert len(lines) == 1000 and len({ln.split()[0] for ln in lines}) == 1000
    assert [int(ln.split()[1]) for ln in lines] == list(range(1000))
    assert all(ln.startswith("ILSVRC2012_val_000") and ln.split()[0].endswith(".JPEG") for ln in lines)
    # the header states the digest of the verbatim lines
    assert hashlib.sha256(body.encode()).hexdigest() in text


def test_list_dataset_resolves_and_reports_missing(tmp_path):
    root = tmp_path / "ffhq"
    for i in range(3):
        _png(root / "00000" / f"{i:05d}.png", _rgb(i, 16, 16))  # NVlabs layout: folder 00000/
    ds = D.build({"type": "list", "list": "ffhq1k", "root": str(root), "limit": 3, "resize": 8}, tmp_path)
    assert ds.ids == ["00000", "00001", "00002"] and ds.image_shape == (3, 8, 8)
    assert ds.source()["list"] == "ffhq1k" and ds.source()["resize_filter"] == "bicubic"
    with pytest.raises(DatasetError, match=r"list 'ffhq1k': 7 of 10 images missing .*first: 00003.png"):
        D.build({"type": "list", "list": "ffhq1k", "root": str(root), "limit": 10}, tmp_path)
    # a manifest pins the files
    (root / "MANIFEST").write_text(D.make_manifest(root))
    ok = D.build({"type": "list", "list": "ffhq1k", "root": str(root), "limit": 3, "manifest": str(root / "MANIFEST")},
                 tmp_path)
    assert len(ok) == 3
    _png(root / "00000" / "00001.png", _rgb(50, 16, 16))
    with pytest.raises(DatasetError, match="00001.*sha256 mismatch"):
        D.build({"type": "list", "list": "ffhq1k", "root": str(root), "limit": 3, "manifest": str(root / "MANIFEST")},
                tmp_path)


def test_digits_split_and_values(tmp_path):
    from sklearn.datasets import load_digits

    test = D.digits_split_indices("test")
    val = D.digits_split_indices("validation")
    train = D.digits_split_indices("train")
    assert set(test).isdisjoint(val) and set(train).isdisjoint(set(test) | set(val))
    assert len(test) + len(val) + len(train) == 1797 and test[:3] == [1600, 1601, 1602]
    # the gmm-digits prior is fitted on the train split only (scripts/fit_gmm.py: images 0..1499)
    assert train == list(range(1500))
    ds = D.build({"type": "digits", "split": "test", "limit": 4}, tmp_path)
    ref = load_digits().images
    assert ds.image_shape == (1, 8, 8) and ds.ids == ["digits1600", "digits1601", "digits1602", "digits1603"]
    assert torch.equal(ds.get(1)[0], torch.from_numpy(ref[1601] / 16.0))
    assert ds.source()["split"] == "test"


def test_bundled_dataset(tmp_path):
    bundled = pytest.importorskip("invbench.bench.bundled")
    ds = D.build({"type": "bundled", "n": 3, "size": 16, "seed": 1}, tmp_path)
    assert ds.image_shape == (3, 16, 16) and len(ds) == 3
    assert torch.allclose(ds.get(2), bundled.heldout_crops(3, size=16, seed=1, split="test")[2].double())
    assert ds.source()["split"] == "test"


def test_gmm_samples_dataset(tmp_path, monkeypatch):
    gmm = pytest.importorskip("invbench.priors.gmm")
    from invbench import priors

    name = "_test-gmm-ds"
    if name not in priors.names():
        d = 4
        priors.register(name)(
            lambda **kw: gmm.GaussianMixturePrior([1.0], torch.zeros(1, d), 4.0 * torch.eye(d).unsqueeze(0), (1, 2, 2))
        )
    ds = D.build({"type": "gmm_samples", "prior": name, "n": 50, "seed": 3}, tmp_path)
    ds2 = D.build({"type": "gmm_samples", "prior": name, "n": 50, "seed": 3}, tmp_path)
    assert ds.synthetic and ds.source()["synthetic"] is True
    assert torch.equal(ds.get(7), ds2.get(7))
    allx = torch.stack([ds.get(i) for i in range(len(ds))])
    assert allx.min() < 0 or allx.max() > 1  # std 2 in model space: unclipped values leave [0, 1]
