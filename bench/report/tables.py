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
from .stats import DECIMALS, UNITS, MeanCI, arrow, fmt_mean_ci, fmt_number
from .summary import Leaderboard

CI_NOTE = ("Values are means over images × seeds (ok rows) with a 95% interval: ± a Student-t "
           "half-width for PSNR, SSIM and consistency, [low, high] of a bootstrap for non-negative "
           "metrics. Δ best is the paired difference to the rank-1 cell on the same images and seeds "
           "(mean ± 95% Student-t CI); group is 1 + the number of cells significantly better (paired "
           "t-tests, Holm-corrected at 5%), so tied cells share a group and bold marks group 1. "
           "s/image is wall-clock inside the timed region per image; a batched cell's interval is over its "
           "timed batches (batch sizes in the CSV); NFE/VJP are means per image; peak memory "
           "is the maximum over images.")

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
    paired = any(c.group is not None for c in b.cells)
    heads = [Header("rank")] + ([Header("group"), Header("Δ best", UNITS.get(b.primary, ""))] if paired else [])
    ref = paired and b.reference is not None
    heads += [Header(f"Δ {b.reference}", UNITS.get(b.primary, ""))] if ref else []
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
            r.append(("text", str(c.group) if c.group is not None else "—"))
            r.append(("text", "best" if c.rank is not None and c.delta_best is None and c.group is not None
                      else "—") if c.delta_best is None else ("ci", c.delta_best, b.primary))
        if ref:
            r.append(("ci", c.delta_ref, b.primary) if c.delta_ref is not None
                     else ("text", "ref" if c.solver == b.reference and c.rank is not None else "—"))
        r += [("text", c.solver), ("text", c.preset)] + ([("text", c.provenance or "—")] if prov else [])
        r += [("text", c.prior), ("text", f"{c.n_ok}/{c.n_rows if c.n_expected is None else max(c.n_expected, c.n_rows)}")]
        for m in shown:
            if m == b.primary and c.group == 1 and c.metrics.get(m) is not None:
                r.append(("bold", _ci_cell(c.metrics.get(m), m)))
            else:
                r.append(_ci_cell(c.metrics.get(m), m))
        for m in shown_set:
            v, _n, note = c.set_metrics.get(m, (None, None, ""))
            r.append(("num", v, DECIMALS.get(m, 4)) if v is not None else ("text", note or "—"))
        r.append(_ci_cell(c.seconds if c.seconds.n else None, "seconds"))
        r += [_int_or(c.nfe), _int_or(c.vjp)]
        if gpu:
            r.append(("num", c.peak_mem_mib, 1) if math.isfinite(c.peak_mem_mib) else ("text", "n/a"))
        if rss:
            r.append(("num", c.peak_rss_mib, 1) if math.isfinite(c.peak_rss_mib) else ("text", "n/a"))
        r.append(("text", c.status))
        rows.append(r)
    return heads, rows


def render_cell(cell: Cell, fmt: str) -> str:
    """Render a typed cell for ``fmt`` in {"md", "tex", "html", "plain"} (escaping user text)."""
    esc = {"md": escape.markdown, "tex": escape.latex, "html": escape.html_text, "plain": str}[fmt]
    kind = cell[0]
    if kind == "bold":  # best and tied-best (significance group 1) of the primary metric
        inner = render_cell(cell[1], fmt)
        return {"md": f"**{inner}**", "tex": r"\textbf{" + inner + "}", "html": f"<b>{inner}</b>"}.get(fmt, inner)
    if kind == "text":
        return esc(cell[1])
    if kind == "ci":
        pm = r"$\pm$" if fmt == "tex" else "±"
        s = fmt_mean_ci(cell[1], cell[2], pm=pm)
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
        for n in b.notes:
            out += ["", escape.markdown(n)]
        out.append("")
    return "\n".join(out)


def to_latex(boards: list[Leaderboard], experiment: str, banner: str | None = None) -> str:
    """Tables for ``\\input``; the including document needs ``\\usepackage{booktabs,graphicx}``.
    ``banner`` (an incomplete or running run) is a comment line at the top and a line under every
    table."""
    out = [f"% invbench leaderboard for experiment {escape.latex(experiment)} (generated; do not edit).",
           "% Requires \\usepackage{booktabs} and \\usepackage{graphicx}."]
    out += ["% " + escape.latex(" ".join(banner.split()))] if banner else []
    for i, b in enumerate(boards):
        heads, rows = board_rows(b)
        out += [r"\begin{table}[htbp]", r"\centering", r"\small",
                r"\caption{" + escape.latex(f"{experiment}: {board_title(b)}. {board_caption(b)} ")
                + escape.latex(CI_NOTE) + "}",
                r"\label{tab:invbench-" + escape.slug(experiment) + f"-{i}" + "}",
                r"\resizebox{\linewidth}{!}{%",
                r"\begin{tabular}{" + "l" * len(heads) + "}", r"\toprule",
                " & ".join(render_header(h, "tex") for h in heads) + r" \\", r"\midrule"]
        for r in rows:
            out.append(" & ".join(render_cell(c, "tex") for c in r) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}}"]
        for line in unavailable_lines(b):
            out.append(r"\par\footnotesize " + escape.latex(line))
        for n in b.notes + ([banner] if banner else []):
            out.append(r"\par\footnotesize " + escape.latex(n))
        out += [r"\end{table}", ""]
    return "\n".join(out)


def csv_records(boards: list[Leaderboard]) -> list[dict]:
    """One dict per cell with full-precision numbers (CSV rows)."""
    recs = []
    for b in boards:
        for c in b.cells:
            r: dict = {"dataset": c.dataset, "task": c.task, "solver": c.solver, "preset": c.preset,
                       "prior": c.prior, "rank": c.rank if c.rank is not None else "",
                       "group": c.group if c.group is not None else "",
                       "primary_metric": b.primary, "n_rows": c.n_rows,
                       "n_expected": "" if c.n_expected is None else c.n_expected, "n_ok": c.n_ok, "status": c.status}
            _ci_fields(r, "delta_best", c.delta_best)
            r["p_best_holm"] = _blank(c.p_best)
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
                 matched_nfe: list[float] | None = None, banner: str | None = None) -> dict[str, Path]:
    """Write leaderboard.md (with its "At matched cost" section, :mod:`.matched`), leaderboard.tex,
    leaderboard.csv and, when some budget has two solvers, leaderboard_matched_nfe.csv into
    ``out_dir``. ``matched_nfe`` lists the budgets (NFE per image; default: shared ones);
    ``banner`` says that the run is incomplete or still running (Markdown and LaTeX)."""
    from . import matched

    paths = {"md": out_dir / "leaderboard.md", "tex": out_dir / "leaderboard.tex", "csv": out_dir / "leaderboard.csv"}
    section = matched.to_markdown(boards, matched_nfe)
    atomic_write_text(paths["md"], to_markdown(boards, experiment, banner) + ("\n" + section if section else ""))
    recs = matched.records(boards, matched_nfe)
    mpath = out_dir / "leaderboard_matched_nfe.csv"
    if recs:
        write_records(recs, mpath, lineterminator="\n")
        paths["matched_csv"] = mpath
    elif mpath.exists():
        mpath.unlink()                                  # a stale table of an earlier report
    atomic_write_text(paths["tex"], to_latex(boards, experiment, banner))
    write_csv(boards, paths["csv"])
    return paths


