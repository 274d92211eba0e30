"""Agreement with independent references: deepinv physics, scipy, torch conv2d (the DPS form),
a loop-based MATLAB-imresize re-implementation, numpy FFT (DPS phase retrieval)."""

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from invbench.operators.kernels import gaussian_kernel_1d

from invbench import operators


def _op(name, shape, seed=1, **kw):
    return operators.build(name, image_shape=shape, generator=torch.Generator().manual_seed(seed), **kw)


def _rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------ inpainting vs deepinv


@pytest.mark.parametrize("name", ["inpaint_box", "inpaint_random", "inpaint_half"])
def test_inpainting_matches_deepinv(name):
    dinv = pytest.importorskip("deepinv")
    A = _op(name, (3, 32, 32))
    mask = A.mask_image().expand(1, 3, 32, 32).clone()
    P = dinv.physics.Inpainting(img_size=(3, 32, 32), mask=mask)
    x = _rand((2, 3, 32, 32), 0)
    # our y holds only observed values; scattered back it is deepinv's mask ⊙ x
    assert torch.equal(A.adjoint(A.forward(x)), P.A(x))
    assert torch.equal(A.pinv(A.forward(x)), P.A_dagger(P.A(x)))
    assert A.out_shape == (3 * int(mask[0, 0].sum()),)


# ------------------------------------------------------------------ blur


@pytest.mark.parametrize("name", ["deblur_gauss", "deblur_uniform", "deblur_motion"])
def test_circular_blur_matches_deepinv_blurfft(name):
    dinv = pytest.importorskip("deepinv")
    A = _op(name, (3, 64, 64), padding="circular")
    k = A.params["kernel"]
    # ours is a cross-correlation (torch conv2d, as DPS); deepinv convolves: flip the kernel
    P = dinv.physics.BlurFFT(img_size=(3, 64, 64), filter=k.flip(-1, -2)[None, None].clone(), device="cpu")
    x = _rand((2, 3, 64, 64), 1)
    assert _rel(A.forward(x), P.A(x)) <= 1e-10
    u = _rand((2, 3, 64, 64), 2)
    assert _rel(A.adjoint(u), P.A_adjoint(u)) <= 1e-10


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("name", ["deblur_gauss", "deblur_motion"])
def test_blur_equals_dps_reflect_conv2d(name, size):
    """DPS Blurkernel: ReflectionPad2d(k//2) then a depthwise Conv2d with the full 61×61 kernel."""
    A = _op(name, (3, size, size))
    k = A.params["kernel"]
    assert k.shape == (61, 61)
    x = _rand((2, 3, size, size), 3)
    ref = F.conv2d(F.pad(x, (30, 30, 30, 30), mode="reflect"), k[None, None].expand(3, 1, 61, 61), groups=3)
    assert _rel(A.forward(x), ref) <= 1e-12
    if A.svd is not None:  # the SVD describes exactly this (reflect-padded) operator
        s = A.svd.singular_values
        assert _rel(A.svd.U(s * A.svd.Vt(x)[:, : s.numel()]), ref) <= 1e-8


def test_uniform_blur_equals_zero_padded_conv2d():
    A = _op("deblur_uniform", (3, 24, 24))
    x = _rand((2, 3, 24, 24), 4)
    ref = F.conv2d(x, torch.full((3, 1, 9, 9), 1 / 81, dtype=torch.float64), padding=4, groups=3)
    assert _rel(A.forward(x), ref) <= 1e-12
    # DDRM's matrix builder quirk: taps -4..3 only
    B = _op("deblur_uniform", (3, 24, 24), ddrm_truncated=True)
    k = torch.zeros(3, 1, 9, 9, dtype=torch.float64)
    k[..., :8, :8] = 1 / 81
    assert _rel(B.forward(x), F.conv2d(x, k, padding=4, groups=3)) <= 1e-12


def test_gaussian_kernel_matches_scipy_construction():
    delta = np.zeros((61, 61))
    delta[30, 30] = 1.0
    ref = scipy.ndimage.gaussian_filter(delta, sigma=3.0)  # DPS util/img_utils.py
    ref = ref / ref.sum()
    k1 = gaussian_kernel_1d(61, 3.0)
    assert np.abs(torch.outer(k1, k1).numpy() - ref).max() <= 1e-15
    A = _op("deblur_gauss", (3, 16, 16))
    assert np.abs(A.params["kernel"].numpy() - ref).max() <= 1e-15


def test_small_image_reflection_is_periodic_mirror():
    """Kernel radius (12 taps of the Gaussian) larger than an 8×8 image: reflect padding is
    continued periodically (period 2(n-1)); equal to torch reflect applied repeatedly."""
    A = _op("deblur_gauss", (1, 8, 8))
    x = _rand((1, 1, 8, 8), 5)
    xp = x
    for _ in range(2):  # 12 = 7 + 5: two rounds of torch reflect padding
        p = min(7, (xp.shape[-1] + 0) - 1)
        xp = F.pad(xp, (p, p, p, p), mode="reflect")
    # xp is now padded by 7 + 7 = 14 >= 12 on each side; crop to radius 12
    c = xp.shape[-1] // 2 - 4
    xp = xp[..., c - 12 : c + 8 + 12, c - 12 : c + 8 + 12]
    k1 = A.params["kernel_1d"][30 - 12 : 30 + 13]
    ref = F.conv2d(xp, torch.outer(k1, k1)[None, None])
    assert _rel(A.forward(x), ref) <= 1e-12


# ------------------------------------------------------------------ super-resolution


def _keys_cubic(t):
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _matlab_imresize_1d_loop(v, out_len):
    """Straight loop transcription of MATLAB imresize's documented algorithm (contributions with
    antialiasing, 1-based coordinates, symmetric boundary), written independently for the test."""
    n = len(v)
    s = out_len / n
    width = 4.0 / s
    out = np.zeros(out_len)
    for i in range(1, out_len + 1):
        u = i / s + 0.5 * (1 - 1 / s)
        left = math.floor(u - width / 2)
        acc, wsum = 0.0, 0.0
        for j in range(math.ceil(width) + 2):
            p = left + j
            w = s * _keys_cubic(s * (u - p))
            q = p
            while q < 1 or q > n:  # symmetric mirror, edge repeated
                q = 1 - q if q < 1 else 2 * n + 1 - q
            acc += w * v[q - 1]
            wsum += w
        out[i - 1] = acc / wsum
    return out


def test_bicubic_matches_loop_reference_on_fixed_image():
    img = np.add.outer(np.sin(np.arange(32) * 0.7), np.cos(np.arange(32) * 1.3)) + np.eye(32)
    ref = np.stack([_matlab_imresize_1d_loop(r, 8) for r in img])  # along W
    ref = np.stack([_matlab_imresize_1d_loop(c, 8) for c in ref.T]).T  # along H
    A = _op("sr4_bicubic", (1, 32, 32))
    y = A.forward(torch.from_numpy(img)[None, None])[0, 0].numpy()
    assert np.abs(y - ref).max() <= 1e-12


def test_bicubic_matches_deepinv_imresize_matlab():
    pytest.importorskip("deepinv")
    from deepinv.physics.functional import imresize_matlab  # port of sanghyun-son/bicubic_pytorch

    A = _op("sr4_bicubic", (3, 32, 48))
    x = _rand((2, 3, 32, 48), 6)
    assert _rel(A.forward(x), imresize_matlab(x, scale=0.25)) <= 1e-12


def test_bicubic_analytic_properties():
    A = _op("sr4_bicubic", (1, 64, 64))
    const = torch.full((1, 1, 64, 64), 0.3, dtype=torch.float64)
    assert torch.allclose(A.forward(const), torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(A.Ah.sum(1), torch.ones(16, dtype=torch.float64), atol=1e-15)
    # a linear ramp p (1-based pixel index) maps to the sample position u_i = 4 i - 1.5 away from
    # the border (symmetric kernel reproduces linear functions)
    ramp = torch.arange(1, 65, dtype=torch.float64).reshape(1, 1, 64, 1).expand(1, 1, 64, 64)
    y = A.forward(ramp)[0, 0, :, 0]
    u = 4 * torch.arange(1, 17, dtype=torch.float64) - 1.5
    assert torch.allclose(y[2:-2], u[2:-2], atol=1e-12)


def test_avgpool_matches_torch():
    A = _op("sr4_avgpool", (3, 32, 16))
    x = _rand((2, 3, 32, 16), 7)
    assert _rel(A.forward(x), F.avg_pool2d(x, 4)) <= 1e-14
    y = A.forward(x)
    assert torch.equal(A.pinv(y), F.interpolate(y, scale_factor=4, mode="nearest"))


def test_colorize_is_channel_mean():
    A = _op("colorize", (3, 8, 8))
    x = _rand((2, 3, 8, 8), 8)
    assert A.out_shape == (1, 8, 8)
    assert _rel(A.forward(x), (x[:, 0:1] + x[:, 1:2] + x[:, 2:3]) / 3) <= 1e-15


# ------------------------------------------------------------------ phase retrieval


def test_phase_retrieval_matches_dps_formula_at_256():
    A = _op("phase_retrieval", (1, 256, 256))
    assert A.params["pad"] == (64, 64) and A.out_shape == (1, 384, 384)  # int((2/8) * 256) = 64
    x = _rand((1, 1, 256, 256), 9).numpy()[0, 0]
    xp = np.pad(x, 64)
    ref = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(xp)))) / 384.0  # centred, orthonormal
    y = A.forward(torch.from_numpy(x)[None, None])[0, 0].numpy()
    assert np.abs(y - ref).max() <= 1e-10 * np.abs(ref).max()


def test_phase_retrieval_is_differentiable():
    A = _op("phase_retrieval", (1, 4, 4))
    x = _rand((1, 1, 4, 4), 10).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: A.forward(t), (x,), eps=1e-6, atol=1e-6)
    # invariances of |F x|: global sign
    assert torch.allclose(A.forward(-x.detach()), A.forward(x.detach()), atol=1e-14)
