"""Paper figures of a run (matplotlib/seaborn, Agg backend), each written as PDF and PNG.

Per leaderboard (dataset × task):

* ``pareto``   quality (primary metric, mean ± 95% CI) versus s/image on a log axis, with the
  Pareto front (no other cell is both faster and better);
* ``bars``     every metric with values, one bar per cell with its 95% CI;
* ``grid``     sample grid: truth | measurement | each cell, for selected image ids;
* ``nfe``      primary metric versus NFE when one solver appears with several NFE values
  (presets/overrides that change the step count);
* ``memory``   peak GPU memory per cell (skipped with a note when every value is NULL, e.g. CPU);
* ``dist_to_map`` distribution of the distance to the exact MAP (analytic priors only).

Colours: one per solver across all figures (:mod:`invbench.bench.report.style`).
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import run_paths
from ..fsafety import atomic_write_bytes
from . import escape
from .data import RunData
from .pixels import ImageTooLarge, read_image
from .stats import direction
from .style import RC, Palette
from .summary import CellSummary, Leaderboard
from .tables import DISPLAY


@dataclass
class FigureRecord:
    kind: str
    title: str
    caption: str
    png: Path
    pdf: Path
    width_in: float = 6.8                 # the column width it was drawn for (inches)
    axis_labels: tuple = ()               # (xlabel, ylabel) of every visible axes, for checks


# Journal column widths (inches): every figure is drawn once for each; the single-column files
# carry the suffix ``__col1``. Set by :func:`make_figures` while it draws.
DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN = 6.8, 3.3
_COL: dict = {"w": DOUBLE_COLUMN_IN, "suffix": "", "refused": []}   # refused: images over the pixel cap


def _width() -> float:
    return _COL["w"]


def _single() -> bool:
    return _COL["w"] < 5.0


def _metric_label(m: str) -> str:
    d = direction(m)
    return DISPLAY.get(m, m) + {1: " ↑", -1: " ↓"}.get(d, "")


def _save(fig, out_dir: Path, kind: str, b: Leaderboard | None, title: str, caption: str) -> FigureRecord:
    stem = (kind if b is None else f"{kind}__{escape.slug(b.dataset)}__{escape.slug(b.task)}") + _COL["suffix"]
    labels = tuple((ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_visible())
    png, pdf = out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"
    for path, fmt in ((png, "png"), (pdf, "pdf")):   # rendered in memory, then written atomically
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    return FigureRecord(kind, title, caption, png, pdf, _width(), labels)


def _title(b: Leaderboard) -> str:
    return escape.mpl(f"{b.dataset} · {b.task}")


def _legend(ax, handles_by_label: dict) -> None:
    """Legend right of the axes (double column) or below it in two columns (single column)."""
    if handles_by_label:
        if _single():
            ax.legend(handles_by_label.values(), handles_by_label.keys(), frameon=False, ncol=2,
                      loc="upper center", bbox_to_anchor=(0.5, -0.28), fontsize=6)
        else:
            ax.legend(handles_by_label.values(), handles_by_label.keys(), frameon=False,
                      loc="center left", bbox_to_anchor=(1.0, 0.5))


def _plain_log_ticks(axis) -> None:
    """Log axis with plain-number labels (``0.2``, ``1``, ``20``) and unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def pareto(b: Leaderboard, pal: Palette, out_dir: Path) -> FigureRecord | None:
    pts = [c for c in b.cells if b.primary in c.metrics and c.seconds.n and c.seconds.mean > 0]
    if not pts:
        return None
    d = direction(b.primary) or 1
    fig, ax = plt.subplots(figsize=(0.68 * _width(), 3.0) if not _single() else (_width(), 2.6))
    handles = {}
    for c in pts:
        ci = c.metrics[b.primary]
        h = ax.errorbar(c.seconds.mean, ci.mean, yerr=_yerr([ci]), fmt=pal.marker(c.solver, c.preset),
                        color=pal.color(c.solver), capsize=2, linestyle="none")
        handles[escape.mpl(c.label)] = h
    # Pareto front: sorted by time, keep points better than every faster point
    front, best = [], -math.inf
    for c in sorted(pts, key=lambda c: (c.seconds.mean, -d * c.metrics[b.primary].mean)):
        v = d * c.metrics[b.primary].mean
        if v > best:
            front.append(c)
            best = v
    if len(front) > 1:
        ax.step([c.seconds.mean for c in front], [c.metrics[b.primary].mean for c in front], where="post",
                color="0.5", linestyle="--", linewidth=0.8, zorder=0, label="Pareto front")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("time per image [s] (log scale)")
    ax.set_ylabel(axis_label(b.primary) + ", mean and 95% CI")
    ax.set_title(_title(b))
    _legend(ax, handles)
    return _save(fig, out_dir, "pareto", b, f"Quality vs time: {b.dataset} / {b.task}",
                 f"{b.primary} (mean ± 95% CI) against seconds per image (log axis); the dashed line "
                 "is the Pareto front.")


# Axis units of each metric (docs/metrics.md); the ideal value gets a reference line.
AXIS_UNITS: dict[str, str] = {
    "psnr": "dB", "ssim": "unitless", "lpips": "unitless", "mse": "pixel units²",
    "consistency": "residual / noise level", "dist_to_map": "model units, RMS", "rel_dist_to_map": "ratio",
    "logpost_gap": "nats", "err_post_mean": "model units, RMS", "seconds": "s",
}
IDEAL: dict[str, float] = {"consistency": 1.0}
PANELS_PER_ROW = 4


def axis_label(m: str, wrap: bool = False) -> str:
    """``"PSNR ↑ [dB]"``: the metric, its direction and its unit (the unit on a second line with
    ``wrap``, for panels side by side)."""
    unit = AXIS_UNITS.get(m, "")
    return _metric_label(m) + (("\n" if wrap else " ") + f"[{unit}]" if unit else "")


def _yerr(cis: list) -> np.ndarray:
    """Asymmetric error bars (2 × n) from intervals; 0 where an interval is undefined."""
    lo = [c.mean - c.low if c is not None and math.isfinite(c.half_width) else 0.0 for c in cis]
    hi = [c.high - c.mean if c is not None and math.isfinite(c.half_width) else 0.0 for c in cis]
    return np.array([lo, hi], dtype=float)


def bars(b: Leaderboard, pal: Palette, out_dir: Path) -> FigureRecord | None:
    """Dot-and-interval panels, one per metric (≤ 4 per row): the mean of each cell with its 95%
    interval, on an axis fitted to the solvers (oracles are drawn, but an oracle far outside the
    solvers' range does not stretch the axis; it is marked at the edge instead)."""
    ms = [m for m in b.metrics if m not in b.unavailable and any(m in c.metrics for c in b.cells)]
    cells = [c for c in b.cells if c.n_ok]
    if not ms or not cells:
        return None
    ncol = min(PANELS_PER_ROW if not _single() else 2, len(ms))
    nrow = math.ceil(len(ms) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(_width(), 0.6 + (2.3 if not _single() else 2.0) * nrow),
                             squeeze=False)
    y = np.arange(len(cells))[::-1]
    for k, ax in enumerate(axes.flat):
        if k >= len(ms):
            ax.set_visible(False)
            continue
        m = ms[k]
        cis = [c.metrics.get(m) for c in cells]
        means = np.array([ci.mean if ci is not None else np.nan for ci in cis], dtype=float)
        err = _yerr(cis)
        solver_rows = [i for i, c in enumerate(cells) if not c.solver.startswith("oracle") and np.isfinite(means[i])]
        keep = solver_rows or [i for i in range(len(cells)) if np.isfinite(means[i])]
        lo = np.nanmin(means[keep] - err[0][keep]) if keep else np.nan
        hi = np.nanmax(means[keep] + err[1][keep]) if keep else np.nan
        for i, c in enumerate(cells):
            if not np.isfinite(means[i]):
                continue
            ax.errorbar(means[i], y[i], xerr=err[:, i : i + 1], fmt=pal.marker(c.solver, c.preset),
                        color=pal.color(c.solver), capsize=2, markersize=4, linestyle="none")
        if np.isfinite(lo) and np.isfinite(hi):
            pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1e-12) * 0.1
            x0, x1 = lo - pad, hi + pad
            if m in IDEAL:
                x0, x1 = min(x0, IDEAL[m] - pad), max(x1, IDEAL[m] + pad)
            ax.set_xlim(x0, x1)
            for i in range(len(cells)):   # an oracle outside the solvers' range: marked at the edge
                if i not in keep and np.isfinite(means[i]) and not x0 <= means[i] <= x1:
                    edge = x0 if means[i] < x0 else x1
                    ax.annotate(f"{means[i]:.2g}", (edge, y[i]), fontsize=6, va="center",
                                ha="left" if edge == x0 else "right", color=pal.color(cells[i].solver))
        if m in IDEAL:
            ax.axvline(IDEAL[m], color="0.4", linewidth=0.8, linestyle=":", zorder=0)
        ax.set_yticks(y, [escape.mpl(c.label) for c in cells] if k % ncol == 0 else [""] * len(cells))
        ax.set_xlabel(axis_label(m, wrap=True), fontsize=8 if not _single() else 7)
        ax.grid(axis="y", visible=False)
    fig.suptitle(_title(b), fontsize=9)
    fig.tight_layout()
    return _save(fig, out_dir, "bars", b, f"Metrics: {b.dataset} / {b.task}",
                 "Mean per cell with its 95% interval over images × seeds (ok rows): Student-t for PSNR, "
                 "SSIM and consistency, a bootstrap for non-negative metrics; dotted line: the ideal value; "
                 "oracles outside the solvers' range are written at the axis edge.")


def _inside(run_dir: Path, rel: str | Path) -> Path | None:
    """``run_dir / rel`` if it stays inside ``run_dir`` and exists, else None."""
    try:
        root = run_dir.resolve()
        p = (run_dir / rel).resolve()
        p.relative_to(root)
    except (ValueError, OSError):
        return None
    return p if p.is_file() else None


def _read_png(p: Path | None) -> np.ndarray | None:
    """The image at ``p`` in [0, 1] (:func:`invbench.bench.report.pixels.read_image`), or None when
    absent, unreadable or over the pixel cap (then its one-line reason is kept for the notes)."""
    if p is None:
        return None
    try:
        return read_image(p)
    except ImageTooLarge as e:
        if str(e) not in _COL["refused"]:
            _COL["refused"].append(str(e))
        return None


def _zoom_inset(ax, img: np.ndarray, zoom: tuple[float, float, float]) -> None:
    """Mark the square region ``zoom = (x, y, size)`` (fractions of the image side, top-left
    corner) on ``ax`` and show it magnified in the corner farthest from it (nearest-neighbour, so
    pixels stay pixels)."""
    from matplotlib.patches import Rectangle

    h, w = img.shape[:2]
    c0, r0 = round(zoom[0] * w), round(zoom[1] * h)
    crop = img[r0:r0 + max(1, round(zoom[2] * h)), c0:c0 + max(1, round(zoom[2] * w))]
    if not crop.size:
        return
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), crop.shape[1], crop.shape[0], fill=False,
                           edgecolor="#E69F00", linewidth=0.6))
    right = zoom[0] + zoom[2] / 2 < 0.5          # region on the left -> inset on the right
    below = zoom[1] + zoom[2] / 2 < 0.5          # region at the top -> inset at the bottom
    ins = ax.inset_axes([0.55 if right else 0.0, 0.0 if below else 0.55, 0.45, 0.45])
    ins.imshow(np.clip(crop, 0, 1), cmap="gray" if crop.ndim == 2 else None, vmin=0, vmax=1,
               interpolation="nearest")
    ins.set_xticks([])
    ins.set_yticks([])
    for s in ins.spines.values():
        s.set_edgecolor("#E69F00")
        s.set_linewidth(0.6)


def grid(b: Leaderboard, run: RunData, out_dir: Path, image_ids: list[str] | None,
         max_images: int = 3, zoom: tuple[float, float, float] | None = None) -> FigureRecord | None:
    df = run.results
    rows = df[(df["dataset"].astype(str) == b.dataset) & (df["task"].astype(str) == b.task)]
    if not len(rows):
        return None
    available = sorted(rows["image_id"].astype(str).unique())
    ids = [i for i in (image_ids or []) if i in available] if image_ids else available[:max_images]
    if not ids:
        return None
    cells = [c for c in b.cells if c.n_rows]   # a cell of the grid that has not run has no image
    ncol = 2 + len(cells)
    side = min(1.25, _width() / ncol)
    fig, axes = plt.subplots(len(ids), ncol, figsize=(side * ncol, (side + 0.15) * len(ids)), squeeze=False)
    for i, iid in enumerate(ids):
        r_img = rows[rows["image_id"].astype(str) == iid]
        seed = int(pd.to_numeric(r_img["seed"]).min())
        panels = [("truth", _read_png(_inside(run.run_dir, run_paths.truth_rel(b.dataset, iid))), "", ""),
                  ("meas." if _single() else "measurement",
                   _read_png(_inside(run.run_dir, run_paths.meas_rel(b.task, b.dataset, iid, seed))), "", "")]
        for c in cells:
            sel = r_img[(r_img["solver"].astype(str) == c.solver) & (r_img["preset"].astype(str) == c.preset)
                        & (r_img["prior"].astype(str) == c.prior) & (pd.to_numeric(r_img["seed"]) == seed)]
            img, why = None, "missing"
            if len(sel):
                r = sel.iloc[0]
                if str(r["status"]) != "ok":
                    why = str(r["status"])
                elif r.get("recon_path") and not pd.isna(r.get("recon_path")):
                    img = _read_png(_inside(run.run_dir, str(r["recon_path"])))
            psnr = pd.to_numeric(sel.iloc[0].get("psnr"), errors="coerce") if len(sel) and img is not None else np.nan
            panels.append((c.label, img, why, f"{psnr:.1f} dB" if np.isfinite(psnr) else ""))
        for j, (name, img, why, score) in enumerate(panels):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for s in ax.spines.values():
                s.set_visible(False)
            if img is not None:
                ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                          interpolation="nearest")
                if zoom is not None:
                    _zoom_inset(ax, img, zoom)
            else:
                ax.text(0.5, 0.5, escape.mpl(why or "missing"), ha="center", va="center", fontsize=6,
                        transform=ax.transAxes, color="0.4")
            if score:
                ax.set_xlabel(score, fontsize=5, labelpad=1)   # the image's PSNR
            if i == 0:   # at single-column width long labels wrap instead of running into the next column
                lines = textwrap.wrap(name, 10, break_on_hyphens=False) if _single() else [name]
                ax.set_title("\n".join(escape.mpl(t) for t in lines), fontsize=6)
            if j == 0:
                ax.set_ylabel(f"{escape.mpl(iid)}\nseed {seed}", fontsize=6)
    fig.suptitle(_title(b), fontsize=8)
    fig.tight_layout()
    inset = ("" if zoom is None else
             f" Insets: the marked region (top-left at {zoom[0]:g}, {zoom[1]:g} of the side, size {zoom[2]:g}) "
             "magnified, nearest-neighbour.")
    return _save(fig, out_dir, "grid", b, f"Samples: {b.dataset} / {b.task}",
                 "Truth | measurement (pixel-space visualisation of y) | each cell's reconstruction "
                 "(clipped to [0,1]) with its PSNR [dB] below." + inset)


def nfe_curves(b: Leaderboard, pal: Palette, out_dir: Path) -> FigureRecord | None:
    by: dict[tuple[str, str], list[CellSummary]] = {}
    for c in b.cells:
        if b.primary in c.metrics and math.isfinite(c.nfe):
            by.setdefault((c.solver, c.prior), []).append(c)
    curves = {k: sorted(v, key=lambda c: c.nfe) for k, v in by.items() if any(c.nfe > 0 for c in v)}
    if not curves:   # every solver is drawn: a line through its step counts, or one point
        return None
    fig, ax = plt.subplots(figsize=(0.65 * _width(), 3.0) if not _single() else (_width(), 2.6))
    allx = []
    for (solver, prior), cs in sorted(curves.items()):
        xs = [c.nfe for c in cs]
        allx += xs
        ys = [c.metrics[b.primary].mean for c in cs]
        es = _yerr([c.metrics[b.primary] for c in cs])
        lab = solver if len({p for (_, p) in curves}) == 1 else f"{solver} / {prior}"
        ax.errorbar(xs, ys, yerr=es, color=pal.color(solver), marker=pal.marker(solver, cs[0].preset), capsize=2,
                    label=escape.mpl(lab), linestyle="-" if len(cs) > 1 else "none")
    if min(allx) > 0 and max(allx) / min(allx) > 10:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel(axis_label(b.primary) + ", mean and 95% CI")
    ax.set_title(_title(b))
    _legend(ax, dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True)))
    return _save(fig, out_dir, "nfe", b, f"{b.primary} vs NFE: {b.dataset} / {b.task}",
                 "Quality at the cost each solver paid, in network evaluations per image (log axis when "
                 "the range is wide): a line joins one solver's step counts (presets or overrides), a lone "
                 "point is a solver run at one step count.")


def memory(b: Leaderboard, pal: Palette, out_dir: Path) -> FigureRecord | None:
    cells = [c for c in b.cells if math.isfinite(c.peak_mem_mib)]
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(min(_width(), max(3.0, 0.5 * len(cells) + 1.5)), 2.6))
    x = np.arange(len(cells))
    ax.bar(x, [c.peak_mem_mib for c in cells], color=[pal.color(c.solver) for c in cells])
    ax.set_xticks(x, [escape.mpl(c.label) for c in cells], rotation=45, ha="right")
    ax.set_ylabel("peak GPU memory [MiB]")
    ax.grid(axis="x", visible=False)
    ax.set_title(_title(b))
    return _save(fig, out_dir, "memory", b, f"Peak GPU memory: {b.dataset} / {b.task}",
                 "Maximum over images of the per-cell peak GPU memory (reset per cell).")


def dist_to_map(b: Leaderboard, run: RunData, pal: Palette, out_dir: Path) -> FigureRecord | None:
    import seaborn as sns

    df = run.results
    if "dist_to_map" not in df:
        return None
    rows = df[(df["dataset"].astype(str) == b.dataset) & (df["task"].astype(str) == b.task)
              & (df["status"].astype(str) == "ok")].copy()
    rows["dist_to_map"] = pd.to_numeric(rows["dist_to_map"], errors="coerce")
    rows = rows[np.isfinite(rows["dist_to_map"])]
    rows = rows[rows["solver"].astype(str) != "oracle_map"]  # ≈ 0 by construction; it would crush the axis
    if not len(rows):
        return None
    from .summary import cell_label

    rows["label"] = [escape.mpl(cell_label(s, p)) for s, p in zip(rows["solver"].astype(str), rows["preset"].astype(str))]
    order = [escape.mpl(c.label) for c in b.cells if escape.mpl(c.label) in set(rows["label"])]
    colors = {escape.mpl(c.label): pal.color(c.solver) for c in b.cells}
    fig, ax = plt.subplots(figsize=(min(_width(), max(3.0, 0.6 * len(order) + 1.5)), 2.8))
    sns.boxplot(data=rows, x="label", y="dist_to_map", hue="label", order=order, palette=colors, ax=ax,
                fliersize=0, linewidth=0.8, legend=False)
    state = np.random.get_state()   # seaborn jitters with numpy's global generator: seed it, so the
    np.random.seed(0)                # same run always gives the same figure, and restore it after
    try:
        sns.stripplot(data=rows, x="label", y="dist_to_map", order=order, color="0.2", size=2.5, ax=ax, jitter=0.2)
    finally:
        np.random.set_state(state)
    v = rows["dist_to_map"].to_numpy()
    if (v > 0).all() and v.max() / v.min() > 100:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("")
    ax.set_ylabel(axis_label("dist_to_map").replace("dist. to MAP", "distance to exact MAP"))
    ax.tick_params(axis="x", rotation=45)
    for t in ax.get_xticklabels():
        t.set_ha("right")
    ax.set_title(_title(b))
    return _save(fig, out_dir, "dist_to_map", b, f"Distance to the exact MAP: {b.dataset} / {b.task}",
                 "Per image × seed distance of the reconstruction to the exact MAP of the analytic prior's "
                 "posterior (box: quartiles; points: rows); the exact-MAP oracle, at distance ≈ 0 by construction, is left out.")


def cd_figure(boards: list[Leaderboard], pal: Palette, out_dir: Path) -> FigureRecord | None:
    """Critical-difference diagram of the solvers' average ranks over all (dataset, task) blocks
    (bench/report/cd.py): rank axis best-left, a bar joins solvers closer than the CD."""
    from .cd import critical_difference

    res = critical_difference(boards)
    if res is None:
        return None
    k = len(res.methods)
    fig, ax = plt.subplots(figsize=(_width(), 1.2 + 0.22 * k))
    ax.set_xlim(0.7, k + 0.3)              # rank 1 (best) on the left; names in the side margins
    ax.set_ylim(-(k // 2 + 1.5), 2.2)
    ax.set_yticks([])
    for side in ("left", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.xaxis.tick_top()
    ax.set_xticks(range(1, k + 1))
    ax.set_xlabel("average rank over tasks [1 = best]", fontsize=8)
    ax.xaxis.set_label_position("top")
    ax.grid(False)
    ax.plot([1, 1 + res.cd], [1.5, 1.5], color="0.2", linewidth=1.5)
    ax.text(1 + res.cd / 2, 1.7, f"CD = {res.cd:.2f}", ha="center", fontsize=7)
    half = math.ceil(k / 2)
    for i, (m, r) in enumerate(zip(res.methods, res.avg_rank, strict=True)):
        left = i < half
        y = -(i if left else k - 1 - i) - 0.8
        x_text = 0.7 if left else k + 0.3
        ax.plot([r, r, x_text], [0, y, y], color=pal.color(m), linewidth=1.0)
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{escape.mpl(m)} ({r:.2f})",
                ha="right" if left else "left", va="center", fontsize=7)
    for j, (a, b_) in enumerate(res.cliques):
        ax.plot([res.avg_rank[a] - 0.03, res.avg_rank[b_] + 0.03], [-0.25 - 0.18 * j] * 2, color="0.15", linewidth=2.2)
    fig.subplots_adjust(left=0.24, right=0.76, top=0.62, bottom=0.02)
    fp = "n/a" if not math.isfinite(res.friedman_p) else f"{res.friedman_p:.3g}"
    ax.set_title(f"{k} solvers over {res.n_blocks} dataset × task blocks (Friedman p = {fp})", fontsize=8, pad=22)
    return _save(fig, out_dir, "cd", None, "Overall ranking: critical-difference diagram",
                 f"Average rank of each solver by its primary metric over {res.n_blocks} (dataset, task) "
                 f"blocks (oracles excluded; best preset per block). Friedman test p = {fp}; solvers joined "
                 f"by a bar differ by less than the Nemenyi critical difference CD = {res.cd:.2f} (α = 0.05) "
                 "and are not distinguishable (Demšar 2006).")


def make_figures(run: RunData, boards: list[Leaderboard], out_dir: Path,
                 image_ids: list[str] | None = None, *, zoom: tuple[float, float, float] | None = None,
                 widths: tuple[float, ...] = (DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN),
                 refused: list[str] | None = None) -> tuple[list[FigureRecord], list[str]]:
    """Write all figures into ``out_dir``, each at double-column (6.8 in, ``<stem>.pdf|png``) and
    single-column width (3.3 in, ``<stem>__col1.pdf|png``) unless ``widths`` names only one; returns
    the records and notes on skipped figures. ``zoom`` adds a zoomed inset to the sample grids
    (see :func:`_zoom_inset`). Run images over the pixel cap are not drawn: one line each, naming
    the file, goes to the notes and to ``refused``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _COL["refused"] = []
    solvers = {c.solver for b in boards for c in b.cells}
    presets: dict[str, list[str]] = {}
    for b in boards:
        for c in b.cells:
            presets.setdefault(c.solver, [])
            if c.preset not in presets[c.solver]:
                presets[c.solver].append(c.preset)
    pal = Palette(solvers, presets)
    recs: list[FigureRecord] = []
    notes: list[str] = []
    with plt.rc_context(RC):
        for width in widths:
            if width not in (DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN):
                raise ValueError(f"figure width {width} in: expected {DOUBLE_COLUMN_IN} or {SINGLE_COLUMN_IN}")
            suffix = "" if width == DOUBLE_COLUMN_IN else "__col1"
            _COL.update(w=width, suffix=suffix)
            try:
                cd = cd_figure(boards, pal, out_dir)
                recs += [cd] if cd is not None else []
                for b in boards:
                    made = (pareto(b, pal, out_dir), bars(b, pal, out_dir), grid(b, run, out_dir, image_ids, zoom=zoom),
                            nfe_curves(b, pal, out_dir), memory(b, pal, out_dir), dist_to_map(b, run, pal, out_dir))
                    recs += [r for r in made if r is not None]
            finally:
                _COL.update(w=DOUBLE_COLUMN_IN, suffix="")
        if not any(r.kind == "cd" for r in recs):
            notes.append("No critical-difference diagram: it needs at least 3 solvers common to at least 2 "
                         "(dataset, task) blocks.")
    if boards and not any(math.isfinite(c.peak_mem_mib) for b in boards for c in b.cells):
        notes.append("Peak-memory bars skipped: peak GPU memory is NULL for every cell (CPU run); "
                     "peak RSS is in the tables.")
    if not any(r.kind == "nfe" for r in recs):
        notes.append("No quality-vs-NFE plot: no cell recorded network evaluations.")
    notes += _COL["refused"]
    if refused is not None:
        refused += _COL["refused"]
    write_manifest(recs, out_dir / MANIFEST)
    return recs, notes


MANIFEST = "figures.json"


def write_manifest(recs: list[FigureRecord], path: Path) -> None:
    """``figures.json``: one entry per figure file pair (kind, title, caption, PNG and PDF names,
    the column width in inches, the (x, y) axis labels), for scripts that pick figures for a paper
    and for checks that read a report without drawing it again."""
    import json

    entries = [{"kind": r.kind, "title": r.title, "caption": r.caption, "png": r.png.name, "pdf": r.pdf.name,
                "width_in": r.width_in, "axis_labels": [list(p) for p in r.axis_labels]} for r in recs]
    atomic_write_bytes(path, (json.dumps(entries, indent=1, ensure_ascii=False) + "\n").encode())


def read_manifest(folder: Path) -> list[FigureRecord]:
    """The :class:`FigureRecord` list of a report's ``figures/`` folder (see :func:`write_manifest`)."""
    import json

    return [FigureRecord(e["kind"], e["title"], e["caption"], folder / e["png"], folder / e["pdf"], e["width_in"],
                         tuple(tuple(p) for p in e["axis_labels"])) for e in json.loads((folder / MANIFEST).read_text())]
