"""The head-to-head study's tables (Markdown and LaTeX), from :class:`.head_to_head.Study`.

Every table says under it what its marks mean: the family, the test and the correction. Numbers
are PSNR in dB (pixel range [0, 1]); seeds are averaged per image before any interval or test.
"""

from __future__ import annotations

import math

from ..report import escape
from ..report.main_table import build_main_tables, main_latex, main_markdown
from ..report.names import solver_name
from ..report.verdicts import ALPHA
from .head_to_head import (
    ARM_RELEASED,
    NORMALISER,
    CrossPrior,
    Delta,
    Study,
    by_group,
    cross_prior,
    deltas,
    half_widths,
    overall,
    seconds_per_nfe,
    top_solvers,
)

__all__ = [
    "arm_title",
    "cost_markdown",
    "cross_prior_markdown",
    "delta_markdown",
    "main_tables",
    "overall_markdown",
]


def arm_title(arm: str) -> str:
    if arm == ARM_RELEASED:
        return "released presets (the demo's step counts)"
    return f"tuned presets at {arm[2:]} forward-equivalents per solve (NFE + VJP)"


def main_tables(study: Study, prior: str, arm: str) -> tuple[str, str]:
    """(Markdown, LaTeX) of the main table of ``prior`` and ``arm``: solvers × tasks."""
    boards = [b for t in study.tasks if (b := study.board(prior, t, arm)) is not None]
    tables = build_main_tables(boards, study.task_names)
    return main_markdown(tables), main_latex(tables)


def _fmt(x: float, d: int = 2, sign: bool = True) -> str:
    if not math.isfinite(x):
        return "—"
    return (f"{x:+.{d}f}" if sign else f"{x:.{d}f}").replace("-", "−")


def delta_markdown(study: Study, arm: str, notes: dict[tuple[str, str], str] | None = None) -> str:
    """Tuned − released per solver (rows) and task (columns), one table per prior."""
    ds = deltas(study, arm)
    by = {(d.prior, d.task, d.solver): d for d in ds}
    out = []
    for prior in study.priors:
        if not any(d.prior == prior for d in ds):
            continue
        out += [
            f"**{escape.markdown(prior)}**: tuned ({arm[2:]} FE) − released, PSNR [dB]",
            "",
            "| Solver | "
            + " | ".join(escape.markdown(study.task_names.get(t, t)) for t in study.tasks)
            + " |",
            "|---|" + "---:|" * len(study.tasks),
        ]
        for s in study.solvers():
            cells = []
            for t in study.tasks:
                d: Delta | None = by.get((prior, t, s))
                if d is None or d.ci is None:
                    cells.append("—")
                    continue
                mark = {"better": " ▲", "worse": " ▼"}.get(d.verdict, "")
                cells.append(f"{_fmt(d.ci.mean)} [{_fmt(d.ci.low)}, {_fmt(d.ci.high)}]{mark}")
            out.append(f"| {escape.markdown(solver_name(s))} | " + " | ".join(cells) + " |")
        ms = sorted({d.m for d in ds if d.prior == prior})
        levels = ", ".join(f"{100 * (1 - ALPHA / m):.2f} %" for m in ms)
        out += [
            "",
            (
                f"Paired Student-t interval of the mean difference over the test images (seeds averaged "
                f"per image first); family: the solvers of one column (m = {', '.join(map(str, ms))}), "
                f"Bonferroni, so each interval is at level {levels} (family-wise 95 %). ▲ / ▼: the interval "
                "lies above / below 0 (tuning helped / hurt on test); otherwise no difference is shown."
            ),
            "",
        ]
    for (s, t), why in sorted((notes or {}).items()):
        out += [
            (
                f"* {escape.markdown(solver_name(s))} released on "
                f"{escape.markdown(study.task_names.get(t, t))}: {escape.markdown(why)}"
            )
        ]
    return "\n".join(out).rstrip() + "\n"


def cost_markdown(study: Study) -> str:
    """FE per solve and time per image of every arm, per prior (averaged over the tasks)."""
    out = []
    norm = next((a for a in study.arms if a != ARM_RELEASED), ARM_RELEASED)
    for prior in study.priors:
        out += [
            f"**{escape.markdown(prior)}**",
            "",
            "| Solver | "
            + " | ".join(f"{_arm_short(a)}: NFE + VJP" for a in study.arms)
            + " | "
            + " | ".join(f"{_arm_short(a)}: time [NFE-eq.]" for a in study.arms)
            + " |",
            "|---|" + "---:|" * (2 * len(study.arms)),
        ]
        for s in study.solvers():
            fe, tm = [], []
            for a in study.arms:
                cs = [(t, c) for t in study.tasks if (c := study.cell(prior, t, a, s)) is not None]
                fe.append(_fe_range(cs))
                ratios = [c.seconds.mean / seconds_per_nfe(study, prior, t, norm) for t, c in cs]
                tm.append(_range([r for r in ratios if math.isfinite(r)], 0))
            out.append(
                f"| {escape.markdown(solver_name(s))} | "
                + " | ".join(fe)
                + " | "
                + " | ".join(tm)
                + " |"
            )
        out += [
            "",
            (
                f"NFE + VJP: mean per solve as counted in the rows (range over the {len(study.tasks)} tasks). "
                f"Time: seconds per image divided by the seconds per network evaluation of "
                f"{solver_name(NORMALISER)} at the smallest tuned budget in the same run (it spends nothing but NFE), "
                "range over the tasks; it removes the machine's speed and load, not the solvers' "
                "own work."
            ),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def _arm_short(arm: str) -> str:
    return "released" if arm == ARM_RELEASED else f"tuned {arm[2:]} FE"


def _range(vals: list[float], d: int) -> str:
    if not vals:
        return "—"
    lo, hi = min(vals), max(vals)
    return f"{lo:.{d}f}" if round(lo, d) == round(hi, d) else f"{lo:.{d}f}–{hi:.{d}f}"


def _fe_range(cs: list) -> str:
    if not cs:
        return "—"
    parts = sorted({f"{c.nfe:g} + {c.vjp:g}" for _, c in cs if math.isfinite(c.nfe)})
    return " / ".join(parts) if parts else "—"


def cross_prior_markdown(study: Study, arm: str, learned: str, exact: str) -> str:
    """Per task: the tuned means under both priors, Kendall's τ and each prior's best-and-tied set."""
    rows: list[CrossPrior] = cross_prior(study, arm, learned, exact)
    out = [
        (
            f"| Task | Kendall τ [p] | best and tied on {escape.markdown(learned)} | "
            f"best and tied on {escape.markdown(exact)} |"
        ),
        "|---|---:|---|---|",
    ]
    for r in rows:
        tops = [", ".join(solver_name(s) for s in r.top[p]) or "—" for p in (learned, exact)]
        out.append(
            f"| {escape.markdown(study.task_names.get(r.task, r.task))} | {r.tau:.2f} [{r.p:.2g}] | "
            + " | ".join(escape.markdown(t) for t in tops)
            + " |"
        )
    out += [
        "",
        (
            f"τ: Kendall's τ-b between the solvers' mean PSNR under the two priors (scipy, two-sided p; "
            f"{len(study.solvers())} solvers per task, one test per task, not corrected). Best and tied: the "
            "main tables' marks."
        ),
        "",
    ]
    return "\n".join(out)


def overall_markdown(study: Study, arm: str) -> str:
    """Per prior: Friedman over (task, image) blocks, mean ranks and Wilcoxon-Holm against the best."""
    out = []
    for prior in study.priors:
        r = overall(study, prior, arm)
        if r is None:
            continue
        ranks = ", ".join(f"{solver_name(m)} {a:.2f}" for m, a in zip(r.methods, r.avg_rank))
        wil = "; ".join(
            f"{solver_name(m)} p (Holm) = {r.wilcoxon[m][1]:.2g}"
            for m in r.methods[1:]
            if m in r.wilcoxon
        )
        out += [
            (
                f"* **{escape.markdown(prior)}** ({r.n_blocks} blocks = tasks × images): Friedman "
                f"χ²({len(r.methods) - 1}) = {r.friedman_stat:.1f}, p = {r.friedman_p:.2g}. Mean ranks: "
                f"{escape.markdown(ranks)}. Wilcoxon signed-rank against {escape.markdown(solver_name(r.methods[0]))} "
                f"(Holm over {len(r.methods) - 1}): {escape.markdown(wil)}."
            )
        ]
    return "\n".join(out) + "\n"


def groups_markdown(study: Study, arm: str, groups: dict[str, str], what: str) -> str:
    """Per prior and task: the best and tied solvers on all test images and within each group."""
    tops = by_group(study, arm, groups)
    names = sorted(set(groups.values()))
    sizes = {g: sum(v == g for v in groups.values()) for g in names}
    out = [
        "| Prior | Task | all images | "
        + " | ".join(f"{escape.markdown(g)} ({sizes[g]})" for g in names)
        + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for prior in study.priors:
        for t in study.tasks:
            b = study.board(prior, t, arm)
            if b is None:
                continue
            cells = [_top_names(top_solvers(b))]
            cells += [_top_names(tops.get((prior, t, g), [])) for g in names]
            out.append(
                f"| {escape.markdown(prior)} | {escape.markdown(study.task_names.get(t, t))} | "
                + " | ".join(cells)
                + " |"
            )
    out += [
        "",
        (
            f"Best first, then the solvers tied with it (the main tables' marks: paired t on image means, "
            f"Bonferroni over the column's other solvers), on all test images and on the images of "
            f"each {escape.markdown(what)} alone."
        ),
        "",
    ]
    return "\n".join(out)


def _top_names(solvers: list[str]) -> str:
    return escape.markdown(", ".join(solver_name(s) for s in solvers)) or "—"


def half_width_line(study: Study, prior: str, arm: str, bound: float = 0.5) -> str:
    """How many Δ-best intervals have a half-width within ``bound`` dB: the paired 95 % t
    intervals, and the Bonferroni-adjusted ones the tables print."""
    parts = []
    for level, what in (
        (0.95, "paired 95 % t interval"),
        (None, "Bonferroni-adjusted, as printed"),
    ):
        hw = sorted(half_widths(study, prior, arm, level))
        k = sum(h <= bound for h in hw)
        med = hw[len(hw) // 2] if hw else math.nan
        parts.append(
            f"{k} of {len(hw)} with the {what} (median {med:.2f} dB, largest "
            f"{max(hw, default=math.nan):.2f} dB)"
        )
    return (
        f"{escape.markdown(prior)}, {_arm_short(arm)}: non-best solver cells with a Δ-best "
        f"half-width ≤ {bound:g} dB: " + "; ".join(parts) + "."
    )


def _main_sections(study: Study, arms: list[str], notes: dict[tuple[str, str], str] | None) -> list[str]:
    """The main table of every arm and prior; under the released one, why a released setting fails."""
    out: list[str] = []
    for a in arms:
        out += [f"## Main results: {arm_title(a)}", ""]
        for prior in study.priors:
            md, _ = main_tables(study, prior, a)
            out += [md.rstrip(), ""] if md.strip() else []
        if a == ARM_RELEASED and notes:
            out += ["Released settings that fail outside the tasks they were released for:", ""]
            out += [f"* {escape.markdown(solver_name(s))} on {escape.markdown(study.task_names.get(t, t))}: "
                    f"{escape.markdown(why)}" for (s, t), why in sorted(notes.items())] + [""]
    return out


def tables_markdown(
    study: Study,
    arm: str,
    learned: str,
    exact: str,
    notes: dict[tuple[str, str], str] | None = None,
    groups: dict[str, str] | None = None,
) -> str:
    """Every table of the study in one Markdown document (``tables.md``); ``groups`` (image id ->
    the held-out image it was cut from) adds the marks within each source image."""
    out = [
        "# Head-to-head study: tables",
        "",
        (
            "Generated by `python scripts/head_to_head.py report` from the rows in this folder "
            "(`rows.csv.gz`); PSNR in dB on pixel range [0, 1], seeds averaged per image first."
        ),
        "",
    ]
    tuned = [arm] + [a for a in study.arms if a not in (arm, ARM_RELEASED)]
    out += _main_sections(study, [*tuned, ARM_RELEASED], notes)
    out += ["## Resolution: Δ-best half-widths", ""]
    out += [
        f"* {half_width_line(study, p, a)}"
        for a in tuned
        for p in study.priors
        if half_widths(study, p, a)
    ] + [""]
    for a in tuned:
        out += [f"## Tuned − released ({a[2:]} FE)", "", delta_markdown(study, a).rstrip(), ""]
    if groups:
        out += [
            f"## Within each source image ({_arm_short(arm)})",
            "",
            groups_markdown(study, arm, groups, "held-out source image").rstrip(),
            "",
        ]
    out += ["## Cost", "", cost_markdown(study).rstrip(), ""]
    if learned in study.priors and exact in study.priors:
        out += [
            f"## Rankings under the learned prior and its exact twin ({_arm_short(arm)})",
            "",
            cross_prior_markdown(study, arm, learned, exact).rstrip(),
            "",
        ]
    out += [
        f"## Overall ranking over tasks ({_arm_short(arm)})",
        "",
        overall_markdown(study, arm).rstrip(),
        "",
    ]
    return "\n".join(out)


def latex_tables(study: Study, arms: list[str]) -> dict[str, str]:
    """``{file name: LaTeX}`` of the main tables, one file per prior and arm."""
    return {
        f"main-{escape.slug(p)}-{a}.tex": tex
        for p in study.priors
        for a in arms
        if (tex := main_tables(study, p, a)[1]).count("tabular") >= 2
    }
