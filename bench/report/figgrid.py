"""The sample grid of a leaderboard: truth | measurement | reconstructions, one row per image.

At double-column width every cell with rows is a column; at single-column width the grid keeps
the truth, the measurement and at most four chosen cells: the best-ranked cell, the reference
solver's best cell (``--reference``), VML-MAP's best cell, then the next-ranked ones. Column
titles are wrapped to the column; each reconstruction shows its PSNR below it.

Zoom (``zoom = (x, y, size)``, fractions of the image side, top-left corner): the region is
marked on every image and shown under it, outside the image, at a fixed magnification of
:data:`~.figbase.ZOOM_MAGNIFICATION` × the image's own scale (nearest-neighbour, pixels stay
pixels). A region larger than a third of the side would not fit under its image at that
magnification: its central third is shown (and marked) instead, and the caption says so. An image
in which the region is less than a pixel or so (the measurement of ×4 super-resolution on 8 × 8
digits) gets no inset.

The layout is placed in inches (no automatic layout), so the page size is fixed and measured.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from ..run import paths as run_paths
from . import escape
from .data import RunData
from .figbase import (
    ZOOM_MAGNIFICATION,
    Ctx,
    FigureRecord,
    board_title,
    cell_name,
    inside_run,
    plain_title,
    read_image_or_note,
    save_figure,
    text_width_in,
    wrap_to,
)
from .summary import CellSummary, Leaderboard

TITLE_PT, LABEL_PT = 6.5, 6.0
ZOOM_EDGE = "#E69F00"
MAX_IMAGES = 3


def grid_cells(b: Leaderboard, single: bool) -> list[CellSummary]:
    """The cells of the grid: all cells that ran (double column), or the chosen few (single)."""
    ran = [c for c in b.cells if c.n_rows]
    if not single:
        return ran
    ranked = sorted((c for c in ran if c.rank is not None), key=lambda c: (c.rank, c.key))

    def best_of(solver: str | None) -> CellSummary | None:
        return next((c for c in ranked if c.solver == solver), None) if solver else None

    chosen: list[CellSummary] = []
    for c in [ranked[0] if ranked else None, best_of(b.reference), best_of("vml_map"), *ranked, *ran]:
        if c is not None and all(c.key != o.key for o in chosen) and len(chosen) < 4:
            chosen.append(c)
    return chosen


def effective_zoom(zoom: tuple[float, float, float]) -> tuple[float, float, float]:
    """The region shown: ``zoom`` itself, or its central part of side 1/magnification."""
    x, y, size = zoom
    s = min(size, 1.0 / ZOOM_MAGNIFICATION)
    return x + (size - s) / 2, y + (size - s) / 2, s


def zoom_crop(img: np.ndarray, zoom: tuple[float, float, float]) -> tuple[int, int, np.ndarray]:
    """``(col0, row0, crop)`` of the region ``zoom`` (already effective) of ``img``."""
    h, w = img.shape[:2]
    c0, r0 = round(zoom[0] * w), round(zoom[1] * h)
    crop = img[r0:r0 + max(1, round(zoom[2] * h)), c0:c0 + max(1, round(zoom[2] * w))]
    return c0, r0, crop


def _canvas(W: float, H: float):
    """A figure of W × H inches with one axes over all of it whose data units are inches (origin
    bottom-left, no axis drawn): every image and text of the grid is placed on it, which is far
    cheaper to draw than an axes per image."""
    fig = plt.figure(figsize=(W, H))
    fig.suppressComposite = True   # each image embedded on its own (no figure-wide raster in the PDF)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(0, W)
    ax.set_ylim(0, H)
    return fig, ax


def place(ax, img: np.ndarray, x0: float, y_top: float, side: float) -> tuple[float, float, float, float, float]:
    """Draw ``img`` in the ``side`` × ``side`` inch box whose top-left corner is (x0, y_top), its
    aspect kept and centred; returns ``(left, bottom, width, height, inches per pixel)``."""
    h, w = img.shape[:2]
    px = min(side / w, side / h)
    iw, ih = w * px, h * px
    left, bottom = x0 + (side - iw) / 2, y_top - side + (side - ih) / 2
    ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              extent=(left, left + iw, bottom, bottom + ih), aspect="auto")
    return left, bottom, iw, ih, px


def zoom_inset(ax, img: np.ndarray, zoom: tuple[float, float, float], box: tuple, below_in: float):
    """Mark the region ``zoom`` (already effective) on the image drawn in ``box`` (from
    :func:`place`) and draw its crop ZOOM_MAGNIFICATION × larger, centred ``below_in`` inches under
    the image (outside it). Returns the inset's extent ``(left, right, bottom, top)`` or None."""
    c0, r0, crop = zoom_crop(img, zoom)
    left, bottom, iw, _, px = box
    if not crop.size or crop.shape[1] * px > 1.5 * zoom[2] * iw + 1e-9:
        return None      # the region is under a pixel of this image (a small measurement): no inset
    h = img.shape[0]
    ax.add_patch(Rectangle((left + c0 * px, bottom + (h - r0 - crop.shape[0]) * px), crop.shape[1] * px,
                           crop.shape[0] * px, fill=False, edgecolor=ZOOM_EDGE, linewidth=0.6))
    zw, zh = ZOOM_MAGNIFICATION * px * crop.shape[1], ZOOM_MAGNIFICATION * px * crop.shape[0]
    zl, zt = left + (iw - zw) / 2, bottom - below_in
    ax.imshow(np.clip(crop, 0, 1), cmap="gray" if crop.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest", extent=(zl, zl + zw, zt - zh, zt), aspect="auto")
    ax.add_patch(Rectangle((zl, zt - zh), zw, zh, fill=False, edgecolor=ZOOM_EDGE, linewidth=0.8))
    return zl, zl + zw, zt - zh, zt


def _panels(b: Leaderboard, run: RunData, ctx: Ctx, iid: str, rows: pd.DataFrame, cells: list[CellSummary]):
    """``(seed, [(image or None, note, score)])`` for truth, measurement and each cell of one image."""
    r_img = rows[rows["image_id"].astype(str) == iid]
    seed = int(pd.to_numeric(r_img["seed"]).min())
    out = [(read_image_or_note(inside_run(run.run_dir, run_paths.truth_rel(b.dataset, iid)), ctx), "missing", ""),
           (read_image_or_note(inside_run(run.run_dir, run_paths.meas_rel(b.task, b.dataset, iid, seed)), ctx),
            "missing", "")]
    for c in cells:
        sel = r_img[(r_img["solver"].astype(str) == c.solver) & (r_img["preset"].astype(str) == c.preset)
                    & (r_img["prior"].astype(str) == c.prior) & (pd.to_numeric(r_img["seed"]) == seed)]
        img, why = None, "missing"
        if len(sel):
            r = sel.iloc[0]
            if str(r["status"]) != "ok":
                why = str(r["status"])
            elif r.get("recon_path") and not pd.isna(r.get("recon_path")):
                img = read_image_or_note(inside_run(run.run_dir, str(r["recon_path"])), ctx)
        psnr = pd.to_numeric(sel.iloc[0].get("psnr"), errors="coerce") if len(sel) and img is not None else np.nan
        out.append((img, why, f"{psnr:.1f} dB" if np.isfinite(psnr) else ""))
    return seed, out


def grid(b: Leaderboard, run: RunData, ctx: Ctx, image_ids: list[str] | None,
         max_images: int = MAX_IMAGES, zoom: tuple[float, float, float] | None = None) -> FigureRecord | None:
    df = run.results
    rows = df[(df["dataset"].astype(str) == b.dataset) & (df["task"].astype(str) == b.task)]
    if not len(rows):
        return None
    available = sorted(rows["image_id"].astype(str).unique())
    ids = [i for i in (image_ids or []) if i in available] if image_ids else available[:max_images]
    cells = grid_cells(b, ctx.single)
    if not ids:
        return None
    zoom_e = effective_zoom(zoom) if zoom is not None else None
    W, right, top = ctx.width, 0.03, 0.24
    ncol = 2 + len(cells)
    side = min((W - 0.27 - right) / ncol - 0.05, 1.1)      # with room for two lines of image id
    row_labels = [wrap_to(escape.mpl(i), side, LABEL_PT, max_lines=2) for i in ids]
    left = 0.07 + 0.1 * max(t.count("\n") + 1 for t in row_labels)
    cw = (W - left - right) / ncol
    side = min(cw - 0.05, 1.1)
    meas = "measurement" if text_width_in("measurement", TITLE_PT) <= cw - 0.03 else "meas."
    names = ["truth", meas, *[cell_name(c) for c in cells]]
    titles = [wrap_to(n, cw - 0.03, TITLE_PT) for n in names]
    title_h = 0.11 * max(t.count("\n") + 1 for t in titles) + 0.03
    zoom_h = (ZOOM_MAGNIFICATION * zoom_e[2] * side + 0.06) if zoom_e else 0.0
    row_h = side + 0.13 + zoom_h + 0.03
    while len(ids) > 1 and top + title_h + len(ids) * row_h + 0.03 > ctx.max_height:
        ids = ids[:-1]
    H = top + title_h + len(ids) * row_h + 0.03
    fig, ax = _canvas(W, H)
    ax.text(W / 2, H - 0.05, board_title(b, ctx), ha="center", va="top", fontsize=7.5)
    seeds = []
    for i, iid in enumerate(ids):
        seed, panels = _panels(b, run, ctx, iid, rows, cells)
        seeds.append(seed)
        y_top = H - top - title_h - i * row_h
        for j, (img, why, score) in enumerate(panels):
            x0 = left + j * cw + (cw - side) / 2
            xc = x0 + side / 2
            if img is not None:
                box = place(ax, img, x0, y_top, side)
                if zoom_e is not None:
                    zoom_inset(ax, img, zoom_e, box, below_in=0.15)
            else:
                ax.text(xc, y_top - side / 2, wrap_to(escape.mpl(why or "missing"), side - 0.04, LABEL_PT),
                        ha="center", va="center", fontsize=LABEL_PT, color="0.4")
            if score:
                ax.text(xc, y_top - side - 0.01, score, ha="center", va="top", fontsize=LABEL_PT)
            if i == 0:
                ax.text(xc, y_top + 0.03, titles[j], ha="center", va="bottom", fontsize=TITLE_PT, linespacing=1.05)
            if j == 0:
                ax.text(x0 - 0.03, y_top - side / 2, row_labels[i], rotation=90, ha="right", va="center",
                        fontsize=LABEL_PT)
    return save_figure(fig, ctx, "grid", b, f"Samples: {plain_title(b, ctx)}",
                       _caption(seeds, ctx.single, zoom, zoom_e))


def _caption(seeds: list, single: bool, zoom, zoom_e) -> str:
    """The grid's caption: what the columns are, the seeds shown, the chosen cells at single
    column width and the zoom insets."""
    inset = ("" if zoom is None else
             f" Insets: the marked region (top-left at {zoom_e[0]:.3g}, {zoom_e[1]:.3g} of the side, "
             f"size {zoom_e[2]:.3g}) magnified {ZOOM_MAGNIFICATION}× (nearest-neighbour), under each "
             "image"
             + (" — the central third of the requested region, which would not fit at that "
                "magnification." if zoom_e[2] < zoom[2] - 1e-12 else "."))
    chosen = ("" if not single else " Single column: the best-ranked cell, the reference and "
              "VML-MAP (then the next-ranked).")
    return ("Truth | measurement (pixel-space visualisation of y) | each cell's reconstruction "
            f"(clipped to [0,1]) with its PSNR [dB] below, for the lowest seed of each image (seeds: "
            f"{', '.join(str(s) for s in seeds)})." + chosen + inset)
