"""Measured checks of a drawn figure: the text actually drawn, its size, overlaps, and the page.

:func:`drawn_texts` draws the figure once and records every piece of text the renderer drew
(titles, axis and tick labels, legends, annotations) with its bounding box in the renderer; the
checks read those boxes, so what they judge is what the PDF and PNG show. Used by the figure
tests (tests/bench/test_figures.py) through ``make_figures(..., inspect=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.text import Text

__all__ = ["DrawnText", "check_figure", "drawn_texts", "overlaps"]


@dataclass(frozen=True)
class DrawnText:
    text: str
    size_pt: float
    box: tuple[float, float, float, float]   # x0, y0, x1, y1 in the renderer's pixels


def drawn_texts(fig) -> list[DrawnText]:
    """Every non-empty text the renderer draws for ``fig``, with its font size and box."""
    out: list[DrawnText] = []
    original = Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.get_alpha() != 0:
            bb = self.get_window_extent(renderer)
            out.append(DrawnText(self.get_text(), float(self.get_fontsize()), (bb.x0, bb.y0, bb.x1, bb.y1)))

    Text.draw = record      # every Text subclass (annotations, tick labels) draws through it
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    return out


def overlaps(texts: list[DrawnText], tol_px: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes intersect by more than ``tol_px`` in both directions."""
    bad = []
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            w = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
            h = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
            if w > tol_px and h > tol_px:
                bad.append((a.text, b.text))
    return bad


def check_figure(fig, min_pt: float) -> list[str]:
    """Problems of ``fig`` as one line each: text under ``min_pt`` points, text outside the page,
    overlapping texts ([] when none)."""
    texts = drawn_texts(fig)
    w, h = fig.canvas.get_width_height()
    problems = [f"{t.size_pt:g} pt text {t.text!r}" for t in texts if t.size_pt < min_pt - 1e-9]
    problems += [f"text {t.text!r} outside the page" for t in texts
                 if t.box[0] < -1 or t.box[1] < -1 or t.box[2] > w + 1 or t.box[3] > h + 1]
    problems += [f"texts overlap: {a!r} and {b!r}" for a, b in overlaps(texts)]
    return problems
