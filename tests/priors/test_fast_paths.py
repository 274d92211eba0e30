"""invbench.priors.fast_paths: every switch off reproduces the default outputs bitwise; bf16 autocast and
channels_last on CPU stay within the stated tolerances; no global state leaks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from invbench.priors import CountingPrior, PriorError, build
from invbench.priors.fast_paths import FastNet, FastPaths, _tf32_enabled, with_fast_paths
from invbench.priors.small_unet import SmallUNet
from invbench.priors.vp import VPPrior

from invbench import operators, solvers

# Tolerances stated in the module docstring / reports/perf/README.md (CPU, float32, sigma 0.5)
BF16_REL_L2 = 1e-2
BF16_MAX_ABS = 5e-2
CHANNELS_LAST_MAX_ABS = 1e-5


def _net(seed: int = 0, out_channels: int = 3) -> SmallUNet:
    torch.manual_seed(seed)
    net = SmallUNet(in_channels=3, base=16, mult=(1, 2), n_res=1)
    if out_channels != 3:
        net.conv_out = torch.nn.Conv2d(net.conv_out.in_channels, out_channels, 3, padding=1)
    with torch.no_grad():  # the output conv is zero-initialised: make ε non-trivial
        net.conv_out.weight.normal_(0, 0.05)
    return net.eval().requires_grad_(False)


def _prior(dtype=torch.float32, learned_variance: bool = False) -> VPPrior:
    net = _net(out_channels=6 if learned_variance else 3).to(dtype)
    return VPPrior(net, (3, 16, 16), learned_variance=learned_variance)


def _inputs(B: int = 2, dtype=torch.float32, sigma: float = 0.5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 3, 16, 16, generator=g, dtype=dtype), torch.full((B,), sigma, dtype=dtype)


OFF = {"autocast": None, "tf32": False, "channels_last": False, "compile": False}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_off_is_bitwise_default_forward_and_vjp(dtype):
    p = _prior(dtype)
    fp = with_fast_paths(p, FastPaths())
    assert isinstance(fp.net, FastNet) and fp is not p
    x, s = _inputs(dtype=dtype)
    with torch.no_grad():
        assert torch.equal(fp.denoise(x, s), p.denoise(x, s))
    v = torch.randn_like(x)
    grads = []
    for q in (p, fp):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(q.denoise(xr, s), xr, grad_outputs=v)
        grads.append(g)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("switch", sorted(OFF))
def test_each_switch_off_reproduces_default(switch):
    """A config naming the switch explicitly off (after a use with it on) equals the bare prior."""
    p = _prior()
    x, s = _inputs()
    with torch.no_grad():
        ref = p.denoise(x, s)
        on = {"autocast": "bf16", "tf32": True, "channels_last": True, "compile": True}[switch]
        kw = {"compile_backend": "eager"} if switch == "compile" else {}
        with_fast_paths(p, FastPaths(**{switch: on}, **kw)).denoise(x, s)  # must not modify p
        off = with_fast_paths(p, FastPaths(**{switch: OFF[switch]})).denoise(x, s)
        again = p.denoise(x, s)
    assert torch.equal(off, ref)
    assert torch.equal(again, ref)


def test_learned_variance_all_off_bitwise():
    p = _prior(learned_variance=True)
    fp = with_fast_paths(p, {})
    x, s = _inputs()
    with torch.no_grad():
        d0, v0 = p.denoise_with_variance(x, s)
        d1, v1 = fp.denoise_with_variance(x, s)
    assert torch.equal(d0, d1) and torch.equal(v0, v1)
    assert fp.capabilities == p.capabilities


def test_solver_output_bitwise_with_switches_off():
    p = _prior()
    A = operators.build("inpaint_random", (3, 16, 16), torch.Generator().manual_seed(0), ratio=0.5)
    x, _ = _inputs(B=1)
    y = A.measure(x.clamp(-1, 1), 0.1, generator=torch.Generator().manual_seed(2))
    outs = []
    for q in (p, with_fast_paths(p, FastPaths())):
        for name, ov in (("ddrm", {"steps": 3}), ("dps", {"steps": 3})):
            outs.append(solvers.build(name, **ov).solve(y, A, q, sigma_y=0.1,
                                                        generator=torch.Generator().manual_seed(3)))
    assert all(torch.equal(a, b) for a, b in zip(outs[:2], outs[2:], strict=True))


def test_bf16_autocast_cpu_within_tolerance():
    p = _prior()
    fp = with_fast_paths(p, FastPaths(autocast="bf16"))
    x, s = _inputs()
    with torch.no_grad():
        ref, d = p.denoise(x, s), fp.denoise(x, s)
    assert d.dtype == torch.float32
    err = d - ref
    assert 0 < float(err.norm() / ref.norm()) < BF16_REL_L2  # > 0: the switch does something
    assert float(err.abs().max()) < BF16_MAX_ABS
    # a VJP runs through the autocast graph and returns the input dtype
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fp.denoise(xr, s), xr, grad_outputs=torch.ones_like(x))
    assert g.dtype == torch.float32 and torch.isfinite(g).all()


def test_channels_last_cpu_within_tolerance_and_prior_untouched():
    p = _prior()
    w = p.net.conv_in.weight
    fp = with_fast_paths(p, FastPaths(channels_last=True))
    assert fp.net.net is not p.net  # a private copy in channels_last
    assert fp.net.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert p.net.conv_in.weight is w and w.is_contiguous()
    x, s = _inputs()
    with torch.no_grad():
        ref, d = p.denoise(x, s), fp.denoise(x, s)
    assert float((d - ref).abs().max()) < CHANNELS_LAST_MAX_ABS


def test_compile_eager_backend_matches():
    p = _prior()
    fp = with_fast_paths(p, FastPaths(compile=True, compile_backend="eager"))
    x, s = _inputs()
    with torch.no_grad():
        assert torch.allclose(fp.denoise(x, s), p.denoise(x, s), rtol=0, atol=1e-6)


def test_tf32_context_restores_flags_even_on_error():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with pytest.raises(RuntimeError), _tf32_enabled(torch.device("cuda")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        raise RuntimeError("boom")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    # CPU: a no-op, the exact default output
    p = _prior()
    x, s = _inputs()
    with torch.no_grad():
        assert torch.equal(with_fast_paths(p, FastPaths(tf32=True)).denoise(x, s), p.denoise(x, s))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_counting_prior_is_rewrapped_and_counts():
    cp = with_fast_paths(CountingPrior(_prior()), FastPaths(autocast="bf16"))
    assert isinstance(cp, CountingPrior)
    x, s = _inputs()
    xr = x.clone().requires_grad_(True)
    torch.autograd.grad(cp.denoise(xr, s).sum(), xr)
    assert (cp.nfe, cp.vjp) == (1, 1)


def test_bad_config_and_non_vp_prior():
    with pytest.raises(PriorError, match="unknown fast_paths key"):
        FastPaths.from_dict({"autocast": "bf16", "fp8": True})
    with pytest.raises(PriorError, match="autocast"):
        FastPaths(autocast="int8")
    with pytest.raises(PriorError, match="VP adapter"):
        with_fast_paths(build("gmm-digits"), FastPaths())
    assert FastPaths().label() == "default" and not FastPaths().any
    assert FastPaths(autocast="bf16", channels_last=True).label() == "bf16+channels_last"
    assert {f.name for f in dataclasses.fields(FastPaths)} >= set(OFF)
