import torch
from invbench.priors import CountingPrior, Prior


class _Shrink(Prior):
    image_shape = (1, 2, 2)
    sigma_min, sigma_max = 0.0, 10.0

    def denoise(self, x, sigma):
        return x / (1 + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1) ** 2)


def test_counts_nfe_and_vjp_exactly():
    p = CountingPrior(_Shrink())
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        p.denoise(x, 1.0)
    assert (p.nfe, p.vjp) == (1, 0)
    xr = x.clone().requires_grad_(True)
    d = p.denoise(xr, torch.full((3,), 1.0, dtype=torch.float64))
    (g,) = torch.autograd.grad((d * torch.ones_like(d)).sum(), xr)
    assert (p.nfe, p.vjp) == (2, 1)
    assert torch.allclose(g, torch.full_like(x, 0.5))
    # two outputs, one backward through each -> two VJPs
    d1 = p.denoise(xr, 1.0)
    d2 = p.denoise(xr, 2.0)
    torch.autograd.grad((d1 + d2).sum(), xr)
    assert (p.nfe, p.vjp) == (4, 3)
    p.reset()
    assert (p.nfe, p.vjp) == (0, 0)
