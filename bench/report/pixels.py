"""Reading a run's images for the report with a pixel cap checked on the header, before decoding.

A PNG of a few kilobytes can declare 10000 × 10000 pixels (it then decodes to gigabytes) or
60000 × 60000 (Pillow's own guard raises without naming the file). Every image the report reads
goes through :func:`read_image`: the size in the header is compared with
:data:`invbench.bench.imagefile.MAX_PIXELS` (the cap datasets apply to their images) and a larger
image is refused with :class:`ImageTooLarge` naming the file; nothing is decoded. An image
under the cap but with a side over :data:`MAX_SIDE_DRAWN` is reduced (box filter) right after
decoding: a panel of a sample grid is a few hundred pixels wide.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..imagefile import MAX_PIXELS

__all__ = ["MAX_PIXELS", "MAX_SIDE_DRAWN", "ImageTooLarge", "read_image"]

MAX_SIDE_DRAWN = 2048
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class ImageTooLarge(ValueError):
    """An image's header declares more pixels than :data:`MAX_PIXELS`; ``str(e)`` names the file."""


def _too_large(path: Path, size: str) -> ImageTooLarge:
    return ImageTooLarge(f"{path}: {size} exceeds the cap of {MAX_PIXELS} pixels (width x height, a "
                         "decompression-bomb guard); not drawn")


def read_image(path: Path) -> np.ndarray | None:
    """Pixels of the image at ``path`` in [0, 1], ``(H, W)`` for grey or ``(H, W, 3)``, float64;
    None when it cannot be read (missing, truncated, not an image). Raises
    :class:`ImageTooLarge` before decoding when its header declares more than :data:`MAX_PIXELS`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the cap below is stricter
        try:
            im = Image.open(path)          # reads the header only
        except Image.DecompressionBombError:
            raise _too_large(path, "its size") from None
        except _UNREADABLE:
            return None
        with im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise _too_large(path, f"{w}x{h} pixels")
            try:
                im2 = im.convert("L" if im.mode in ("L", "I", "I;16", "1") else "RGB")
                if max(w, h) > MAX_SIDE_DRAWN:
                    im2 = im2.reduce(math.ceil(max(w, h) / MAX_SIDE_DRAWN))
                a = np.asarray(im2, dtype=np.float64)
            except _UNREADABLE:
                return None
    return a / 255.0
