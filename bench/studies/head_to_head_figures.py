"""The head-to-head study's figures, drawn in the report's style at double-column width (6.8 in).

* ``tuned_vs_released``: per prior (rows) and task (columns), every solver's mean PSNR with its
  95 % t-interval over test images, tuned (filled) and released (hollow); under the exact prior the
  posterior mean's PSNR is a dashed line. Values far outside a panel's range (a failed released
  setting) are drawn at the edge with their value (:mod:`invbench.bench.report.figaxes`).
* ``learned_vs_exact``: per task, each solver's tuned mean PSNR under the exact twin (x) against
  the learned prior (y): a ranking that survives the change of prior is a monotone cloud.
* ``budget__<prior>``: for a prior tuned at two budgets or more, mean PSNR against FE per solve.

Each figure is checked as drawn (:func:`invbench.bench.report.figcheck.check_figure`: no text under
the style's minimum size, none off the page, no overlaps); :func:`draw_all` returns the problems.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from ..report import figaxes, fonts
from ..report.figbase import DOUBLE_COLUMN_IN, Ctx, dot, save_figure
from ..report.figcheck import check_figure
from ..report.names import solver_name
from ..report.style import MIN_FONT_PT, RC, Palette
from .head_to_head import ARM_RELEASED, Study

__all__ = ["draw_all", "learned_vs_exact", "tuned_vs_released"]

ROW_IN = 0.15


def _save(fig, out_dir: Path, stem: str, pal: Palette) -> list[str]:
    """Write ``fig`` as PNG and PDF through the report's :func:`~invbench.bench.report.figbase.save_figure`
    (which measures it as the PNG is drawn) and return what :func:`check_figure` found."""
    problems: list[str] = []

    def inspect(f, name: str) -> None:
        problems.extend(f"{name}: {p}" for p in check_figure(f, MIN_FONT_PT))

    save_figure(fig, Ctx(DOUBLE_COLUMN_IN, pal, out_dir, inspect=inspect), stem, None, stem, "")
    return problems


def _panel(
    ax, study: Study, prior: str, task: str, arm: str, pal: Palette, solvers: list[str]
) -> None:
    y = np.arange(len(solvers))[::-1].astype(float)
    pts = []  # (value, lo, hi, y, solver, hollow)
    for s, yy in zip(solvers, y):
        for a, dy, hollow in ((ARM_RELEASED, 0.18, True), (arm, -0.18, False)):
            c = study.cell(prior, task, a, s)
            if c is not None and "psnr" in c.metrics:
                ci = c.metrics["psnr"]
                pts.append((ci.mean, ci.low, ci.high, yy + dy, s, hollow))
    vals = np.array([p[0] for p in pts])
    fit = figaxes.fit(vals, [p[1] for p in pts], [p[2] for p in pts], metric="psnr")
    for i, (v, lo, hi, yy, s, hollow) in enumerate(pts):
        if i in fit.outside:
            continue
        kw = pal.kw(s, size=3.6)
        kw["fillstyle"] = "full"
        if hollow:
            kw["markerfacecolor"] = "white"
        dot(ax, v, yy, lo, hi, kw)
    mean = study.cell(prior, task, ARM_RELEASED, "oracle_mean")
    if mean is not None and "psnr" in mean.metrics:
        ax.axvline(mean.metrics["psnr"].mean, color="0.3", linestyle="--", linewidth=0.7, zorder=0)
    figaxes.apply(ax, fit, "x")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    figaxes.mark_outside(
        ax, fit, vals, [p[3] for p in pts], [pal.color(p[4]) for p in pts], fontsize=MIN_FONT_PT
    )
    ax.set_ylim(-0.7, len(solvers) - 0.3)
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", left=False)


def tuned_vs_released(study: Study, arm: str, out_dir: Path) -> list[str]:
    """The dot-and-interval grid, priors × tasks; returns the figure check's problems."""
    solvers = study.solvers()
    pal = Palette(solvers)
    nr, nc = len(study.priors), len(study.tasks)
    h = nr * (0.45 + ROW_IN * len(solvers)) + 0.55
    fig, axes = plt.subplots(
        nr, nc, figsize=(DOUBLE_COLUMN_IN, h), layout="constrained", squeeze=False
    )
    for i, prior in enumerate(study.priors):
        for j, task in enumerate(study.tasks):
            ax = axes[i][j]
            _panel(ax, study, prior, task, arm, pal, solvers)
            ax.set_yticks(
                np.arange(len(solvers))[::-1], [solver_name(s) for s in solvers] if j == 0 else []
            )
            if i == 0:  # tasks head the columns, priors name the rows
                ax.set_title(study.task_names.get(task, task), fontsize=RC["axes.titlesize"])
            if j == 0:
                ax.set_ylabel(f"prior {prior}", fontsize=RC["axes.titlesize"])
            if i == nr - 1:
                ax.set_xlabel("PSNR [dB] ↑")
    handles = [
        Line2D(
            [],
            [],
            color="0.2",
            marker="o",
            linestyle="none",
            markersize=3.6,
            label=f"tuned, {arm[2:]} FE",
        ),
        Line2D(
            [],
            [],
            color="0.2",
            marker="o",
            markerfacecolor="white",
            linestyle="none",
            markersize=3.6,
            label="released",
        ),
        Line2D([], [], color="0.3", linestyle="--", linewidth=0.7, label="exact posterior mean"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    return _save(fig, out_dir, "tuned_vs_released", pal)


def learned_vs_exact(study: Study, arm: str, learned: str, exact: str, out_dir: Path) -> list[str]:
    """Tuned mean PSNR under the exact twin (x) against the learned prior (y), one panel per task."""
    solvers = study.solvers()
    pal = Palette(solvers)
    fig, axes = plt.subplots(
        1, len(study.tasks), figsize=(DOUBLE_COLUMN_IN, 2.35), layout="constrained", squeeze=False
    )
    for ax, task in zip(axes[0], study.tasks):
        for s in solvers:
            a, b = study.cell(learned, task, arm, s), study.cell(exact, task, arm, s)
            if a is None or b is None or "psnr" not in a.metrics or "psnr" not in b.metrics:
                continue
            kw = pal.kw(s, size=3.6)
            kw["fillstyle"] = "full"
            ax.plot([b.metrics["psnr"].mean], [a.metrics["psnr"].mean], linestyle="none", **kw)
        lo, hi = (min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1]))
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=0.6, zorder=0)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.set_title(study.task_names.get(task, task), fontsize=RC["axes.titlesize"])
        ax.set_xlabel(f"{exact} [dB]")
    axes[0][0].set_ylabel(f"{learned} [dB]")
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            **{**pal.kw(s, size=3.6), "fillstyle": "full"},
            label=solver_name(s),
        )
        for s in solvers
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=len(solvers),
        frameon=False,
        columnspacing=0.9,
        handletextpad=0.2,
    )
    return _save(fig, out_dir, "learned_vs_exact", pal)


def _budget_panel(ax, study: Study, prior: str, task: str, pal: Palette, solvers: list[str]) -> None:
    """One task of :func:`budget_curves`: tuned presets joined, released hollow, oracles as lines."""
    tuned = [a for a in study.arms if a != ARM_RELEASED]
    for s in solvers:
        kw = {**pal.kw(s, size=3.4), "fillstyle": "full"}
        pts = [(c.nfe + c.vjp, c.metrics["psnr"].mean) for a in tuned
               if (c := study.cell(prior, task, a, s)) is not None and "psnr" in c.metrics]
        if pts:
            ax.plot(*zip(*sorted(pts)), linestyle="-", linewidth=0.8, **kw)
        r = study.cell(prior, task, ARM_RELEASED, s)
        if r is not None and "psnr" in r.metrics:
            ax.plot([r.nfe + r.vjp], [r.metrics["psnr"].mean], linestyle="none",
                    **{**kw, "markerfacecolor": "white"})
    for oracle, style in (("oracle_mean", "--"), ("oracle_map", ":")):
        c = study.cell(prior, task, ARM_RELEASED, oracle)
        if c is not None and "psnr" in c.metrics:
            ax.axhline(c.metrics["psnr"].mean, color="0.3", linestyle=style, linewidth=0.7, zorder=0)
    ax.set_xscale("log")
    figaxes.plain_log_ticks(ax.xaxis, 4)
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    ax.set_title(study.task_names.get(task, task), fontsize=RC["axes.titlesize"])
    ax.set_xlabel("NFE + VJP per solve")


def budget_curves(study: Study, prior: str, out_dir: Path) -> list[str]:
    """Mean PSNR against forward-equivalents per solve (NFE + VJP, as counted), one panel per task:
    each solver's tuned presets joined by a line (filled), its released preset hollow, and the exact
    posterior mean (dashed) and MAP (dotted) where the prior has them."""
    solvers = study.solvers()
    pal = Palette(solvers)
    fig, axes = plt.subplots(1, len(study.tasks), figsize=(DOUBLE_COLUMN_IN, 2.6), layout="constrained",
                             squeeze=False)
    for ax, task in zip(axes[0], study.tasks):
        _budget_panel(ax, study, prior, task, pal, solvers)
    axes[0][0].set_ylabel(f"PSNR [dB] ↑ ({prior})")
    handles = [Line2D([], [], linestyle="-", linewidth=0.8, **{**pal.kw(s, size=3.4), "fillstyle": "full"},
                      label=solver_name(s)) for s in solvers]
    handles += [
        Line2D([], [], color="0.2", marker="o", markerfacecolor="white", linestyle="none", markersize=3.4,
               label="released"),
        Line2D([], [], color="0.3", linestyle="--", linewidth=0.7, label="posterior mean"),
        Line2D([], [], color="0.3", linestyle=":", linewidth=0.7, label="exact MAP"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=6, frameon=False, columnspacing=0.9,
               handletextpad=0.3)
    return _save(fig, out_dir, f"budget__{prior}", pal)


def draw_all(study: Study, arm: str, learned: str, exact: str, out_dir: Path) -> list[str]:
    """Both figures (PNG and PDF) into ``out_dir``; the problems the figure checks found."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({**RC, "font.family": fonts.families()}):
        problems = tuned_vs_released(study, arm, out_dir)
        if learned in study.priors and exact in study.priors:
            problems += learned_vs_exact(study, arm, learned, exact, out_dir)
        for prior in study.priors:  # a prior tuned at two budgets or more: quality against cost
            if (
                sum(
                    any(study.board(prior, t, a) for t in study.tasks)
                    for a in study.arms
                    if a != ARM_RELEASED
                )
                > 1
            ):
                problems += budget_curves(study, prior, out_dir)
    return problems
