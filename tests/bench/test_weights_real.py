"""The real LPIPS and FID weights, where ``invbench fetch`` has put them (skipped otherwise).

Neither lpips nor clean-fid publishes reference numbers for a fixed input in its sources or
tests, so these are consistency checks against each library's own pipeline on the same files:
our LPIPS (trunk loaded from the local file into ``pnet_rand`` slices) equals
``lpips.LPIPS(pretrained=True)`` built the library's way from the same torchvision file, and our
FID features equal ``cleanfid.fid.get_folder_features`` on the same images written as PNGs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from invbench.assets import weights as W

REAL = W.cache_dir()  # read at collection, before the suite's empty-folder fixture applies


def _real(name: str):
    loc = W.locate(name, [REAL])
    if not (loc.present and loc.verified):
        pytest.skip(f"{W.TABLE[name].filename} not fetched (invbench fetch {name})")
    return loc.path


def _images(n: int = 4, side: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, side // 8, side // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)


def test_lpips_alex_matches_the_library_built_its_own_way(tmp_path, monkeypatch):
    import lpips
    from invbench.bench.metrics import build

    path = _real("lpips")
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / path.name).symlink_to(path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("download attempted"))
    (ours,) = build(["lpips"], {"lpips": {"weights": str(path)}})
    assert ours.unavailable is None and ours.verified
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(pretrained=True, net="alex", version="0.1", verbose=False).eval()
    x = _images()
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    d = ours.distance(y, x)
    with torch.no_grad():
        d_ref = ref(y, x, normalize=True).reshape(-1).double()
    assert torch.allclose(d, d_ref, atol=1e-6, rtol=0), (d, d_ref)
    assert (d > 0).all() and torch.allclose(ours.distance(x, x), torch.zeros(len(x), dtype=torch.float64), atol=1e-7)


def test_fid_features_match_clean_fid_on_png_files(tmp_path):
    from cleanfid.fid import get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W
    from invbench.bench.metrics import build_set
    from invbench.bench.metrics.fid import to_uint8_hwc
    from PIL import Image

    path = _real("fid")
    (ours,) = build_set(["fid"], {"fid": {"inception_path": str(path)}})
    assert ours.unavailable is None and ours.verified
    x = _images(n=6)
    u8 = to_uint8_hwc(x)
    for i, im in enumerate(u8):
        Image.fromarray(im).save(tmp_path / f"{i:02d}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = InceptionV3W(str(path.parent), download=False, resize_inside=False).eval()
        ref = get_folder_features(str(tmp_path), model=model, num_workers=0, batch_size=6,
                                  device=torch.device("cpu"), mode="clean", verbose=False)
    feats = ours.features(torch.from_numpy(u8.transpose(0, 3, 1, 2).astype(np.float64) / 255.0))
    assert feats.shape == (6, 2048)
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)
