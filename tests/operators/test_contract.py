"""Linear-algebra contract of every preset (docs/design.md §3, §9), float64, several image sizes."""

import pytest
import torch
from invbench.operators import LinearOperator, OperatorError

from invbench import operators

LINEAR = [p for p in operators.PRESETS if p != "phase_retrieval"]
SVD_PRESETS = [p for p in LINEAR if p != "deblur_motion"]
SIZES = (8, 16, 32)


def _op(name, size, seed=1, C=3, **kw):
    return operators.build(name, image_shape=(C, size, size), generator=torch.Generator().manual_seed(seed), **kw)


def _rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_presets_are_the_registry_and_each_is_documented():
    """``operators.PRESETS`` is what the registry holds (no hand-kept list), and docs/operators.md
    has a row for every registered preset, so a new preset is documented where users look."""
    from pathlib import Path

    assert set(operators.PRESETS) == set(operators.names())
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()
    missing = [n for n in operators.names() if f"| `{n}` |" not in doc]
    assert not missing, f"presets without a row in docs/operators.md: {missing}"


@pytest.mark.parametrize("name", LINEAR)
def test_capabilities_declared(name):
    A = _op(name, 16)
    assert isinstance(A, LinearOperator) and A.is_linear
    assert A.name == name
    assert ("svd" in A.capabilities) == (name in SVD_PRESETS)
    assert {"linear", "grad"} <= A.capabilities


def test_phase_retrieval_is_nonlinear():
    A = _op("phase_retrieval", 16)
    assert not A.is_linear and A.capabilities == frozenset({"grad"})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", LINEAR)
def test_adjoint_identity(name, size):
    if name == "deblur_motion" and size == 32:
        size = 24
    A = _op(name, size)
    x = _rand((2, *A.in_shape), 0)
    u = _rand((2, *A.out_shape), 1)
    lhs = float((A.forward(x) * u).sum())
    rhs = float((x * A.adjoint(u)).sum())
    assert abs(lhs - rhs) <= 1e-10 * float(x.norm() * u.norm())


@pytest.mark.parametrize("name", operators.PRESETS)
def test_residual_gradient_is_the_autograd_gradient(name):
    """``residual_gradient`` (the adjoint path for linear operators) equals autograd of ½‖A x − y‖²."""
    from invbench.operators.base import residual_gradient

    A = _op(name, 16)
    x, y = _rand((2, *A.in_shape), 3), A.forward(_rand((2, *A.in_shape), 4)) + 0.1 * _rand((2, *A.out_shape), 5)
    xg = x.clone().requires_grad_(True)
    r = A.forward(xg) - y
    (g,) = torch.autograd.grad(0.5 * (r * r).sum(), xg)
    assert _rel(residual_gradient(A, x, y), g) < 1e-12


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", LINEAR)
def test_moore_penrose(name, size):
    if name == "deblur_motion" and size == 32:
        size = 24  # exact (dense) pinv path; CGLS path tested separately
    A = _op(name, size)
    x = _rand((2, *A.in_shape), 2)
    Ax = A.forward(x)
    assert _rel(A.forward(A.pinv(Ax)), Ax) <= 1e-8
    # A⁺ A A⁺ = A⁺ (second Penrose condition) on a random measurement
    u = _rand((2, *A.out_shape), 3)
    Pu = A.pinv(u)
    assert _rel(A.pinv(A.forward(Pu)), Pu) <= 1e-8


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", SVD_PRESETS)
def test_svd_contract(name, size):
    A = _op(name, size)
    svd = A.svd
    n = 1
    for s in A.in_shape:
        n *= s
    s = svd.singular_values
    m = s.numel()
    assert s.dim() == 1 and m <= n and bool((s >= 0).all())
    assert bool((s[:-1] >= s[1:]).all()), "singular values sorted descending"
    x = _rand((2, *A.in_shape), 4)
    z = svd.Vt(x)
    assert z.shape == (2, n)
    assert _rel(svd.U(s * z[:, :m]), A.forward(x)) <= 1e-8
    zz = _rand((2, n), 5)
    assert _rel(svd.Vt(svd.V(zz)), zz) <= 1e-12
    assert _rel(svd.V(svd.Vt(x)), x) <= 1e-12
    w = _rand((2, m), 6)
    assert svd.Ut(svd.U(w)).shape == (2, m)
    assert _rel(svd.Ut(svd.U(w)), w) <= 1e-12
    # adjoint through the SVD: Aᵀ u = V(pad(s ⊙ Uᵀ u))
    u = _rand((2, *A.out_shape), 7)
    coeff = torch.zeros(2, n, dtype=torch.float64)
    coeff[:, :m] = s * svd.Ut(u)
    assert _rel(svd.V(coeff), A.adjoint(u)) <= 1e-8
    # the operator's pinv agrees with the SVD pseudo-inverse (base-class implementation)
    assert _rel(A.pinv(u), LinearOperator.pinv(A, u)) <= 1e-8


def test_known_singular_values():
    assert torch.allclose(_op("sr4_avgpool", 16).svd.singular_values, torch.full((3 * 16,), 0.25, dtype=torch.float64))
    assert torch.allclose(_op("colorize", 8).svd.singular_values, torch.full((64,), 3 ** -0.5, dtype=torch.float64))
    assert torch.equal(_op("denoise", 8).svd.singular_values, torch.ones(192, dtype=torch.float64))
    A = _op("inpaint_half", 8)
    assert A.out_shape == (3 * 32,) and torch.equal(A.svd.singular_values, torch.ones(96, dtype=torch.float64))


def test_ddrm_threshold_semantics():
    A = _op("deblur_uniform", 64, C=1)  # at 64 px the 1-D factor has values in (0, 3e-2)
    t = A.params["svd_threshold"]
    assert t == 3e-2
    T = A.svd.thresholded(t)
    s, st = A.svd.singular_values, T.singular_values
    fh, fw = A.svd.factor_h, A.svd.factor_w
    assert torch.allclose(fh * fw, s, rtol=1e-12, atol=0)
    assert torch.equal(st == 0, (fh < t) | (fw < t) | (s == 0))
    assert bool((st[st > 0] == s[st > 0]).all()) and int((st == 0).sum()) > int((s == 0).sum())
    assert A.svd.singular_values is s  # original untouched
    assert _op("sr4_bicubic", 16).params["svd_threshold"] == 3e-2


@pytest.mark.parametrize("name", operators.PRESETS)
def test_float32_and_batch_independence(name):
    A = _op(name, 16)
    x64 = _rand((3, *A.in_shape), 8)
    x32 = x64.float()
    y32 = A.forward(x32)
    assert y32.dtype == torch.float32
    y64 = A.forward(x64)
    assert _rel(y32.double(), y64) <= 1e-5
    for i in range(3):  # no mixing across the batch
        assert _rel(A.forward(x64[i : i + 1])[0], y64[i]) <= 1e-12
    if A.is_linear:
        u = _rand((2, *A.out_shape), 9)
        assert A.adjoint(u.float()).dtype == torch.float32
        assert _rel(A.pinv(u.float()).double(), A.pinv(u)) <= 1e-3
    if getattr(A, "svd", None) is not None:
        assert A.svd.Vt(x32).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", operators.PRESETS)
def test_cuda_matches_cpu(name):
    A = _op(name, 16)
    x = _rand((2, *A.in_shape), 10)
    y = A.forward(x)
    A.to(device="cuda")
    if getattr(A, "svd", None) is not None:
        A.svd.to(device="cuda")
    yc = A.forward(x.cuda())
    assert yc.is_cuda and _rel(yc.cpu(), y) <= 1e-10
    if A.is_linear:
        assert _rel(A.adjoint(yc).cpu(), A.to(device="cpu").adjoint(y)) <= 1e-10


def test_motion_pinv_cgls_large_image():
    A = _op("deblur_motion", 40)  # above the dense threshold
    assert 40 * 40 > A.DENSE_MAX_PIXELS
    x = _rand((1, *A.in_shape), 11)
    Ax = A.forward(x)
    r = [_rel(A.forward(A.pinv_cgls(Ax, max_iter=k)), Ax) for k in (20, 200)]
    assert r[1] < r[0] and r[1] <= 1e-2


# ------------------------------------------------------------------ errors and measurement


def test_unknown_name_lists_valid_names():
    with pytest.raises(OperatorError) as e:
        operators.build("nope", image_shape=(3, 16, 16))
    msg = str(e.value)
    assert "nope" in msg and all(p in msg for p in operators.PRESETS)


@pytest.mark.parametrize("name", ["sr4_bicubic", "sr4_avgpool"])
def test_sr_rejects_indivisible_shape(name):
    with pytest.raises(OperatorError, match=r"\(3, 30, 30\)"):
        operators.build(name, image_shape=(3, 30, 30))


def test_bad_overrides_and_input_shape():
    with pytest.raises(OperatorError, match="bogus"):
        operators.build("deblur_gauss", image_shape=(3, 16, 16), bogus=1)
    with pytest.raises(OperatorError, match="side"):
        operators.build("inpaint_half", image_shape=(3, 16, 16), side="diagonal")
    with pytest.raises(OperatorError, match="padding"):
        operators.build("deblur_motion", image_shape=(3, 16, 16), padding="mirror")
    A = _op("deblur_gauss", 16)
    with pytest.raises(OperatorError, match=r"\(3, 8, 8\)"):
        A.forward(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("name", ["inpaint_random", "sr4_bicubic", "deblur_motion"])
def test_measure_noise_is_seeded_with_right_std(name):
    A = _op(name, 32 if name != "deblur_motion" else 16)
    x = _rand((4, *A.in_shape), 12)
    sigma_y = operators.conventions.noise_sigma_to_model(0.05)  # 0.1 in model units
    y1 = A.measure(x, sigma_y, generator=torch.Generator().manual_seed(7))
    y2 = A.measure(x, sigma_y, generator=torch.Generator().manual_seed(7))
    y3 = A.measure(x, sigma_y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    n = (y1 - A.forward(x)) / sigma_y
    expect = torch.randn(y1.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.allclose(n, expect, atol=1e-12)
    assert abs(float(n.std()) - 1.0) < 0.05 and abs(float(n.mean())) < 0.05
