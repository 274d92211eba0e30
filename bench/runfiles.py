"""A run's image files: reconstructions and measurements as 8-bit PNG (clipped to [0, 1]) and,
on request, float32 ``.npy`` (unclipped), each written atomically (a temporary name in the same
folder, then ``os.replace``), so an interrupted run leaves no half-written file under a final
name; and PNG read back to pixel units."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .fsafety import atomic_write_bytes

__all__ = ["png_bytes", "read_png", "to_uint8", "write_npy", "write_png"]


def to_uint8(x_pixel) -> np.ndarray:
    """(C,H,W) pixel-space tensor/array -> (H,W) or (H,W,C) uint8, clipped to [0,1], rounded."""
    a = x_pixel.detach().cpu().double().numpy() if hasattr(x_pixel, "detach") else np.asarray(x_pixel, dtype=np.float64)
    a = np.clip(a, 0.0, 1.0)
    a = np.rint(a * 255.0).astype(np.uint8)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return a


def png_bytes(x_pixel) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(x_pixel)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | Path, x_pixel) -> None:
    """Atomically save a (C,H,W) pixel-space image (clipped to [0,1], 8-bit) as PNG."""
    atomic_write_bytes(path, png_bytes(x_pixel))


def write_npy(path: str | Path, x_pixel) -> None:
    """Atomically save a (C,H,W) pixel-space image as float32 .npy (unclipped)."""
    a = x_pixel.detach().cpu().float().numpy() if hasattr(x_pixel, "detach") else np.asarray(x_pixel, np.float32)
    buf = io.BytesIO()
    np.save(buf, a)
    atomic_write_bytes(path, buf.getvalue())


def read_png(path: str | Path) -> np.ndarray:
    """PNG -> (C,H,W) float64 pixel-space array in [0,1]."""
    from PIL import Image

    a = np.asarray(Image.open(path), dtype=np.float64) / 255.0
    return a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1))
