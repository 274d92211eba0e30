"""Leaderboard tables: Markdown (tabulate, GitHub format), LaTeX (booktabs) and CSV.

One table per dataset × task. Every metric is shown as mean ± 95% CI, a two-sided Student-t
interval over the ok rows of the cell (images × seeds); the CSV carries full precision (mean,
CI bounds, half-width, n). Cells are ranked by the task's primary metric (direction declared in
:data:`invbench.bench.report.stats.DIRECTIONS`); skipped/failed cells keep their row with the reason.
A metric marked unavailable in ``metric_status`` is not a column: one line under the table gives
``unavailable: <why>`` (machine paths cut to file names; the CSV keeps the full note).
User strings are escaped for each format (:mod:`invbench.bench.report.escape`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from ..fsafety import atomic_write_text
from . import escape
from .names import solver_name, task_names_of_run
from .stats import DECIMALS, UNITS, MeanCI, arrow, fmt_mean_ci, fmt_number
from .summary import Leaderboard

CI_NOTE = ("The unit is the image: a cell's rows are averaged over seeds per image first (seed SD: the "
           "mean over images of the spread across seeds, in the CSV). Values are means over images with a 95% "
           "interval: ± a Student-t half-width for PSNR, SSIM and consistency, [low, high] of a bootstrap for "
           "non-negative metrics. Δ best is the paired difference cell − best on image means; its interval is "
           "at level 1 − 0.05/m (Bonferroni over the m solvers compared with the best of the board, oracles "
           "excluded), and a cell is tied with the best (underlined) exactly when that interval reaches 0; "
           "bold: the best. Oracles are exact references: shown, never ranked or marked. MSE is computed on "
           "unclipped reconstructions, PSNR and SSIM on reconstructions clipped to [0, 1]. s/image is "
           "wall-clock inside the timed region, the mean over images (a batch counts once per image), with "
           "a bootstrap interval over timed batches when there are at least 5 (else its n); NFE/VJP are means "
           "per image.")

DISPLAY = {
    "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "mse": "MSE", "consistency": "consistency",
    "dist_to_map": "dist. to MAP", "rel_dist_to_map": "rel. dist. to MAP",
    "logpost_gap": "log-post. gap", "err_post_mean": "err. post. mean", "fid": "FID",
    "sliced_wasserstein": "sliced W2", "seconds": "s/image",
}


@dataclass(frozen=True)
class Header:
    name: str
    unit: str = ""
    arrow: str = ""


# cell kinds: ("text", str) user/plain text; ("ci", MeanCI, metric); ("num", value, decimals);
# ("bold", cell) the best and tied-best value of the primary metric
Cell = tuple


def _ci_cell(ci: MeanCI | None, metric: str) -> Cell:
    return ("ci", ci, metric) if ci is not None else ("text", "—")


def _int_or(x: float) -> Cell:
    if not math.isfinite(x):
        return ("text", "—")
    return ("num", x, 0 if float(x).is_integer() else 1)


def board_rows(b: Leaderboard) -> tuple[list[Header], list[list[Cell]]]:
    """Column headers and typed cells of one leaderboard (format-independent)."""
    paired = any(c.is_best for c in b.cells)
    heads = [Header("rank")] + ([Header("Δ best (adj.)", UNITS.get(b.primary, ""))] if paired else [])
    ref = paired and b.reference is not None
    heads += [Header(f"Δ {solver_name(b.reference)} (95%)", UNITS.get(b.primary, ""))] if ref else []
    prov = any(c.provenance for c in b.cells)   # stores written before preset_provenance: no column
    heads += [Header("solver"), Header("preset")] + ([Header("provenance")] if prov else [])
    heads += [Header("prior"), Header("n ok")]
    shown = [m for m in b.metrics if m not in b.unavailable]       # an unavailable metric: a line
    shown_set = [m for m in b.set_metrics if m not in b.unavailable]  # under the table, not a column
    for m in shown + shown_set:
        heads.append(Header(DISPLAY.get(m, m), UNITS.get(m, ""), arrow(m)))
    gpu = any(math.isfinite(c.peak_mem_mib) for c in b.cells)     # a column n/a in every row goes
    rss = any(math.isfinite(c.peak_rss_mib) for c in b.cells)
    heads += [Header("s/image", "", "↓"), Header("NFE"), Header("VJP")]
    heads += ([Header("peak GPU mem", "MiB")] if gpu else []) + ([Header("peak RSS", "MiB")] if rss else [])
    heads.append(Header("status"))
    rows = []
    for c in b.cells:
        r: list[Cell] = [("text", str(c.rank) if c.rank is not None else "—")]
        if paired:
            r.append(("text", "best" if c.is_best else "—") if c.delta_best is None
                     else ("ci", c.delta_best, "delta:" + b.primary))
        if ref:
            r.append(("ci", c.delta_ref, b.primary) if c.delta_ref is not None
                     else ("text", "ref" if c.solver == b.reference and c.rank is not None else "—"))
        r += [("text", solver_name(c.solver)), ("text", c.preset)] + ([("text", c.provenance or "—")] if prov else [])
        r += [("text", c.prior),
              ("text", f"{c.n_ok}/{c.n_rows if c.n_expected is None else max(c.n_expected, c.n_rows)}")]
        for m in shown:
            if m == b.primary and c.metrics.get(m) is not None and (c.is_best or c.tied_with_best):
                r.append(("bold" if c.is_best else "tied", _ci_cell(c.metrics.get(m), m)))
            else:
                r.append(_ci_cell(c.metrics.get(m), m))
        for m in shown_set:
            v, _n, note = c.set_metrics.get(m, (None, None, ""))
            r.append(("num", v, DECIMALS.get(m, 4)) if v is not None else ("text", note or "—"))
        r.append(_seconds_cell(c.seconds))
        r += [_int_or(c.nfe), _int_or(c.vjp)]
        if gpu:
            r.append(("num", c.peak_mem_mib, 1) if math.isfinite(c.peak_mem_mib) else ("text", "n/a"))
        if rss:
            r.append(("num", c.peak_rss_mib, 1) if math.isfinite(c.peak_rss_mib) else ("text", "n/a"))
        r.append(("text", c.status))
        rows.append(r)
    return heads, rows


def _seconds_cell(ci: MeanCI) -> Cell:
    """s/image with its interval, or the value and its number of timed batches (``n = 2``)."""
    if not ci.n or not math.isfinite(ci.mean):
        return ("text", "—")
    if not math.isfinite(ci.half_width):
        return ("text", f"{fmt_number(ci.mean, DECIMALS['seconds'])} (n = {ci.n})")
    return ("ci", ci, "seconds")


def render_cell(cell: Cell, fmt: str) -> str:
    """Render a typed cell for ``fmt`` in {"md", "tex", "html", "plain"} (escaping user text)."""
    esc = {"md": escape.markdown, "tex": escape.latex, "html": escape.html_text, "plain": str}[fmt]
    kind = cell[0]
    if kind == "bold":  # the best cell of the board (primary metric)
        inner = render_cell(cell[1], fmt)
        return {"md": f"**{inner}**", "tex": r"\textbf{" + inner + "}", "html": f"<b>{inner}</b>"}.get(fmt, inner)
    if kind == "tied":  # not significantly worse than the best (verdicts.one_vs_best)
        inner = render_cell(cell[1], fmt)
        return {"md": f"<ins>{inner}</ins>", "tex": r"\underline{" + inner + "}",
                "html": f"<u>{inner}</u>"}.get(fmt, inner + " (tied)")
    if kind == "text":
        return esc(cell[1])
    if kind == "ci":
        pm = r"$\pm$" if fmt == "tex" else "±"
        if cell[2].startswith("delta:"):   # a paired difference: [low, high] of the adjusted interval
            ci, d = cell[1], DECIMALS.get(cell[2][6:], 3)
            s = f"{fmt_number(ci.mean, d)} [{fmt_number(ci.low, d)}, {fmt_number(ci.high, d)}]" \
                if math.isfinite(ci.half_width) else f"{fmt_number(ci.mean, d)} (n = {ci.n})"
        else:
            s = fmt_mean_ci(cell[1], cell[2], pm=pm)
        s = s.replace("-", "−") if fmt in ("md", "html") else s.replace("-", "$-$") if fmt == "tex" else s
    elif kind == "num":
        s = "—" if cell[1] is None else fmt_number(cell[1], cell[2])
    else:
        raise ValueError(kind)
    return s.replace("—", "---") if fmt == "tex" else s


def render_header(h: Header, fmt: str) -> str:
    esc = {"md": escape.markdown, "tex": escape.latex, "html": escape.html_text, "plain": str}[fmt]
    s = esc(h.name)
    if h.arrow:
        s += " " + ({"↑": r"$\uparrow$", "↓": r"$\downarrow$"}[h.arrow] if fmt == "tex" else h.arrow)
    if h.unit:
        s += f" [{esc(h.unit)}]"
    return s


def public_reason(why: str) -> str:
    """An "unavailable" reason without the machine's paths: every absolute path is cut to its
    last component (``/root/.cache/x/alex.pth`` -> ``alex.pth``); the CSV keeps the full text."""
    return re.sub(r"(?<![\w.])/(?:[^\s/;,'\"()`]+/)*([^\s/;,'\"()`]+)", r"\1", why)


def unavailable_lines(b: Leaderboard) -> list[str]:
    """One line per metric unavailable in this leaderboard: ``"LPIPS: unavailable: <why>"``."""
    return [f"{DISPLAY.get(m, m)}: {public_reason(why)}" for m, why in b.unavailable.items()]


def board_title(b: Leaderboard) -> str:
    return f"dataset {b.dataset} · task {b.task}"


def board_caption(b: Leaderboard) -> str:
    from .stats import direction

    d = {1: "higher is better", -1: "lower is better"}.get(direction(b.primary), "no direction")
    ns = sorted({c.n_ok for c in b.cells if c.n_ok})
    n = "" if not ns else f" n = {ns[0]} images × seeds per cell." if len(ns) == 1 else \
        f" n = {ns[0]}–{ns[-1]} images × seeds per cell."
    return f"Ranked by {b.primary} ({d}).{n}"


def machine_line(meta: dict) -> str:
    """The machine and its load, stated once per report: what the s/image columns were timed on."""
    dev = meta.get("device") or "unknown device"
    threads = meta.get("torch_threads")
    start, end = meta.get("load_avg_start", ""), meta.get("load_avg_end", "")
    load = (f"load average (1, 5, 15 min) {start} at the start of the run and {end or 'not recorded'} at its end"
            if start else "load not recorded (a run made before the load was recorded)")
    return f"Timings measured on {dev}" + (f", {threads} torch threads" if threads else "") + f"; {load}."


def to_markdown(boards: list[Leaderboard], experiment: str, banner: str | None = None) -> str:
    """The leaderboards as GitHub Markdown; ``banner`` (an incomplete or running run) is set in
    bold under the title."""
    out = [f"# Leaderboard: {escape.markdown(experiment)}", ""]
    out += [f"**{escape.markdown(banner)}**", ""] if banner else []
    out += [escape.markdown(CI_NOTE), ""]
    if not boards:
        out += ["The run has no results.", ""]
    for b in boards:
        heads, rows = board_rows(b)
        out.append(f"## {escape.markdown(board_title(b))}")
        out.append("")
        out.append(escape.markdown(board_caption(b)))
        out.append("")
        out.append(tabulate([[render_cell(c, "md") for c in r] for r in rows],
                            headers=[render_header(h, "md") for h in heads], tablefmt="github",
                            disable_numparse=True))
        for line in unavailable_lines(b):
            out += ["", escape.markdown(line)]
        for n in b.notes + ["† " + f for f in b.footnotes]:
            out += ["", escape.markdown(n)]
        out.append("")
    return "\n".join(out)


def _tex_stacked(cell: Cell) -> str:
    """A LaTeX cell with the interval under the mean in ``\\scriptsize`` (half the width of
    ``mean ± hw`` on one line); marks (bold, underline) apply to the mean."""
    kind, inner = cell[0], cell
    if kind in ("bold", "tied"):
        inner = cell[1]
    if inner[0] != "ci" or inner[1] is None or not math.isfinite(inner[1].half_width):
        return render_cell(cell, "tex")
    text = render_cell(inner, "tex")
    m = re.fullmatch(r"(\S+) (\$\\pm\$ \S+|\[.*\])", text)
    if not m:
        return render_cell(cell, "tex")
    mean = {"bold": r"\textbf{%s}", "tied": r"\underline{%s}"}.get(kind, "%s") % m.group(1)
    return r"\begin{tabular}[t]{@{}r@{}}" + mean + r"\\ {\scriptsize " + m.group(2) + r"}\end{tabular}"


APPENDIX_SKIP = ("provenance", "peak RSS", "peak GPU mem", "status", "VJP", "prior", "n ok")
"""Engineering columns kept in the CSV and the HTML page, not in the paper's appendix tables."""


def _appendix_columns(heads: list[Header]) -> list[int]:
    return [i for i, h in enumerate(heads) if h.name not in APPENDIX_SKIP]


APPENDIX_TEXTWIDTH_PT = 340.0
"""Width the appendix tables are split to fit (an ``article``'s one-column ``\\textwidth`` is 345 pt)."""


def _tex_len(text: str) -> float:
    """Rough printed width (points, ``\\footnotesize``) of a cell's visible text."""
    plain = re.sub(r"\\begin\{tabular\}\[.\]\{@\{\}r@\{\}\}|\\end\{tabular\}", "", text)
    plain = re.sub(r"\\(textbf|underline|shortstack|scriptsize|pm)\b|[{}$]", "", plain)
    plain = re.sub(r"\\[A-Za-z]+(\{\})?|\\[^A-Za-z\\]", "x", plain)   # an escape prints one character
    lines = plain.split("\\\\")
    return max([len(lines[0]) * 4.2] + [len(x) * 3.5 for x in lines[1:]]) + 6.0


def _tex_head(h: Header) -> str:
    """A header on at most two lines (split at the space nearest the middle)."""
    text = render_header(h, "tex")
    words = text.split(" ")
    if len(words) < 2:
        return text
    cut = min(range(1, len(words)), key=lambda k: abs(len(" ".join(words[:k])) - len(" ".join(words[k:]))))
    return r"\shortstack{" + " ".join(words[:cut]) + r"\\" + " ".join(words[cut:]) + "}"


def _column_groups(heads: list[Header], cells: list[list[str]], keep: list[int]) -> list[list[int]]:
    """Split the kept columns into tables that fit :data:`APPENDIX_TEXTWIDTH_PT`; the rank,
    solver and preset columns start every part."""
    ids = [k for k in keep if heads[k].name in ("rank", "solver", "preset")]
    width = {k: max([_tex_len(_tex_head(heads[k]))] + [_tex_len(r[k]) for r in cells]) for k in keep}
    base = sum(width[k] for k in ids)
    groups: list[list[int]] = [[]]
    used = base
    for k in keep:
        if k in ids:
            continue
        if groups[-1] and used + width[k] > APPENDIX_TEXTWIDTH_PT:
            groups.append([])
            used = base
        groups[-1].append(k)
        used += width[k]
    return [sorted(ids + g) for g in groups]


def to_latex(boards: list[Leaderboard], experiment: str, banner: str | None = None) -> str:
    """The per-board tables as a paper's appendix (``\\input`` in a one-column part of the
    document; needs ``booktabs`` and ``longtable``): metric columns only, each interval under its
    mean, no scaling; a board with more columns than fit the text width is split into parts
    (rank, solver and preset repeated). The note on intervals and marks is printed once, in the
    first caption, and the others refer to it. ``banner`` (an incomplete or running run) is a
    comment at the top and a line under every table."""
    out = [f"% invbench appendix tables for experiment {escape.latex(experiment)} (generated; do not edit).",
           "% Requires \\usepackage{booktabs,longtable}; longtable needs one-column mode (\\onecolumn).",
           "% Engineering columns (provenance, peak memory, VJP, status) are in leaderboard.csv and index.html."]
    out += ["% " + escape.latex(" ".join(banner.split()))] if banner else []
    first = f"tab:invbench-{escape.slug(experiment)}-0"
    for i, b in enumerate(boards):
        heads, rows = board_rows(b)
        keep = _appendix_columns(heads)
        cells = [[_tex_stacked(c) for c in r] for r in rows]
        groups = _column_groups(heads, cells, keep)
        for part, cols in enumerate(groups):
            note = (escape.latex(CI_NOTE) if i == 0 and part == 0
                    else f"Intervals and marks as in Table~\\ref{{{first}}}.")
            label = f"tab:invbench-{escape.slug(experiment)}-{i}" + (f"-{part}" if part else "")
            what = f" (part {part + 1} of {len(groups)})" if len(groups) > 1 else ""
            out += [r"{\footnotesize\setlength{\tabcolsep}{3pt}",
                    r"\begin{longtable}{" + "".join("l" if heads[k].name in ("solver", "preset") else "r" for k in cols)
                    + "}",
                    r"\caption{" + escape.latex(f"{experiment}: {board_title(b)}{what}. {board_caption(b)} ") + note
                    + "}",
                    r"\label{" + label + r"}\\", r"\toprule",
                    " & ".join(_tex_head(heads[k]) for k in cols) + r" \\", r"\midrule", r"\endhead"]
            oracle_started = False
            for c, r in zip(b.cells, cells):
                if c.is_oracle and not oracle_started:
                    oracle_started = True
                    out.append(r"\midrule")
                out.append(" & ".join(r[k] for k in cols) + r" \\")
            out.append(r"\bottomrule")
            if part == len(groups) - 1:
                for line in unavailable_lines(b) + b.notes + b.footnotes + ([banner] if banner else []):
                    out.append(r"\multicolumn{" + str(len(cols)) + r"}{p{0.9\linewidth}}{" + escape.latex(line)
                               + r"}\\")
            out += [r"\end{longtable}}", ""]
    return "\n".join(out)


def csv_records(boards: list[Leaderboard]) -> list[dict]:
    """One dict per cell with full-precision numbers (CSV rows)."""
    recs = []
    for b in boards:
        for c in b.cells:
            r: dict = {"dataset": c.dataset, "task": c.task, "solver": c.solver, "preset": c.preset,
                       "prior": c.prior, "preset_provenance": c.provenance,
                       "rank": c.rank if c.rank is not None else "",
                       "is_best": "" if c.is_best is None else c.is_best,
                       "tied_with_best": "" if c.is_best is None else bool(c.tied_with_best),
                       "is_oracle": c.is_oracle,
                       "primary_metric": b.primary, "n_rows": c.n_rows,
                       "n_expected": "" if c.n_expected is None else c.n_expected, "n_ok": c.n_ok, "status": c.status}
            _ci_fields(r, "delta_best", c.delta_best)
            r["delta_best_level"] = _blank(c.delta_level)
            r["seed_sd"] = _blank(c.seed_sd)
            r["reference"] = b.reference or ""
            _ci_fields(r, "delta_ref", c.delta_ref)
            for m in b.metrics:
                _ci_fields(r, m, None if m in b.unavailable else c.metrics.get(m))
                r[f"{m}_note"] = b.unavailable.get(m, "")
            for m in b.set_metrics:
                v, n, note = c.set_metrics.get(m, (None, None, ""))
                if m in b.unavailable:
                    v, note = None, b.unavailable[m]
                r[f"{m}_value"] = "" if v is None else v
                r[f"{m}_n"] = "" if n is None else n
                r[f"{m}_note"] = note
            _ci_fields(r, "seconds", c.seconds if c.seconds.n else None)
            r["seconds_median"] = _blank(c.seconds_median)
            r["batch_sizes"] = c.batch_sizes
            r["nfe_mean"] = _blank(c.nfe)
            r["vjp_mean"] = _blank(c.vjp)
            r["peak_mem_mib"] = _blank(c.peak_mem_mib)
            r["peak_rss_mib"] = _blank(c.peak_rss_mib)
            recs.append(r)
    return recs


def _blank(x: float):
    return "" if x is None or not math.isfinite(x) else x


def _ci_fields(r: dict, m: str, ci: MeanCI | None) -> None:
    if ci is None:
        r.update({f"{m}_mean": "", f"{m}_ci_low": "", f"{m}_ci_high": "", f"{m}_ci_halfwidth": "", f"{m}_n": 0})
    else:
        r.update({f"{m}_mean": _blank(ci.mean), f"{m}_ci_low": _blank(ci.low), f"{m}_ci_high": _blank(ci.high),
                  f"{m}_ci_halfwidth": _blank(ci.half_width), f"{m}_n": ci.n})


def write_records(recs: list[dict], path: Path, lineterminator: str = "\r\n") -> None:
    """``recs`` as CSV (columns in first-seen order, floats at full precision), written atomically."""
    fields: list[str] = []
    for r in recs:
        fields += [k for k in r if k not in fields]
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=fields, restval="", lineterminator=lineterminator)
    w.writeheader()
    for r in recs:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, f.getvalue())


def write_csv(boards: list[Leaderboard], path: Path) -> None:
    write_records(csv_records(boards), path)


def write_tables(boards: list[Leaderboard], experiment: str, out_dir: Path,
                 matched_nfe: list[float] | None = None, banner: str | None = None,
                 config_text: str | None = None, machine: str | None = None) -> dict[str, Path]:
    """Write leaderboard.md (with its "At matched cost" section, :mod:`.matched`), leaderboard.tex,
    leaderboard.csv and, when some budget has two solvers, leaderboard_matched_nfe.csv into
    ``out_dir``. ``matched_nfe`` lists the budgets (NFE per image; default: shared ones);
    ``banner`` says that the run is incomplete or still running (Markdown and LaTeX)."""
    from . import matched

    paths = {"md": out_dir / "leaderboard.md", "tex": out_dir / "leaderboard.tex", "csv": out_dir / "leaderboard.csv"}
    section = matched.to_markdown(boards, matched_nfe)
    md = to_markdown(boards, experiment, banner)
    if machine:
        md = md.replace("\n\n", "\n\n" + escape.markdown(machine) + "\n\n", 1)
    atomic_write_text(paths["md"], md + ("\n" + section if section else ""))
    recs = matched.records(boards, matched_nfe)
    mpath = out_dir / "leaderboard_matched_nfe.csv"
    if recs:
        write_records(recs, mpath, lineterminator="\n")
        paths["matched_csv"] = mpath
    elif mpath.exists():
        mpath.unlink()                                  # a stale table of an earlier report
    atomic_write_text(paths["tex"], to_latex(boards, experiment, banner))
    write_csv(boards, paths["csv"])
    from .main_table import build_main_tables, main_latex, main_markdown

    mains = build_main_tables(boards, task_names_of_run(config_text))
    paths["main_tex"], paths["main_md"] = out_dir / "main.tex", out_dir / "main.md"
    atomic_write_text(paths["main_tex"], main_latex(mains))
    atomic_write_text(paths["main_md"], main_markdown(mains))
    return paths


