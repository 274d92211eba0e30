"""What every figure of a report shares: the record of a written figure, the drawing context of
one column width, metric labels and units, text fitting in inches, the dot-and-interval and row
helpers, legends, saving (PNG and PDF written atomically) and reading run images safely.

The figure kinds are drawn in :mod:`.figures_quality` (Δ to best, metric panels),
:mod:`.figures_cost` (Pareto, quality vs cost, memory), :mod:`.figures_posterior` (distance to the
exact MAP), :mod:`.figgrid` (sample grid) and :mod:`.cd`; :mod:`.figures` draws them all.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..fsafety import atomic_write_bytes
from . import escape, figaxes
from .names import solver_name
from .pixels import ImageTooLarge, read_image
from .stats import direction
from .style import Palette
from .summary import CellSummary, Leaderboard
from .tables import DISPLAY


@dataclass
class FigureRecord:
    kind: str
    title: str
    caption: str
    png: Path
    pdf: Path
    width_in: float = 6.8  # the column width it was drawn for (inches)
    axis_labels: tuple = ()  # (xlabel, ylabel) of every visible axes, for checks
    height_in: float = 0.0  # the page height (inches)


# Journal column widths (inches): every figure is drawn once for each; the single-column files
# carry the suffix ``__col1`` and are at most MAX_SINGLE_HEIGHT_IN tall.
DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN = 6.8, 3.3
MAX_SINGLE_HEIGHT_IN, MAX_DOUBLE_HEIGHT_IN = 4.5, 8.5
ZOOM_MAGNIFICATION = 3

Inspect = Callable[[object, str], None]


@dataclass
class Ctx:
    """What every figure of one width needs: the width, the styles, where files go."""

    width: float
    pal: Palette
    out_dir: Path
    task_names: dict[str, str] = field(default_factory=dict)
    formats: tuple[str, ...] = ("png", "pdf")
    inspect: Inspect | None = None
    refused: list[str] = field(default_factory=list)  # images over the pixel cap

    @property
    def single(self) -> bool:
        return self.width < 5.0

    @property
    def suffix(self) -> str:
        return "__col1" if self.single else ""

    @property
    def max_height(self) -> float:
        return MAX_SINGLE_HEIGHT_IN if self.single else MAX_DOUBLE_HEIGHT_IN


# ---------------------------------------------------------------- names, labels, text fitting

# Axis units of each metric (docs/metrics.md); the ideal value gets a reference line.
AXIS_UNITS: dict[str, str] = {
    "psnr": "dB",
    "ssim": "unitless",
    "lpips": "unitless",
    "mse": "pixel units²",
    "consistency": "residual / noise level",
    "dist_to_map": "model units, RMS",
    "rel_dist_to_map": "ratio",
    "logpost_gap": "nats",
    "err_post_mean": "model units, RMS",
    "seconds": "s",
}
IDEAL: dict[str, float] = {"consistency": 1.0}


def metric_label(m: str) -> str:
    return DISPLAY.get(m, m) + {1: " ↑", -1: " ↓"}.get(direction(m), "")


def axis_label(m: str, wrap: bool = False) -> str:
    """``"PSNR ↑ [dB]"``: the metric, its direction and its unit (the unit on a second line with
    ``wrap``, for panels side by side)."""
    unit = AXIS_UNITS.get(m, "")
    return metric_label(m) + (("\n" if wrap else " ") + f"[{unit}]" if unit else "")


def cell_name(c: CellSummary) -> str:
    """A cell's printed name: the solver's display name, plus the preset unless ``default``."""
    name = solver_name(c.solver)
    return escape.mpl(name if str(c.preset) == "default" else f"{name} ({c.preset})")


def plain_title(b: Leaderboard, ctx: Ctx) -> str:
    """``"Inpainting (50 % missing) · crops32"``: the task's display name and the dataset."""
    return f"{ctx.task_names.get(b.task, b.task)} · {b.dataset}"


def board_title(b: Leaderboard, ctx: Ctx) -> str:
    return escape.mpl(plain_title(b, ctx))


TEXT_WIDTH_MARGIN = 1.1  # the renderer's hinted text is up to ~6 % wider than the outline measure


def text_width_in(s: str, size: float) -> float:
    """Width of ``s`` at ``size`` points in the figures' font, in inches (with a safety margin)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    w, _, _ = TextToPath().get_text_width_height_descent(s, FontProperties(size=size), ismath=False)
    return TEXT_WIDTH_MARGIN * w / 72.0


def _fill(tokens: list[str], width_in: float, size: float, lines: list[str], cur: str) -> str:
    """Greedy line filling of ``tokens`` into ``lines``; returns the unfinished last line."""
    for tok in tokens:
        if text_width_in((cur + tok).strip(), size) <= width_in:
            cur += tok
            continue
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
        if text_width_in(tok.strip(), size) <= width_in:
            cur = tok
            continue
        parts = [t for t in re.split(r"(?<=[\-_/])", tok) if t]
        if len(parts) > 1:  # a word too wide: after its hyphens, underscores, slashes
            cur = _fill(parts, width_in, size, lines, "")
            continue
        for ch in tok:  # one piece too wide: by characters
            if cur and text_width_in((cur + ch).strip(), size) > width_in:
                lines.append(cur.strip())
                cur = ""
            cur += ch
    return cur


def wrap_to(s: str, width_in: float, size: float, max_lines: int = 3) -> str:
    """``s`` broken into lines no wider than ``width_in`` at ``size`` pt: at spaces; a word wider
    than the line after its hyphens, underscores or slashes, then by characters; at most
    ``max_lines`` (the last one cut with "…")."""
    lines: list[str] = []
    cur = _fill([t for t in re.split(r"(?<=\s)", s) if t], width_in, size, lines, "")
    if cur.strip():
        lines.append(cur.strip())
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and text_width_in(last + "…", size) > width_in:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "…"]
    return "\n".join(lines) or s


def value_ticks(axis, nbins: int) -> None:
    """Few linear ticks with short labels (``0.0025``, ``20``, ``1e-08``): no offset text."""
    axis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(
        FuncFormatter(
            lambda v, _: figaxes.short_number(float(f"{v:.3g}")) if abs(v) > 1e-12 else "0"
        )
    )


def ci_ends(ci) -> tuple[float, float]:
    if ci is None or not math.isfinite(ci.half_width):
        return math.nan, math.nan
    return ci.low, ci.high


# ---------------------------------------------------------------- saving


def _stem(kind: str, b: Leaderboard | None, ctx: Ctx, part: int = 1) -> str:
    stem = kind if b is None else f"{kind}__{escape.slug(b.dataset)}__{escape.slug(b.task)}"
    return stem + (f"__part{part}" if part > 1 else "") + ctx.suffix


def save_figure(
    fig, ctx: Ctx, kind: str, b: Leaderboard | None, title: str, caption: str, part: int = 1
) -> FigureRecord:
    """Write ``fig`` as PNG and PDF (each rendered in memory, then written atomically) at its own
    size, and close it."""
    stem = _stem(kind, b, ctx, part)
    if ctx.inspect is not None:
        # measured as the PNG is drawn: layout and text extents depend on the resolution (the saved
        # bytes do not depend on the figure's own dpi, savefig draws at savefig.dpi)
        fig.set_dpi(plt.rcParams["savefig.dpi"])
        ctx.inspect(fig, stem)
    labels = tuple(
        (ax.get_xlabel(), ax.get_ylabel())
        for ax in fig.axes
        if ax.get_visible() and (ax.get_xlabel() or ax.get_ylabel())
    )
    png, pdf = ctx.out_dir / f"{stem}.png", ctx.out_dir / f"{stem}.pdf"
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        if fmt in ctx.formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            atomic_write_bytes(path, buf.getvalue())
            fig.set_layout_engine("none")  # laid out once: the second format reuses the positions
    h = float(fig.get_size_inches()[1])
    plt.close(fig)
    return FigureRecord(kind, title, caption, png, pdf, ctx.width, labels, round(h, 3))


def new_figure(ctx: Ctx, height: float, layout: str | None = "constrained"):
    return plt.figure(figsize=(ctx.width, min(height, ctx.max_height)), layout=layout)


def rows_axis(ax, y, names: list[str] | None, bold: frozenset[int] = frozenset()) -> None:
    """Rows of cells on y (``names`` None: no labels, for panels right of the first)."""
    if names is None:
        ax.tick_params(axis="y", labelleft=False)
    else:
        ax.set_yticks(y, names)
        for i, t in enumerate(ax.get_yticklabels()):
            if i in bold:
                t.set_fontweight("bold")
    ax.set_ylim(min(y) - 0.7, max(y) + 0.7)
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", left=False, right=False)  # labels only: tick marks not drawn at all


ROW_IN = 0.125  # vertical space per cell row in the dot-and-interval figures


def row_xlabel(ax, text: str, names: list[str], ctx: Ctx, right_in: float = 0.0) -> None:
    """The x label of an axes with cell names left of it (and ``right_in`` inches of text right
    of it), each line wrapped to the axes' width so that it stays on the page."""
    size = plt.rcParams["axes.labelsize"]
    name_in = max((text_width_in(n, plt.rcParams["ytick.labelsize"]) for n in names), default=0.0)
    width = max(ctx.width - name_in - right_in - 0.25, 1.0)
    lines = []
    for line in text.split("\n"):  # too wide: the unit goes to its own line first
        lines += (
            line.replace(" [", "\n[").split("\n") if text_width_in(line, size) > width else [line]
        )
    ax.set_xlabel("\n".join(wrap_to(line, width, size, max_lines=2) for line in lines))


def dot(ax, x: float, y: float, lo: float, hi: float, kw: dict, along: str = "x"):
    """A cell's marker at (x, y) and its interval [lo, hi] along ``along`` as one line with short
    end caps (two artists per cell: much cheaper to draw than ``errorbar``'s container). Returns
    the marker's line (a legend handle)."""
    if math.isfinite(lo) and math.isfinite(hi):
        xs, ys = ([lo, hi], [y, y]) if along == "x" else ([x, x], [lo, hi])
        ax.plot(
            xs,
            ys,
            color=kw["color"],
            linewidth=0.9,
            marker="|" if along == "x" else "_",
            markersize=3,
            markeredgewidth=0.8,
            solid_capstyle="butt",
        )
    return ax.plot([x], [y], linestyle="none", clip_on=False, **kw)[
        0
    ]  # inside the limits: never cut


# ---------------------------------------------------------------- legends


def legend(fig, ax, ctx: Ctx, handles: dict) -> None:
    """Legend below the axes (single column, two columns of entries) or right of it (double)."""
    if not handles:
        return
    if ctx.single:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncol=2,
            frameon=False,
            handletextpad=0.3,
            columnspacing=0.8,
        )
    else:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside right upper",
            frameon=False,
            handletextpad=0.3,
        )


def legend_height(n: int, ctx: Ctx) -> float:
    return 0.14 * math.ceil(n / 2) + 0.1 if ctx.single else 0.0


# ---------------------------------------------------------------- run images


def inside_run(run_dir: Path, rel: str | Path) -> Path | None:
    """``run_dir / rel`` if it stays inside ``run_dir`` and exists, else None."""
    try:
        root = run_dir.resolve()
        p = (run_dir / rel).resolve()
        p.relative_to(root)
    except (ValueError, OSError):
        return None
    return p if p.is_file() else None


def read_png(p: Path | None) -> np.ndarray | None:
    """The image at ``p`` in [0, 1] (:func:`invbench.bench.report.pixels.read_image`), None when
    ``p`` is None or unreadable; :class:`ImageTooLarge` over the pixel cap."""
    return None if p is None else read_image(p)


def read_image_or_note(p: Path | None, ctx: Ctx) -> np.ndarray | None:
    """The image at ``p`` (:func:`read_png`), or None when absent, unreadable or over the pixel
    cap (then its one-line reason is kept for the notes)."""
    try:
        return read_png(p)
    except ImageTooLarge as e:
        if str(e) not in ctx.refused:
            ctx.refused.append(str(e))
        return None
