"""A shared subset of the figures' font, so that writing a PDF does not subset the whole font again.

With ``pdf.fonttype = 42`` matplotlib embeds a subset of every font a PDF uses, made with fontTools
from the font file; for DejaVu Sans (about 6000 glyphs, 740 kB) that took about a quarter of a
report's time, once per PDF. :func:`shared_subset` makes, once per font version and cached in
matplotlib's cache folder (``matplotlib.get_cachedir()``), a copy of DejaVu Sans reduced to the
characters figures print (Latin-1, Latin Extended-A, Greek, punctuation, arrows, mathematical
operators and geometric shapes) without its ligature and math tables, renamed "Invbench Sans" as
the font's licence asks of modified copies; it registers the copy with matplotlib's font manager
(``font_manager.fontManager.addfont``), and :func:`families` puts it first in ``font.family`` with
DejaVu Sans behind it: a character outside the subset falls back to DejaVu Sans (matplotlib's font
fallback), so no text loses a glyph. Each PDF then subsets a 90 kB font, once, instead of a 740 kB
one, twice (the ligature glyphs made a second embedded copy). The bold weight (the best cell's
label) gets its own subset of DejaVu Sans Bold. Only public APIs: fontTools' subsetter,
``FontManager.addfont``, ``rcParams``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ..fsafety import current_umask

FAMILY = "Invbench Sans"
BASE = "DejaVu Sans"
_RANGES = ((0x20, 0x7F), (0xA0, 0x180), (0x370, 0x400), (0x2010, 0x2040), (0x2190, 0x21A0), (0x2200, 0x2270),
           (0x25A0, 0x25D0))
CHARS = "".join(chr(c) for lo, hi in _RANGES for c in range(lo, hi))

# Tables left out: FontForge's timestamp, ligatures (GSUB: with them a PDF embeds the font twice,
# once for the ligature glyphs) and math layout. Kerning (GPOS) stays.
DROPPED = ("FFTM", "GSUB", "MATH")

_STATE: dict[str, str | None] = {"path": None}


def _build(src: Path, dst: Path, bold: bool) -> None:
    """Write the renamed subset of ``src`` to ``dst`` (atomically: a temporary file, then renamed)."""
    from fontTools import subset

    opts = subset.Options()
    opts.layout_features = ["*"]
    opts.notdef_outline = True
    opts.drop_tables += list(DROPPED)
    font = subset.load_font(str(src), opts)
    sub = subset.Subsetter(opts)
    sub.populate(text=CHARS)
    sub.subset(font)
    full = FAMILY + (" Bold" if bold else "")
    for rec in font["name"].names:    # a modified copy does not carry the original's name
        if rec.nameID in (1, 16):
            rec.string = FAMILY
        elif rec.nameID == 4:
            rec.string = full
        elif rec.nameID == 6:
            rec.string = full.replace(" Bold", "-Bold").replace(" ", "")
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".invbench-sans-", suffix=".ttf")
    os.close(fd)
    try:
        subset.save_font(font, tmp, opts)
        os.chmod(tmp, 0o666 & ~current_umask())      # like any file the tool writes
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _subset_of(weight: str) -> Path:
    """The cached subset of DejaVu Sans at ``weight`` ("normal" or "bold"), made when missing."""
    import fontTools
    import matplotlib
    from matplotlib import font_manager

    src = Path(font_manager.findfont(font_manager.FontProperties(family=BASE, weight=weight),
                                     fallback_to_default=False))
    st = src.stat()
    key = hashlib.sha256(f"{src.name}:{st.st_size}:{st.st_mtime_ns}:{fontTools.version}:{CHARS}:{DROPPED}".encode())
    dst = Path(matplotlib.get_cachedir()) / f"invbench-sans-{weight}-{key.hexdigest()[:16]}.ttf"
    if not dst.is_file():
        _build(src, dst, bold=weight == "bold")
    return dst


def shared_subset() -> Path | None:
    """The cached subset fonts (regular and bold, made on first use), registered with matplotlib;
    the regular one's path, or None when they cannot be made (no fontTools, an unwritable cache):
    figures then use DejaVu Sans directly, only slower to write."""
    if _STATE["path"] is not None:
        return Path(_STATE["path"])
    from matplotlib import font_manager

    try:
        paths = [_subset_of(w) for w in ("normal", "bold")]
        for p in paths:
            font_manager.fontManager.addfont(str(p))
    except (OSError, ValueError, RuntimeError, KeyError, ImportError):
        return None
    _STATE["path"] = str(paths[0])
    return paths[0]


def families() -> list[str]:
    """``font.family`` for the figures: the shared subset first (when it could be made), then
    DejaVu Sans for every character outside it."""
    return [FAMILY, BASE] if shared_subset() is not None else [BASE]
