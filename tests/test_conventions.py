import torch
from invbench.operators import conventions as cv


def test_pixel_model_roundtrip_and_range():
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    m = cv.pixel_to_model(x)
    assert m.min() >= -1 and m.max() <= 1
    assert torch.equal(cv.pixel_to_model(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(cv.model_to_pixel(m), x, atol=0, rtol=1e-15)


def test_noise_units():
    # docs/design.md §2: 0.05 on the [-1,1] scale (DPS) is 0.025 pixel units, i.e. model sigma 0.05.
    assert cv.minus_one_one_noise_to_pixel(0.05) == 0.025
    assert cv.noise_sigma_to_model(0.025) == 0.05
    assert cv.model_sigma_to_pixel(cv.noise_sigma_to_model(0.05)) == 0.05
    # pixel noise of std s becomes model noise of std 2 s under the conversion
    g = torch.Generator().manual_seed(0)
    n = 0.05 * torch.randn(200_000, generator=g, dtype=torch.float64)
    assert abs(cv.pixel_to_model(0.5 + n).std().item() - cv.noise_sigma_to_model(0.05)) < 1e-3
