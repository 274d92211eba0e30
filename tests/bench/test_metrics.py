"""Metric definitions against independent computations; LPIPS/FID weight handling offline."""

from __future__ import annotations

import math
import socket
import sys
import warnings
from pathlib import Path

import invbench.bench.metrics as M
import numpy as np
import pytest
import torch
from invbench.bench.metrics.image import consistency, mse, psnr, ssim
from invbench.bench.metrics.posterior import posterior_metrics
from invbench.bench.metrics.sliced_wasserstein import sliced_wasserstein, wasserstein_1d
from invbench.operators.conventions import model_to_pixel, pixel_to_model


# --------------------------------------------------------------------------- no network
class _NetworkUsed(RuntimeError):
    pass


_AUDIT = {"on": False}


def _hook(event, args):
    if _AUDIT["on"] and event in ("socket.connect", "socket.getaddrinfo", "urllib.Request", "http.client.connect"):
        raise _NetworkUsed(f"network access attempted: {event} {args!r}")


sys.addaudithook(_hook)  # audit hooks cannot be removed; it is inert unless switched on


@pytest.fixture
def no_network():
    _AUDIT["on"] = True
    try:
        yield
    finally:
        _AUDIT["on"] = False


def test_audit_hook_catches_network(no_network):
    with pytest.raises(_NetworkUsed):
        socket.getaddrinfo("example.com", 80)


# --------------------------------------------------------------------------- PSNR / SSIM / MSE
def test_psnr_formula_on_clipped_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64)
    xh = x + 0.1 * torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    got = psnr(xh, x)
    for i in range(3):
        e = np.mean((np.clip(xh[i].numpy(), 0, 1) - x[i].numpy()) ** 2)
        assert got[i].item() == pytest.approx(10 * math.log10(1 / e), rel=1e-12)
    # a constant offset of 0.1 on mid-grey images: MSE 0.01 -> 20 dB exactly
    assert psnr(torch.full((1, 1, 4, 4), 0.6), torch.full((1, 1, 4, 4), 0.5)).item() == pytest.approx(20.0, rel=1e-6)
    assert torch.isinf(psnr(x, x)).all()
    # mse is on the unclipped output, psnr on the clipped one
    y = torch.full((1, 1, 2, 2), 1.5, dtype=torch.float64)
    one = torch.ones_like(y)
    assert mse(y, one).item() == pytest.approx(0.25) and torch.isinf(psnr(y, one)).all()


def test_ssim_identity_and_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    xh = (x + 0.05 * torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    got = ssim(xh, x)
    for i in range(2):
        ref = structural_similarity(
            x[i].numpy().transpose(1, 2, 0), xh[i].numpy().transpose(1, 2, 0), data_range=1.0,
            channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert got[i].item() == pytest.approx(ref, abs=1e-12)
    assert (got < 1).all()
    # 8x8 digits: skimage default 7x7 window; <7 px: NaN
    d = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    ref = structural_similarity(d[0, 0].numpy(), (d[0, 0] * 0.9).numpy(), data_range=1.0)
    assert ssim(d * 0.9, d)[0].item() == pytest.approx(ref, abs=1e-12)
    assert torch.isnan(ssim(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))).all()


# --------------------------------------------------------------------------- consistency
def test_consistency_against_direct_computation():
    from invbench import operators

    g = torch.Generator().manual_seed(2)
    A = operators.build("inpaint_random", image_shape=(3, 16, 16), generator=g).to(dtype=torch.float64)
    x = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    sigma_y = 0.1
    y = A.measure(pixel_to_model(x), sigma_y, generator=g)
    xh = x + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = consistency(xh, y, A, sigma_y)
    r = (A.forward(2 * xh - 1) - y).reshape(2, -1)
    m = r.shape[1]
    assert torch.allclose(got, r.norm(dim=1) / (sigma_y * math.sqrt(m)), rtol=1e-12)
    # at the truth the normalised residual is the noise RMS / sigma_y ~ 1
    at_truth = consistency(x, y, A, sigma_y)
    assert ((at_truth - 1).abs() < 0.2).all()
    assert torch.isnan(consistency(xh, A.forward(pixel_to_model(x)), A, 0.0)).all()


def test_build_names_and_errors():
    ms = M.build(["psnr", "ssim", "mse", "consistency", "posterior"])
    cols = [c for m in ms for c in m.columns]
    assert cols == ["psnr", "ssim", "mse", "consistency", "dist_to_map", "rel_dist_to_map", "logpost_gap",
                    "err_post_mean"]
    assert all(m.unavailable is None for m in ms)
    with pytest.raises(M.MetricError, match="unknown metric"):
        M.build(["psnrr"])
    with pytest.raises(M.MetricError, match="bad option"):
        M.build(["lpips"], {"lpips": {"nett": "alex"}})


# --------------------------------------------------------------------------- exact posterior
class _GaussPosterior:
    """Exact posterior of x ~ N(0, s² I), y = a x + sigma n (per pixel): independent closed form."""

    def __init__(self, y, a, s, sigma):
        self.prec = 1 / s**2 + a**2 / sigma**2
        self.mu = (a / sigma**2) * y / self.prec

    def map(self):
        return self.mu.clone()

    def mean(self):
        return self.mu.clone()

    def log_prob(self, x):
        d = x[0].numel()
        q = ((x - self.mu) ** 2).flatten(1).sum(1) * self.prec
        return -0.5 * q + 0.5 * d * math.log(self.prec / (2 * math.pi))


def test_posterior_metrics_zero_at_exact_map_and_mean_and_direct_values():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    post = _GaussPosterior(y, a=0.5, s=0.7, sigma=0.2)
    at_map = posterior_metrics(model_to_pixel(post.map()), post)
    for c in ("dist_to_map", "rel_dist_to_map", "logpost_gap", "err_post_mean"):
        assert torch.allclose(at_map[c], torch.zeros(2, dtype=torch.float64), atol=1e-12), c
    xm = post.mu + 0.1 * torch.randn(post.mu.shape, generator=g, dtype=torch.float64)
    got = posterior_metrics(model_to_pixel(xm), post)
    diff = (xm - post.mu).flatten(1)
    assert torch.allclose(got["dist_to_map"], diff.norm(dim=1) / 4.0)
    assert torch.allclose(got["rel_dist_to_map"], diff.norm(dim=1) / post.mu.flatten(1).norm(dim=1))
    assert torch.allclose(got["logpost_gap"], 0.5 * post.prec * (diff**2).sum(1))  # Gaussian: quadratic gap
    # NaN columns without a posterior
    m = M.build(["posterior"])[0]
    ctx = M.MetricContext(x_hat=model_to_pixel(xm), x_true=model_to_pixel(xm), y=y, operator=None, sigma_y=0.2)
    assert all(torch.isnan(v).all() for v in m.compute(ctx).values())


def test_posterior_metrics_with_gmm_posterior():
    gmm = pytest.importorskip("invbench.priors.gmm")
    from invbench import operators

    g = torch.Generator().manual_seed(4)
    d = 16
    means = 0.5 * torch.randn(2, d, generator=g, dtype=torch.float64)
    Lc = 0.3 * torch.randn(2, d, d, generator=g, dtype=torch.float64)
    covs = Lc @ Lc.transpose(1, 2) + 0.05 * torch.eye(d, dtype=torch.float64)
    prior = gmm.GaussianMixturePrior(torch.tensor([0.4, 0.6]), means, covs, (1, 4, 4))
    A = operators.build("denoise", image_shape=(1, 4, 4), generator=g).to(dtype=torch.float64)
    x0 = prior.sample(1, generator=g)
    y = A.measure(x0, 0.3, generator=g)
    post = prior.posterior(A, y, 0.3)
    at_map = posterior_metrics(model_to_pixel(post.map()), post)
    assert at_map["dist_to_map"].abs().max() < 1e-12 and at_map["logpost_gap"].abs().max() < 1e-9
    at_mean = posterior_metrics(model_to_pixel(post.mean()), post)
    assert at_mean["err_post_mean"].abs().max() < 1e-12
    samples = post.sample(20, generator=g)[0]
    gaps = posterior_metrics(model_to_pixel(samples), _Repeat(post, 20))["logpost_gap"]
    assert (gaps > -1e-8).all()  # the MAP beats every sample


class _Repeat:
    """Posterior for B=1 evaluated on a batch of n candidates (broadcast map/mean/log_prob)."""

    def __init__(self, post, n):
        self.p, self.n = post, n

    def map(self):
        return self.p.map().expand(self.n, *self.p.map().shape[1:])

    def mean(self):
        return self.p.mean().expand(self.n, *self.p.mean().shape[1:])

    def log_prob(self, x):
        return self.p.log_prob(x.unsqueeze(0))[0]


# --------------------------------------------------------------------------- sliced Wasserstein
def test_wasserstein_1d_exact_against_scipy_and_sorting():
    from scipy.stats import wasserstein_distance

    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(11, 3, generator=g, dtype=torch.float64) + 0.5
    w1 = wasserstein_1d(x, y, p=1)
    for j in range(3):
        assert w1[j].item() == pytest.approx(wasserstein_distance(x[:, j].numpy(), y[:, j].numpy()), rel=1e-12)
    # equal sizes: W2^2 = mean squared difference of the sorted samples
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    ref = ((x.sort(0).values - z.sort(0).values) ** 2).mean(0)
    assert torch.allclose(wasserstein_1d(x, z, p=2), ref, rtol=1e-12)


def test_sliced_wasserstein_deterministic_and_shift():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(x, x, seed=3) == 0.0
    assert sliced_wasserstein(x, x + 1, seed=3) == sliced_wasserstein(x, x + 1, seed=3)
    # a shift c: W2 along theta is |<theta, c>|, so SW2^2 = mean_l <theta_l, c>^2 (same directions)
    c = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    th = torch.randn(64, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    th = th / th.norm(dim=1, keepdim=True)
    assert sliced_wasserstein(x, x + c, n_projections=64, seed=9) == pytest.approx(float(((th @ c) ** 2).mean().sqrt()),
                                                                                   rel=1e-10)
    assert sliced_wasserstein(x, x + c, seed=1) != sliced_wasserstein(x, x + c, seed=2)


def test_sliced_wasserstein_set_metric_against_posterior():
    sw = M.build_set(["sliced_wasserstein"], {"sliced_wasserstein": {"n_projections": 32, "n_reference": 200}})[0]
    assert sw.compute(torch.rand(4, 1, 2, 2))[0] is None  # no posterior -> unavailable

    class _Iso:
        def sample(self, n, generator=None):
            return torch.randn(1, n, 1, 2, 2, generator=generator, dtype=torch.float64)

    g = torch.Generator().manual_seed(7)
    good = model_to_pixel(torch.randn(300, 1, 2, 2, generator=g, dtype=torch.float64))
    bad = model_to_pixel(3 + torch.randn(300, 1, 2, 2, generator=g, dtype=torch.float64))
    v_good, note = sw.compute(good, posterior=_Iso())
    v_bad, _ = sw.compute(bad, posterior=_Iso())
    assert v_good < 0.3 and v_bad > 2.0
    assert sw.compute(good, posterior=_Iso())[0] == v_good and "exact posterior samples" in note


# --------------------------------------------------------------------------- LPIPS
def _squeeze_file(path: Path) -> Path:
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return path


def test_lpips_unavailable_without_weights(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    (m,) = M.build(["lpips"])
    assert m.unavailable and m.unavailable.startswith("unavailable:")
    assert "alexnet-owt-7be5be79.pth" in m.unavailable and m.status()["available"] == 0
    (v,) = M.build(["lpips"], {"lpips": {"net": "vgg"}})
    assert "vgg16-397923af.pth" in v.unavailable


def test_lpips_stand_in_trunk_is_flagged_unverified(tmp_path, monkeypatch, no_network):
    ck = tmp_path / "th" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    _squeeze_file(ck / "squeezenet1_1-b8a52dc0.pth")  # right name, random weights
    (m,) = M.build(["lpips"], {"lpips": {"net": "squeeze"}})
    assert m.unavailable.startswith("unavailable: trunk weights") and "do not match the official" in m.unavailable
    assert m.model is None and not m.verified


def test_lpips_loads_local_trunk_and_measures(tmp_path, no_network):
    import lpips
    import torchvision

    f = _squeeze_file(tmp_path / "squeezenet1_1-b8a52dc0.pth")
    (m,) = M.build(["lpips"], {"lpips": {"net": "squeeze", "weights": str(f), "allow_unverified": True}})
    assert m.unavailable is None and m.verified is False
    st = m.status()
    assert st["available"] == 1 and "UNVERIFIED" in st["note"] and "UNVERIFIED" in st["backbone"]
    assert "lpips 0.1.4" in m.backbone or "lpips " in m.backbone
    # the trunk parameters are exactly those of the file
    ref = torchvision.models.squeezenet1_1(weights=None)
    ref.load_state_dict(torch.load(f, weights_only=True))
    assert torch.equal(getattr(m.model.net.slice1, "0").weight, ref.features[0].weight)
    assert torch.equal(getattr(m.model.net.slice7, "12").expand3x3.weight, ref.features[12].expand3x3.weight)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 3, 32, 32, generator=g)
    xh = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ctx = M.MetricContext(x_hat=x, x_true=x, y=None, operator=None, sigma_y=0.1)
    assert torch.allclose(m.compute(ctx)["lpips"], torch.zeros(2, dtype=torch.float64), atol=1e-7)
    d = m.compute(M.MetricContext(x_hat=xh, x_true=x, y=None, operator=None, sigma_y=0.1))["lpips"]
    assert (d > 0).all() and d.dtype == torch.float64
    # agrees with an lpips model built directly on the same trunk and heads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        direct = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False)
    direct.net.load_state_dict(m.model.net.state_dict())
    assert torch.allclose(d.float(), direct(xh, x, normalize=True).flatten(), atol=1e-6)
    # grayscale input is repeated to three channels; too small images give NaN
    assert m.compute(M.MetricContext(x_hat=xh[:, :1], x_true=x[:, :1], y=None, operator=None,
                                     sigma_y=0.1))["lpips"].shape == (2,)
    assert torch.isnan(m.distance(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))).all()


# --------------------------------------------------------------------------- FID
class _TinyFeat(torch.nn.Module):
    """Deterministic small feature map (B, 3, 299, 299) in [0, 255] -> (B, 8)."""

    def forward(self, x):
        p = torch.nn.functional.adaptive_avg_pool2d(x / 255.0, 2).flatten(1)  # (B, 12)
        return torch.cat([p[:, :6], (p[:, 6:] ** 2)], 1)[:, :8].double()


def _stand_in_inception(path: Path) -> Path:
    """A TorchScript module with clean-fid's interface: ``.layers`` giving (B, 2048, 1, 1)."""

    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2048, 1)

        def forward(self, x):
            return self.conv(torch.nn.functional.adaptive_avg_pool2d(x, 1))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x, return_features: bool = False):
            return self.layers(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(Net()).save(str(path))
    return path


def test_fid_unavailable_without_file(tmp_path, no_network):
    (f,) = M.build_set(["fid"], {"fid": {"inception_path": str(tmp_path)}})
    assert f.unavailable.startswith("unavailable:") and "inception-2015-12-05.pt" in f.unavailable
    assert f.compute(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)) == (None, f.unavailable)


def test_fid_stand_in_file_unverified_and_loads_offline(tmp_path, no_network):
    _stand_in_inception(tmp_path / "inception-2015-12-05.pt")
    (f,) = M.build_set(["fid"], {"fid": {"inception_path": str(tmp_path)}})
    assert "unverified" in f.unavailable and f.sha256 in f.unavailable
    (u,) = M.build_set(["fid"], {"fid": {"inception_path": str(tmp_path), "allow_unverified": True}})
    assert u.unavailable is None and not u.verified and "UNVERIFIED" in u.status()["note"]
    feats = u.features(torch.rand(3, 3, 16, 16))
    assert feats.shape == (3, 2048)  # went through cleanfid's InceptionV3W wrapper
    # pinning the file's digest marks it verified (the user vouches for the file)
    (p,) = M.build_set(["fid"],
                       {"fid": {"inception_path": str(tmp_path / "inception-2015-12-05.pt"),
                                "inception_sha256": u.sha256}})
    assert p.unavailable is None and p.verified


def test_fid_pipeline_matches_clean_fid_on_png_folders(tmp_path, no_network):
    from cleanfid import fid as cfid
    from PIL import Image

    g = torch.Generator().manual_seed(10)
    a = torch.rand(6, 3, 24, 24, generator=g, dtype=torch.float64)
    b = (a * 0.7 + 0.1 * torch.rand(6, 3, 24, 24, generator=g, dtype=torch.float64)).clamp(0, 1)
    ext = _TinyFeat()
    (f,) = M.build_set(["fid"], {"fid": {"extractor": ext, "allow_unverified": True}})
    v_self, _ = f.compute(a, a)
    assert abs(v_self) < 1e-6
    v, note = f.compute(b, a)
    assert v > 1e-4 and note.startswith("UNVERIFIED") and "ground truth of the same split" in note
    for name, t in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        for i in range(t.shape[0]):
            arr = np.rint(t[i].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / name / f"{i}.png")
    ref = cfid.compute_fid(str(tmp_path / "b"), str(tmp_path / "a"), mode="clean", custom_feat_extractor=ext,
                           device=torch.device("cpu"), num_workers=0, verbose=False)
    assert v == pytest.approx(ref, rel=1e-6, abs=1e-9)
    (strict,) = M.build_set(["fid"], {"fid": {"extractor": ext}})
    assert strict.unavailable and strict.compute(b, a)[0] is None
