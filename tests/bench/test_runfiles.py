"""A run's image files (bench/runfiles.py): atomic PNG / .npy round trips."""

import numpy as np
import torch
from invbench.bench import runfiles


def test_atomic_png_npy_roundtrip_and_no_temp_left(tmp_path):
    x = torch.rand(3, 5, 7, dtype=torch.float64)
    x[0, 0, 0] = 1.7   # clipped in the PNG, kept in the npy
    runfiles.write_png(tmp_path / "a/b/img.png", x)
    runfiles.write_npy(tmp_path / "a/b/img.npy", x)
    back = runfiles.read_png(tmp_path / "a/b/img.png")
    expect = np.rint(np.clip(x.numpy(), 0, 1) * 255) / 255
    assert back.shape == (3, 5, 7) and np.array_equal(back, expect)
    arr = np.load(tmp_path / "a/b/img.npy")
    assert arr.dtype == np.float32 and np.allclose(arr, x.numpy(), atol=1e-7) and arr[0, 0, 0] == np.float32(1.7)
    g = torch.rand(1, 4, 4)
    runfiles.write_png(tmp_path / "g.png", g)
    assert runfiles.read_png(tmp_path / "g.png").shape == (1, 4, 4)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith("tmp")]
