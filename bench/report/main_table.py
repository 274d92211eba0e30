"""The main results table a paper prints: solvers × tasks, one table per dataset.

Each entry is the primary metric's mean over images (seeds averaged per image first) with its
95 % Student-t half-width in small type; **bold** is the best solver of the column, underlined
the solvers not significantly worse than it (:mod:`invbench.bench.report.verdicts`: paired
t-tests on image means against the best, Bonferroni over the column's other solvers). Oracles
(exact references) follow under a rule, never marked. Display names come from
:mod:`invbench.bench.report.names`.

``main.tex`` needs ``booktabs`` only; numbers are decimal-aligned with ``r@{}l`` column pairs
(integer part right-aligned, ``.fraction`` left-aligned), which holds for bold and underlined
digits alike; minus signs are math minus. A table whose columns fit ``\\columnwidth`` is a
``table``, a wider one a ``table*``; nothing is scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config.spec import TUNED_HERE
from . import escape
from .names import solver_name
from .stats import DECIMALS, UNITS, MeanCI, arrow
from .summary import CellSummary, Leaderboard
from .verdicts import is_oracle

__all__ = ["MainTable", "build_main_tables", "main_latex", "main_markdown"]

COLUMNWIDTH_PT = 235.0
"""A table estimated narrower than this goes into one column (``table``; a two-column article's
``\\columnwidth`` is 241 pt at 10 pt), a wider one spans both (``table*``)."""
_CHAR_PT, _ENTRY_PT = 6.0, 50.0   # \small: a generous average character width; one "29.86 ±1.57" entry


@dataclass
class MainTable:
    dataset: str
    prior: str
    metric: str
    tasks: list[str]                         # task labels, in board order
    task_names: list[str]                    # printed task names
    solvers: list[str]                       # solver ids, best average rank first
    oracles: list[str]
    cells: dict[tuple[str, str], CellSummary]   # (solver, task) -> the solver's shown cell
    n_images: dict[str, int]                 # task -> images in the paired analysis
    folded: list[str] = field(default_factory=list)   # "solver: presets" notes
    footnotes: list[str] = field(default_factory=list)   # why a tied cell has a lower mean than an untied one
    daggers: set[tuple[str, str]] = field(default_factory=set)   # (solver, task) cells those footnotes explain
    tuned: list[str] = field(default_factory=list)   # "Presets tuned here (...): solvers" lines


def _pick(cs: list[CellSummary]) -> CellSummary:
    """A solver's shown cell in one board: its best-ranked preset (ranked before unranked)."""
    return min(cs, key=lambda c: (c.rank is None, c.rank or 0, c.preset))


def build_main_tables(boards: list[Leaderboard], task_names: dict[str, str]) -> list[MainTable]:
    """One table per (dataset, prior) over its boards; solvers ordered by mean rank over the
    table's tasks (ties by name)."""
    groups: dict[tuple[str, str], list[Leaderboard]] = {}
    for b in boards:
        priors = sorted({c.prior for c in b.cells})
        groups.setdefault((b.dataset, "/".join(priors)), []).append(b)
    out = []
    for (ds, prior), bs in groups.items():
        metric = bs[0].primary
        bs = [b for b in bs if b.primary == metric]
        cells: dict[tuple[str, str], CellSummary] = {}
        folded: dict[str, set[str]] = {}
        for b in bs:
            by_solver: dict[str, list[CellSummary]] = {}
            for c in b.cells:
                by_solver.setdefault(c.solver, []).append(c)
            for s, cs in by_solver.items():
                cells[(s, b.task)] = _pick(cs)
                folded.setdefault(s, set()).update(c.preset for c in cs)
        names = sorted({s for s, _ in cells})
        ranks = {s: [cells[(s, b.task)].rank for b in bs if (s, b.task) in cells and cells[(s, b.task)].rank]
                 for s in names}
        order = sorted(names, key=lambda s: (sum(ranks[s]) / len(ranks[s]) if ranks[s] else math.inf, s))
        n_images = {b.task: max((c.metrics[metric].n for c in b.cells if metric in c.metrics), default=0) for b in bs}
        notes = [f"{solver_name(s)}: presets {', '.join(sorted(p))}" for s, p in sorted(folded.items()) if len(p) > 1]
        feet = [f"† {task_names.get(b.task, b.task)}: {f}" for b in bs for f in b.footnotes]
        daggers = {(s, b.task) for b in bs for (s, t), c in cells.items()
                   if t == b.task and any(f.startswith(_shown_name(c)) for f in b.footnotes)}
        out.append(MainTable(ds, prior, metric, [b.task for b in bs], [task_names.get(b.task, b.task) for b in bs],
                             [s for s in order if not is_oracle(s)], [s for s in order if is_oracle(s)],
                             cells, n_images, notes, feet, daggers, _tuned_lines(cells.values())))
    return out


def _tuned_lines(cells) -> list[str]:
    """One line per provenance of presets tuned here (``invbench tune``), naming its solvers: a
    table of tuned presets says so under itself, not only in the leaderboard's provenance column."""
    by: dict[str, set[str]] = {}
    for c in cells:
        prov = str(c.provenance or "")
        if TUNED_HERE in prov:
            by.setdefault(prov[prov.index(TUNED_HERE):], set()).add(solver_name(c.solver))
    return [f"Presets {p.replace(TUNED_HERE, 'tuned here', 1)}: {', '.join(sorted(s))}."
            for p, s in sorted(by.items())]


def _shown_name(c: CellSummary) -> str:
    return solver_name(c.solver) + ("" if c.preset == "default" else f" ({c.preset})")


def _parts(x: float, d: int) -> tuple[str, str]:
    """(integer part, '.fraction') of ``x`` at ``d`` decimals, with a real minus sign marker."""
    s = f"{x:.{d}f}"
    neg = s.startswith("-")
    s = s.lstrip("-")
    ip, _, fp = s.partition(".")
    return ("−" if neg else "") + ip, ("." + fp) if fp else ""


def _mark(c: CellSummary | None) -> str:
    if c is None or is_oracle(c.solver):
        return ""
    return "best" if getattr(c, "is_best", False) else "tied" if getattr(c, "tied_with_best", False) else ""


def caption(t: MainTable) -> str:
    """One caption: metric, n, the interval, the test, the family and the correction."""
    unit = UNITS.get(t.metric, "")
    ns = sorted(set(t.n_images.values()))
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]}"
    return (f"{t.metric.upper()}{' (' + unit + ')' if unit else ''} {arrow(t.metric)} on {t.dataset} "
            f"(prior {t.prior}), mean ± 95 % t-interval over {n} images (seeds averaged). Bold: best; "
            "underlined: not significantly worse than it (paired t-test on image means, Bonferroni over the "
            "column's other solvers, α = 0.05). Oracles: exact references, not ranked.")


# ----------------------------------------------------------------------------- LaTeX


def _tex_num(c: CellSummary | None, metric: str) -> tuple[str, ...]:
    """Three cells (integer part, fraction, ± half-width) of one entry, or one spanning dash."""
    if c is None or metric not in c.metrics or not math.isfinite(c.metrics[metric].mean):
        return (r"\multicolumn{3}{c}{---}",)
    ci: MeanCI = c.metrics[metric]
    d = DECIMALS.get(metric, 3)
    ip, fp = (escape.latex(p) for p in _parts(ci.mean, d))
    mark = _mark(c)
    wrap = {"best": r"\textbf{%s}", "tied": r"\underline{%s}"}.get(mark, "%s")
    hw = r"{\scriptsize$\pm$" + f"{ci.half_width:.{d}f}" + "}" if math.isfinite(ci.half_width) else ""
    return wrap % ip, wrap % fp, hw


def main_latex(tables: list[MainTable]) -> str:
    """``main.tex``: the tables as LaTeX floats (needs ``booktabs``)."""
    out = ["% invbench main results table (generated; needs \\usepackage{booktabs})"]
    for k, t in enumerate(tables):
        env = "table" if _width_pt(t) <= COLUMNWIDTH_PT else "table*"
        cols = "l" + "r@{}l@{\\,}l" * len(t.tasks)
        head = " & ".join(["Solver"] + [r"\multicolumn{3}{c}{\shortstack{" + _head(n) + "}}" for n in t.task_names])
        out += [f"\\begin{{{env}}}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{3pt}",
                f"\\caption{{{escape.latex(caption(t))}}}", f"\\label{{tab:main-{escape.slug(t.dataset)}-{k}}}",
                f"\\begin{{tabular}}{{{cols}}}", r"\toprule", head + r" \\", r"\midrule"]
        for i, group in enumerate((t.solvers, t.oracles)):
            if i and group:
                out.append(r"\midrule")
            for s in group:
                parts = [escape.latex(solver_name(s))]
                for task in t.tasks:
                    cell = list(_tex_num(t.cells.get((s, task)), t.metric))
                    if (s, task) in t.daggers and len(cell) == 3:
                        cell[2] += r"$^\dagger$"
                    parts += cell
                out.append(" & ".join(parts) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        for line in t.tuned + (["Presets by task: " + "; ".join(t.folded)] if t.folded else []) + t.footnotes:
            out.append(r"\par\smallskip{\scriptsize\raggedright "
                       + escape.latex(line).replace(r"$^{\dagger}$", r"$^\dagger$") + r"\par}")
        out += [f"\\end{{{env}}}", ""]
    return "\n".join(out)


def _width_pt(t: MainTable) -> float:
    """A conservative estimate of the tabular's natural width (points, ``\\small``)."""
    names = [solver_name(s) for s in t.solvers + t.oracles] + ["Solver"]
    return _CHAR_PT * max(len(n) for n in names) + 6.0 + _ENTRY_PT * len(t.tasks)


def _head(name: str) -> str:
    """A task name on at most two lines (split before a parenthesis)."""
    first, sep, rest = name.partition(" (")
    return escape.latex(first) + ((r"\\" + escape.latex("(" + rest)) if sep else "")


# ----------------------------------------------------------------------------- Markdown


def _md_num(c: CellSummary | None, metric: str) -> str:
    if c is None or metric not in c.metrics or not math.isfinite(c.metrics[metric].mean):
        return "—"
    ci = c.metrics[metric]
    d = DECIMALS.get(metric, 3)
    v = f"{ci.mean:.{d}f}".replace("-", "−")
    mark = _mark(c)
    v = f"**{v}**" if mark == "best" else f"<ins>{v}</ins>" if mark == "tied" else v
    return v + (f" ± {ci.half_width:.{d}f}" if math.isfinite(ci.half_width) else "")


def main_markdown(tables: list[MainTable]) -> str:
    """``main.md``: the same tables in GitHub Markdown (bold best, <ins>underlined</ins> tied)."""
    out = []
    for t in tables:
        out += [f"**{escape.markdown(t.dataset)}** (prior {escape.markdown(t.prior)})", "",
                "| Solver | " + " | ".join(escape.markdown(n) for n in t.task_names) + " |",
                "|---|" + "---:|" * len(t.tasks)]
        for s in t.solvers + t.oracles:
            out.append(f"| {escape.markdown(solver_name(s))} | "
                       + " | ".join(_md_num(t.cells.get((s, task)), t.metric) + ("†" if (s, task) in t.daggers else "")
                                    for task in t.tasks) + " |")
        out += ["", escape.markdown(caption(t))]
        for line in t.tuned:
            out += ["", escape.markdown(line)]
        if t.folded:
            out += ["", escape.markdown("Presets by task: " + "; ".join(t.folded))]
        for f in t.footnotes:
            out += ["", escape.markdown(f)]
        out.append("")
    return "\n".join(out)
