"""One image file of a dataset to a pixel tensor: decoding (PIL, or ``.npy`` float arrays), the
pixel cap against decompression bombs, the mode and channel checks, then crop and resize.
:class:`DatasetError` (the error of every dataset check, raised by :mod:`.datasets` too) is
defined here, below the datasets that use it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MAX_PIXELS = 8192 * 8192
"""Largest image (width x height, or H x W of a .npy) a dataset may hold: a guard against
decompression bombs and files whose header claims a huge size; 67 Mpx."""


class DatasetError(ValueError):
    """Bad dataset spec or bad data; the message names the field or file."""


def _center_box(w: int, h: int, crop) -> tuple[int, int, int, int]:
    side = min(w, h) if crop == "center" else int(crop)
    if side > w or side > h:
        raise DatasetError(f"crop {side} larger than the image ({w}x{h})")
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def _pil_filter(name: str):
    from PIL import Image

    return {
        "bicubic": Image.BICUBIC,
        "bilinear": Image.BILINEAR,
        "lanczos": Image.LANCZOS,
        "box": Image.BOX,
        "nearest": Image.NEAREST,
    }[name]


def load_image_file(
    path: Path,
    name: str,
    channels: int,
    crop=None,
    resize=None,
    resize_filter="bicubic",
    to_rgb: bool = False,
) -> Tensor:
    """Decode, validate and preprocess one file -> ``(C, H, W)`` float64 pixel tensor.

    8-bit images: ``/ 255``; 16-bit grayscale: ``/ 65535``. ``.npy``: float ``(C, H, W)`` pixel
    array, checked finite and in [0, 1]. ``to_rgb`` (3 channels only) converts grayscale,
    palette, CMYK and RGBA files with ``PIL.Image.convert("RGB")`` as the DPS/DDRM loaders do;
    otherwise a channel mismatch is an error. ``crop`` (None, ``"center"`` = largest centred
    square, or a side length) then ``resize`` (square side; PIL with ``resize_filter``,
    antialiased on downscaling). Errors name ``name``.
    """
    if path.suffix.lower() == ".npy":
        return _load_npy(path, name, channels, crop, resize, resize_filter)
    img = _open_capped(path, name)
    if to_rgb and channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    _check_mode(img, name, channels)
    scale = 65535.0 if img.mode == "I;16" else 255.0
    if crop is not None:
        img = img.crop(_center_box(img.width, img.height, crop))
    if resize is not None and img.size != (resize, resize):
        if img.mode == "I;16":
            img = img.convert("F")  # float resize keeps the 16-bit precision
        img = img.resize((resize, resize), _pil_filter(resize_filter))
    arr = np.asarray(img, dtype=np.float64) / scale
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr.clip(0, 1)))


def _read_npy(path: Path, name: str) -> np.ndarray:
    """The array of a ``.npy`` file, its header read first: a huge array is refused before it is
    read."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape = read(f)[0]
        if len(shape) == 3 and shape[1] * shape[2] > MAX_PIXELS:
            raise DatasetError(
                f"{name}: {shape[2]}x{shape[1]} pixels exceeds the cap of {MAX_PIXELS} pixels"
            )
        return np.load(path, allow_pickle=False)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - reported as one readable line
        raise DatasetError(f"{name}: unreadable .npy file ({type(e).__name__}: {e})") from None


def _load_npy(path: Path, name: str, channels: int, crop, resize, resize_filter) -> Tensor:
    """A float ``(C, H, W)`` pixel array file, checked finite and in [0, 1], cropped, resized."""
    from PIL import Image

    arr = _read_npy(path, name)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise DatasetError(
            f"{name}: .npy images must be float (C, H, W) arrays, got {arr.dtype} {arr.shape}"
        )
    if arr.shape[0] != channels:
        raise DatasetError(f"{name}: has {arr.shape[0]} channels, expected {channels}")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{name}: contains NaN or Inf")
    if arr.min() < 0 or arr.max() > 1:
        raise DatasetError(
            f"{name}: values outside [0, 1] (min {arr.min():.4g}, max {arr.max():.4g})"
        )
    arr = arr.astype(np.float64)
    if crop is not None:
        left, top, right, bottom = _center_box(arr.shape[2], arr.shape[1], crop)
        arr = arr[:, top:bottom, left:right]
    if resize is not None and (arr.shape[1], arr.shape[2]) != (resize, resize):
        f = _pil_filter(resize_filter)
        arr = np.stack(
            [
                np.asarray(
                    Image.fromarray(c.astype(np.float32), mode="F").resize((resize, resize), f),
                    dtype=np.float64,
                )
                for c in arr
            ]
        ).clip(0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _open_capped(path: Path, name: str):
    """The decoded PIL image of ``path``; over :data:`MAX_PIXELS` (by its header, or PIL's own
    bomb check) or unreadable: :class:`DatasetError`."""
    from PIL import Image, UnidentifiedImageError

    bomb = (
        f"{name}: image larger than the cap of {MAX_PIXELS} pixels (width x height; a "
        "decompression-bomb guard)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise DatasetError(f"{bomb}: {im.width}x{im.height}")
                im.load()
                return im.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetError(bomb) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(
            f"{name}: unreadable or corrupt image ({type(e).__name__}: {e})"
        ) from None


def _check_mode(img, name: str, channels: int) -> None:
    """8-bit L or RGB, or 16-bit I;16, with ``channels`` channels; else a one-line refusal."""
    modes = {"L": 1, "I;16": 1, "RGB": 3}
    if img.mode in ("P", "PA"):
        raise DatasetError(
            f"{name}: palette image (mode {img.mode}): its values are colour "
            "indices, not intensities; convert it to L or RGB, or set to_rgb = "
            "true with channels = 3"
        )
    if img.mode not in modes:
        n = len(img.getbands())
        if n == channels:
            raise DatasetError(
                f"{name}: image mode {img.mode} is not supported (8-bit L or RGB, "
                "or 16-bit I;16); convert the file"
                + (", or set to_rgb = true" if channels == 3 else "")
            )
        raise DatasetError(f"{name}: has {n} channels (mode {img.mode}), expected {channels}")
    if modes[img.mode] != channels:
        raise DatasetError(
            f"{name}: has {modes[img.mode]} channels (mode {img.mode}), expected {channels}"
        )
