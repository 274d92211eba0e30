"""Every preset declares its state (``Operator.state``): equal inputs give equal states, other
masks, kernels or parameters give other states, and equal states compute the same operator.

The harness batches images only while their operators have equal states and records a hash of
each task's operator state, so a state that missed a defining input would batch different
operators together, and one that held a derived quantity would refuse a legitimate resume."""

from __future__ import annotations

import pytest
import torch
from invbench.operators.base import same_operator

from invbench import operators

SHAPE = (3, 16, 16)

# per preset: how to build a *different* operator of the same preset — another generator seed
# (presets with random parts) or other parameters. A new preset adds its line here.
VARIANT: dict[str, dict] = {
    "inpaint_box": {"seed": 2},
    "inpaint_random": {"seed": 2},
    "inpaint_half": {"side": "upper"},
    "deblur_motion": {"seed": 2},
    "deblur_gauss": {"std": 2.0},
    "deblur_uniform": {"padding": "reflect"},
    "sr4_avgpool": {"factor": 2},
    "sr4_bicubic": {"svd_threshold": 0.1},
    "colorize": {"shape": (2, 16, 16)},
    "denoise": {"shape": (3, 8, 8)},
    "phase_retrieval": {"oversample": 1.0},
}
_ALLOWED = (torch.Tensor, bool, int, float, str, type(None))


def _build(name: str, seed: int = 1, shape=SHAPE, **kw):
    g = torch.Generator().manual_seed(seed)
    return operators.build(name, image_shape=shape, generator=g, **kw)


def _leaves(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str)
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def test_every_preset_has_a_variant():
    assert set(VARIANT) == set(operators.PRESETS)


@pytest.mark.parametrize("name", operators.PRESETS)
def test_state_is_declared_data(name):
    state = _build(name).state()
    assert isinstance(state, dict) and state["in_shape"] == SHAPE
    bad = [type(v).__name__ for v in _leaves(state) if not isinstance(v, _ALLOWED)]
    assert not bad, f"{name}: state holds {bad} (only tensors, numbers, strings)"


@pytest.mark.parametrize("name", operators.PRESETS)
def test_equal_inputs_equal_states_and_same_forward(name):
    a, b = _build(name), _build(name)
    assert same_operator(a, b) and same_operator(b, a)
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(a.forward(x), b.forward(x))
    assert same_operator(a.to(dtype=torch.float32), b.to(dtype=torch.float32))


@pytest.mark.parametrize("name", operators.PRESETS)
def test_other_inputs_other_states(name):
    kw = dict(VARIANT[name])
    other = _build(name, seed=kw.pop("seed", 1), shape=kw.pop("shape", SHAPE), **kw)
    base = _build(name)
    assert not same_operator(base, other)
    if other.in_shape == base.in_shape and other.out_shape == base.out_shape:
        x = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        changes_forward = not torch.equal(base.forward(x), other.forward(x))
        # an svd_threshold changes what solvers read from params, not forward
        assert changes_forward or base.params != other.params


def test_dtype_and_type_are_part_of_equality():
    a = _build("inpaint_random")
    assert not same_operator(a, _build("inpaint_random").to(dtype=torch.float32))
    assert not same_operator(_build("colorize"), _build("denoise"))


def test_an_operator_without_state_says_so():
    class Bare(operators.Operator):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match="declares no state"):
        Bare((1, 2, 2), (1, 2, 2)).state()
