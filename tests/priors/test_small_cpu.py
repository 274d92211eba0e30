"""Small CPU prior: architecture, loading errors, training script, committed weights + table."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from invbench.priors import PriorError
from invbench.priors.small_cpu import DEFAULT_WEIGHTS
from invbench.priors.small_unet import build_small_unet

from invbench import priors

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_unet_size_and_time_input():
    net = build_small_unet().eval()
    n = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= n <= 2_000_000
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.normal_(0, 0.05)
        x = torch.randn(2, 3, 32, 32)
        a = net(x, torch.tensor([10.0, 10.0]))
        b = net(x, torch.tensor(10.0))  # 0-d timestep is broadcast
        c = net(x, torch.tensor([10.5, 10.5]))  # continuous timesteps change the output
    assert a.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_missing_weights_message(tmp_path):
    with pytest.raises(PriorError, match="small-cpu weights not found.*train_small_prior.py"):
        priors.build("small-cpu", checkpoint=tmp_path / "none.pt")


def test_wrong_layout_named(tmp_path):
    sd = build_small_unet().state_dict()
    sd.pop("conv_out.bias")
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(PriorError, match=r"w\.pt does not match small-cpu.*1 missing: conv_out\.bias"):
        priors.build("small-cpu", checkpoint=tmp_path / "w.pt")


@pytest.mark.slow  # trains a few steps in subprocesses (~14 s)
def test_training_script_checkpoints_resume_exactly_and_load(tmp_path):
    train = _script("train_small_prior")
    common = ["--batch", "2", "--seed", "3", "--log-every", "1", "--ckpt-every", "2"]
    train.main(["--steps", "4", "--out", str(tmp_path / "a"), "--export", str(tmp_path / "a.pt"), *common])
    train.main(["--steps", "2", "--out", str(tmp_path / "b"), *common])
    train.main(["--steps", "4", "--out", str(tmp_path / "b"), "--resume", *common])
    ea, eb = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b" / "ema.pt")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert all(v.dtype == torch.float32 for v in ea.values() if v.is_floating_point())
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "step 4 loss" in log and "# done step 4" in log
    p = priors.build("small-cpu", checkpoint=tmp_path / "a.pt")
    assert p.image_shape == (3, 32, 32) and p.sigmas.numel() == 1000


needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(),
                                   reason=f"{DEFAULT_WEIGHTS} not trained/committed yet")


@needs_weights
def test_committed_weights_load_and_denoise():
    p = priors.build("small-cpu")
    x = torch.zeros(1, 3, 32, 32)
    d = p.denoise(x, 0.5)
    assert d.shape == x.shape and torch.isfinite(d).all()


@needs_weights
def test_documented_denoising_table_is_reproduced():
    ev = _script("eval_small_prior")
    table = json.loads(ev.TABLE_JSON.read_text())
    # the Markdown table in the docs is the one generated from the JSON
    assert ev.markdown(table) in ev.DOC.read_text()
    from invbench.bench import bundled

    k = 4
    x = bundled.heldout_crops(k, 32, seed=0)
    p = priors.build("small-cpu")
    for j, row in enumerate(table["rows"]):
        s = row["pixel_sigma"]
        y = ev.noisy(x, j, s)
        np.testing.assert_allclose(ev.psnr(y, x), row["psnr_noisy"][:k], atol=0.01)
        np.testing.assert_allclose(ev.psnr(ev.blur(y, row["blur_std"]), x), row["psnr_blur"][:k], atol=0.01)
        np.testing.assert_allclose(ev.psnr(ev.prior_denoise(p, y, s), x), row["psnr_prior"][:k], atol=0.05)
        # the acceptance claim: clearly better than the tuned Gaussian-smoothing baseline
        assert np.mean(row["psnr_prior"]) > np.mean(row["psnr_blur"]) + 0.5
