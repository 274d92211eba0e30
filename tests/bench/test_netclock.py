"""What a run records for machine-independent cost: network time per solve
(bench.cost.netclock.ClockedPrior), the device calibration (bench.cost.calibration), repeated timings
(``timing_repeats``) and the machine (CPU capability, model, threads) in the run's meta."""

from __future__ import annotations

import json

import pytest
import torch
from invbench.bench import config, cost, run, store
from invbench.bench.cost import calibration
from invbench.bench.cost.netclock import ClockedPrior

from invbench import priors
from tests.helpers import parts

parts.register()
torch.set_num_threads(1)


def _gmm():
    return priors.build("gmm-digits")


def test_clocked_prior_counts_and_clocks_forward_and_backward():
    p = ClockedPrior(_gmm())
    x = torch.randn(2, *p.image_shape)
    s = torch.full((2,), 0.5)
    with torch.no_grad():
        p.denoise(x, s)
    fwd_only = p.network_seconds()
    assert p.nfe == 1 and p.vjp == 0 and fwd_only > 0
    xr = x.clone().requires_grad_(True)
    d = p.denoise(xr, s)
    torch.autograd.grad(d.sum(), xr)
    assert p.nfe == 2 and p.vjp == 1
    assert p._bwd_s > 0 and p.network_seconds() > fwd_only
    # same values as the unwrapped prior: the clock does not touch the computation
    assert torch.equal(d.detach(), _gmm().denoise(x, s))
    p.reset()
    assert (p.nfe, p.vjp, p.network_seconds()) == (0, 0, 0.0)


def test_calibration_records_forward_and_backward_per_prior():
    class Broken:
        image_shape = (1, 8, 8)

        def denoise(self, x, s):
            raise ValueError("no network here")

    cal = calibration.calibrate({"g": ClockedPrior(_gmm()), "bad": Broken()}, 3, "cpu", torch.float32, reps=2)
    g = cal["g"]
    assert g["batch"] == 3 and g["t_forward_s"] > 0 and g["t_forward_backward_s"] > 0
    assert cal["bad"] == {"error": "ValueError: no network here"}


def test_machine_info_keys():
    mi = cost.machine_info("cpu")
    assert set(mi) == {"cpu_model", "cpu_capability", "gpu_name", "torch_threads", "cpu_count"}
    assert mi["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert mi["torch_threads"] == str(torch.get_num_threads()) and mi["gpu_name"] == ""


def test_run_records_network_time_repeats_calibration_and_machine(tmp_path):
    solvers_ = '[[solvers]]\nname = "dps"\noverrides = { steps = 4 }\n'
    text = parts.toml_config(solvers_=solvers_, limit=2, batch_size=2,
                             extra="timing_repeats = 3").replace('"_test-gauss"', '"gmm-digits"')
    exp = config.loads(text, base_dir=tmp_path)
    assert exp.timing_repeats == 3 and exp.resolved["timing_repeats"] == 3
    p = run.prepare(exp, tmp_path / "run")
    run.run(p, tmp_path / "run")
    df = store.load_results(tmp_path / "run")
    assert set(df.status) == {"ok"}
    assert (df.net_seconds > 0).all() and (df.net_seconds <= df.seconds).all()
    for _, r in df.iterrows():
        t = json.loads(r.timings)
        assert len(t["seconds"]) == 3 and len(t["net_seconds"]) == 3
        assert t["seconds"][0] == pytest.approx(r.seconds, rel=1e-5)
    # rows of one batched call share its timings (sr: deterministic operator, batched)
    sr = df[df.task == "sr"]
    assert sr.batch_size.iloc[0] == 2 and sr.timings.nunique() == 1
    meta = store.load_meta(tmp_path / "run")
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert meta["torch_threads"] == "1" and meta["timing_repeats"] == "3" and "cpu_model" in meta
    cal = json.loads(meta["calibration"])
    assert cal["gmm-digits"]["t_forward_s"] > 0 and cal["gmm-digits"]["batch"] == exp.batch_size


def test_timing_repeats_is_validated(tmp_path):
    with pytest.raises(config.ConfigError, match="timing_repeats"):
        config.loads(parts.toml_config(extra="timing_repeats = 0"), base_dir=tmp_path)
    # the default is left out of the resolved config: existing config hashes are unchanged
    assert "timing_repeats" not in config.loads(parts.toml_config(), base_dir=tmp_path).resolved
