"""Random parts (masks, box positions, motion kernels) come only from the generator."""

import pytest
import torch
from invbench.operators.kernels import motion_kernel

from invbench import operators


def _op(name, shape=(3, 64, 64), seed=0, **kw):
    return operators.build(name, image_shape=shape, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("name,key", [("inpaint_box", "mask"), ("inpaint_random", "mask"), ("deblur_motion", "kernel")])
def test_equal_seeds_equal_operators_different_seeds_differ(name, key):
    torch.manual_seed(123)  # the global RNG must not matter
    a = _op(name, seed=5).params[key]
    torch.manual_seed(456)
    b = _op(name, seed=5).params[key]
    c = _op(name, seed=6).params[key]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_box_geometry_follows_dps():
    for seed in range(20):
        A = _op("inpaint_box", (3, 256, 256), seed=seed)
        t, b, l, r = A.params["box"]
        assert (b - t, r - l) == (128, 128)
        assert 16 <= t < 256 - 16 - 128 and 16 <= l < 256 - 16 - 128  # numpy randint(16, 112)
        m = A.params["mask"]
        assert float(m.sum()) == 256 * 256 - 128 * 128 and float(m[t:b, l:r].sum()) == 0
    tops = {_op("inpaint_box", (3, 256, 256), seed=s).params["box"][0] for s in range(20)}
    assert len(tops) > 10
    small = _op("inpaint_box", (3, 32, 32), seed=1).params
    assert small["hole"] == (16, 16) and small["margin"] == (2, 2)


def test_random_mask_ratio():
    ps = []
    for seed in range(20):
        A = _op("inpaint_random", (3, 32, 32), seed=seed)
        p = A.params["drop_ratio"]
        assert 0.3 <= p <= 0.7
        assert int((A.params["mask"] == 0).sum()) == int(32 * 32 * p) == A.params["n_dropped"]
        ps.append(p)
    assert max(ps) - min(ps) > 0.2
    B = _op("inpaint_random", (3, 32, 32), ratio=0.5)
    assert int((B.params["mask"] == 0).sum()) == 512 and B.out_shape == (3 * 512,)


def test_half_masks():
    m = _op("inpaint_half", (3, 8, 8)).params["mask"]
    assert float(m[:4].min()) == 1 and float(m[4:].max()) == 0
    m = _op("inpaint_half", (3, 8, 8), side="left").params["mask"]
    assert float(m[:, :4].max()) == 0 and float(m[:, 4:].min()) == 1


def test_motion_kernel_properties():
    k = motion_kernel(torch.Generator().manual_seed(0), 61, 0.5)
    assert k.shape == (61, 61) and k.dtype == torch.float64
    assert float(k.min()) >= 0 and abs(float(k.sum()) - 1) < 1e-12
    # intensity 0: every angle is 0, so the path is a straight segment -> strongly anisotropic kernel
    ratios = []
    for seed in range(5):
        k0 = motion_kernel(torch.Generator().manual_seed(seed), 61, 0.0)
        ii, jj = torch.meshgrid(torch.arange(61.0, dtype=torch.float64), torch.arange(61.0, dtype=torch.float64),
                                indexing="ij")
        mi, mj = float((k0 * ii).sum()), float((k0 * jj).sum())
        cov = torch.tensor([[(k0 * (ii - mi) ** 2).sum(), (k0 * (ii - mi) * (jj - mj)).sum()],
                            [(k0 * (ii - mi) * (jj - mj)).sum(), (k0 * (jj - mj) ** 2).sum()]])
        ev = torch.linalg.eigvalsh(cov)
        ratios.append(float(ev[1] / ev[0]))
    assert sorted(ratios)[2] > 5  # median anisotropy of a straight blur path
