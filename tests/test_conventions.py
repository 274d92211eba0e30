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


def _name_of(node) -> str:
    import ast

    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def test_noise_units_are_converted_only_in_conventions():
    """A single source: no code outside operators/conventions.py doubles (or halves) a noise
    level itself — ``2 * noise_sigma`` and ``sigma_y / 2`` go through the conversion functions."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    found = []
    for folder in ("bench", "solvers", "priors", "operators", "scripts"):
        for f in sorted((repo / folder).rglob("*.py")):
            if f.name == "conventions.py" and f.parent.name == "operators":
                continue
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div))):
                    continue
                sides = (node.left, node.right)
                two = any(isinstance(s, ast.Constant) and s.value in (2, 2.0) for s in sides)
                noisy = any("noise" in _name_of(s).lower() or _name_of(s) == "sigma_y" for s in sides)
                if two and noisy:
                    found.append(f"{f.relative_to(repo)}:{node.lineno}")
    assert not found, f"noise units converted by hand (use operators.conventions): {found}"
