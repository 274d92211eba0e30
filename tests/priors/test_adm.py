"""ADM checkpoints: stand-in state dicts with the exact DiffUNet layouts (built here, never
committed) load through priors.build and agree with deepinv's DiffUNet; bad files fail clearly."""

import pickle

import pytest
import torch
from invbench.priors import PriorError
from invbench.priors.adm import SCHEDULE_BUFFERS
from invbench.priors.checkpoint import sha256_file

from invbench import priors


class NotATensor:  # a custom class: torch.load(weights_only=True) must refuse it
    def __reduce__(self):
        return (print, ("executed code from a checkpoint",))


def _random_diffunet(large: bool, seed: int = 0):
    from deepinv.models import DiffUNet

    torch.manual_seed(seed)
    net = DiffUNet(in_channels=3, out_channels=3, large_model=large, pretrained=None).eval()
    with torch.no_grad():  # the output conv is zero-initialised: give it weights
        for p in net.out.parameters():
            p.normal_(0, 0.02)
    return net


def _shape_only_state_dict(large: bool) -> dict:
    """The exact key/shape layout of a checkpoint with stride-0 tensors (a file of a few KB)."""
    from invbench.priors.adm import build_diffunet

    meta = build_diffunet(large, device="meta")
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in _checkpoint_layout(meta).items()}


@pytest.fixture(scope="module")
def ffhq_layout_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("adm_layout") / "ffhq_layout.pt"
    sd = _shape_only_state_dict(large=False)
    assert len(sd) == 362  # key count of DPS ffhq_10m.pt (reference/offline-facts.md §3)
    torch.save(sd, path)
    assert path.stat().st_size < 5_000_000
    return path


def _checkpoint_layout(net) -> dict:
    """The original checkpoints' layout: DiffUNet's state dict without deepinv's two schedule
    buffers (registered after loading, absent from ffhq_10m.pt / 256x256_diffusion_uncond.pt)."""
    return {k: v for k, v in net.state_dict().items() if k not in SCHEDULE_BUFFERS}


@pytest.fixture(scope="module")
def ffhq_file(tmp_path_factory):
    net = _random_diffunet(large=False)
    path = tmp_path_factory.mktemp("adm") / "ffhq_standin.pt"
    sd = _checkpoint_layout(net)
    assert len(sd) == 362  # key count of DPS ffhq_10m.pt (reference/offline-facts.md §3)
    torch.save(sd, path)
    return net, path


def _check_against_deepinv(prior, ref, size: int, t: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, size, size, generator=g)
    sigma = float(prior.sigmas[t])
    with torch.no_grad():
        raw = ref(x / (1 + sigma**2) ** 0.5, torch.full((2,), t), type_t="timestep")
        d, v = prior.denoise_with_variance(x, sigma)
        d2 = prior.denoise(x, sigma)
    assert raw.shape[1] == 6 and raw[:, :3].abs().max() > 0
    torch.testing.assert_close(d, x - sigma * raw[:, :3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, raw[:, 3:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d2, d)


def test_ffhq_standin_loads_and_matches_deepinv(ffhq_file):
    ref, path = ffhq_file
    p = priors.build("adm-ffhq", checkpoint=path)
    assert p.image_shape == (3, 256, 256) and "learned_variance" in p.capabilities
    assert p.sigmas.numel() == 1000 and p.sigma_min == pytest.approx(0.0100005, rel=1e-5)
    _check_against_deepinv(p, ref, size=32, t=250)


def test_ffhq_standin_agrees_with_deepinv_noise_level_denoiser(ffhq_file):
    """deepinv's own VP-to-denoiser conversion (``type_t="noise_level"``: pixel-space input,
    pixel-unit sigma, nearest training timestep, output clamped) is an independent reference
    for our adapter at a training sigma."""
    from invbench.operators.conventions import model_to_pixel, pixel_to_model

    ref, path = ffhq_file
    p = priors.build("adm-ffhq", checkpoint=path)
    sigma = float(p.sigmas[120])  # model units
    g = torch.Generator().manual_seed(5)
    x_pix = torch.rand(2, 3, 32, 32, generator=g) + 0.5 * sigma * torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        want = ref(x_pix, torch.full((2,), sigma / 2), type_t="noise_level")
        got = model_to_pixel(p.denoise(pixel_to_model(x_pix), sigma).clamp(-1, 1))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_state_dict_saved_from_deepinv_with_schedule_buffers_loads(tmp_path, ffhq_file):
    ref, _ = ffhq_file
    path = tmp_path / "deepinv_saved.pt"
    torch.save(ref.state_dict(), path)  # 364 keys: + sqrt_1m_alphas_cumprod, sqrt_alphas_cumprod
    p = priors.build("adm-ffhq", checkpoint=path)
    _check_against_deepinv(p, ref, size=32, t=40)


def test_sha256_pinning(ffhq_layout_file):
    path = ffhq_layout_file
    digest = sha256_file(path)
    priors.build("adm-ffhq", checkpoint=path, sha256=digest)
    with pytest.raises(PriorError, match="sha256"):
        priors.build("adm-ffhq", checkpoint=path, sha256="0" * 64)


def test_ffhq_layout_as_imagenet_is_a_clear_error(ffhq_layout_file):
    path = ffhq_layout_file
    with pytest.raises(PriorError) as e:
        priors.build("adm-imagenet", checkpoint=path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "large_model=True" in msg
    assert "missing" in msg and "shape mismatch" in msg


def test_missing_key_named(tmp_path):
    sd = _shape_only_state_dict(large=False)
    dropped = "out.2.weight"
    assert dropped in sd
    del sd[dropped]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(sd, path)
    with pytest.raises(PriorError, match=r"1 missing: out\.2\.weight.*1 unexpected: extra\.weight"):
        priors.build("adm-ffhq", checkpoint=path)


def test_missing_file_and_no_checkpoint(tmp_path):
    with pytest.raises(PriorError, match="not found.*nope.pt.*invbench fetch adm-ffhq"):
        priors.build("adm-ffhq", checkpoint=tmp_path / "nope.pt")
    with pytest.raises(PriorError, match="checkpoint=PATH.*invbench fetch adm-imagenet"):
        priors.build("adm-imagenet")


def test_truncated_file(tmp_path):
    path = tmp_path / "full.pt"
    torch.save({"a": torch.randn(1000), "b": torch.randn(50, 50)}, path)
    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(PriorError, match="truncated.pt.*weights_only=True"):
        priors.build("adm-ffhq", checkpoint=bad)


def test_pickle_with_custom_class_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, path)
    with pytest.raises(PriorError, match="evil.pt.*weights_only=True"):
        priors.build("adm-ffhq", checkpoint=path)
    assert "executed code" not in capsys.readouterr().out
    # a plain pickle (not a torch zip file) of a non-dict is refused too
    path2 = tmp_path / "list.pt"
    with open(path2, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(PriorError, match="list.pt"):
        priors.build("adm-ffhq", checkpoint=path2)


@pytest.mark.slow
def test_imagenet_standin_loads_and_matches_deepinv(tmp_path):
    ref = _random_diffunet(large=True, seed=2)
    path = tmp_path / "imagenet_standin.pt"
    sd = _checkpoint_layout(ref)
    assert len(sd) == 566
    torch.save(sd, path)
    p = priors.build("adm-imagenet", checkpoint=path)
    _check_against_deepinv(p, ref, size=32, t=600)



def test_imagenet_layout_as_ffhq_is_a_clear_error(tmp_path):
    path = tmp_path / "imagenet_layout.pt"
    sd = _shape_only_state_dict(large=True)
    assert len(sd) == 566  # key count of 256x256_diffusion_uncond.pt (offline-facts.md §3)
    torch.save(sd, path)
    priors.build("adm-imagenet", checkpoint=path)  # the right layout loads
    with pytest.raises(PriorError, match="imagenet_layout.pt does not match adm-ffhq.*large_model=False"):
        priors.build("adm-ffhq", checkpoint=path)
