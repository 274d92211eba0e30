"""One ``index.html`` per report: a summary first (solver × task matrix, critical-difference
diagram, Pareto plots), then the leaderboards (folded), the figures, run metadata and metric
status. Figures are the report's own ``figures/*.png``, linked by relative address, so the page
stays small; no external files, scripts or fonts.

Every piece of text goes through ``html.escape`` (:func:`invbench.bench.report.escape.html_text`), and
the page declares a Content-Security-Policy that forbids scripts altogether.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from invbench.operators.conventions import noise_sigma_to_model
from PIL import Image

from ..fsafety import atomic_write_text
from .data import RunData
from .escape import html_text as E
from .figures import DOUBLE_COLUMN_IN, FigureRecord
from .names import solver_name, task_names_of_run
from .stats import DECIMALS, UNITS, arrow, fmt_number
from .summary import Leaderboard, overall_ranking, solver_cells
from .tables import (
    CI_NOTE,
    DISPLAY,
    Header,
    board_caption,
    board_rows,
    board_title,
    machine_line,
    render_cell,
    render_header,
    unavailable_lines,
)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.05em}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
tr.notok td{color:#8a1f11}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.6em;overflow:auto;font-size:12px;max-height:30em}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:700px}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
.note{font-size:13px;color:#555}
.banner{border:2px solid #8a1f11;background:#fff4f2;color:#8a1f11;padding:.5em .8em;font-weight:600}
"""

CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"

META_ORDER = ("experiment", "code_version", "config_hash", "device", "torch_version", "torch_threads",
              "python_version", "units", "protocol")


def _img(path: Path, page_dir: Path) -> str:
    """The figure's address relative to the page (``figures/NAME.png``): the page stays small and
    the report folder moves as a whole."""
    return Path(os.path.relpath(path, page_dir)).as_posix()


def _board_html(b: Leaderboard, idx: int) -> str:
    heads, rows = board_rows(b)
    out = [f'<h3 id="board-{idx}">{E(board_title(b))}</h3>', f'<p class="note">{E(board_caption(b))}</p>',
           '<table class="leaderboard"><thead><tr>']
    out += [f"<th>{render_header(h, 'html')}</th>" for h in heads]
    out.append("</tr></thead><tbody>")
    for c, r in zip(b.cells, rows):
        cls = ' class="notok"' if c.status != "ok" else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{render_cell(x, 'html')}</td>" for x in r) + "</tr>")
    out.append("</tbody></table>")
    out += [f'<p class="note">{E(n)}</p>' for n in unavailable_lines(b) + list(b.notes)
            + ["† " + f for f in b.footnotes]]
    return "\n".join(out)


def _mark_html(c, metric: str) -> str:
    v = fmt_number(c.metrics[metric].mean, DECIMALS.get(metric, 3)).replace("-", "−")
    return f"<b>{v}</b>" if c.is_best else f"<u>{v}</u>" if c.tied_with_best else v


def board_verdict(b: Leaderboard, task_names: dict[str, str]) -> str:
    """One sentence: the best solver of the board, the solvers tied with it, how many are worse."""
    cells = solver_cells(b)
    best = next((c for c in cells.values() if c.is_best), None)
    if best is None:
        return ""
    tied = sorted(solver_name(s) for s, c in cells.items() if c.tied_with_best)
    worse = len(cells) - 1 - len(tied)
    name = f"{task_names.get(b.task, b.task)} ({b.dataset})"
    m = best.metrics[b.primary]
    head = (f"{name}: {solver_name(best.solver)} has the best mean {b.primary.upper()} "
            f"({m.mean:.{DECIMALS.get(b.primary, 3)}f})")
    if not tied:
        return head + f"; every other solver ({worse}) is significantly worse."
    return (head + f"; {', '.join(tied)} {'is' if len(tied) == 1 else 'are'} not significantly worse"
            + (f"; {worse} solver{'s' if worse != 1 else ''} significantly worse." if worse else "."))


def overall_verdict(boards: list[Leaderboard]) -> str:
    """The sentence across boards: who is best or tied on how many tasks, and the Friedman test
    over image blocks (post-hoc only when it rejects)."""
    ranked = [b for b in boards if solver_cells(b)]
    if not ranked:
        return ""
    top: dict[str, int] = {}
    for b in ranked:
        for s, c in solver_cells(b).items():
            top[s] = top.get(s, 0) + int(bool(c.is_best or c.tied_with_best))
    lead = sorted(top, key=lambda s: (-top[s], s))[:3]
    parts = [", ".join(f"{solver_name(s)} is best or tied with the best on {top[s]} of {len(ranked)} boards"
                       for s in lead) + "."]
    r = overall_ranking(boards)
    if r is None:
        parts.append("Too few solvers common to all boards for an overall ranking.")
    else:
        p = f"p = {r.friedman_p:.2g}" if math.isfinite(r.friedman_p) else "p undefined"
        first = solver_name(r.methods[0])
        if r.rejects:
            worse = [solver_name(m) for m, (_, ph) in r.wilcoxon.items() if ph < 0.05]
            parts.append(f"Friedman over {r.n_blocks} image blocks ({r.n_boards} boards, {len(r.methods)} solvers): "
                         f"{p}, the average ranks differ; {first} ranks first, and "
                         + (f"{', '.join(worse)} {'is' if len(worse) == 1 else 'are'} significantly worse than it "
                            "(Wilcoxon signed-rank over the blocks, Holm)." if worse else
                            "no solver is significantly worse than it (Wilcoxon signed-rank over the blocks, Holm)."))
        else:
            parts.append(f"Friedman over {r.n_blocks} image blocks ({r.n_boards} boards, {len(r.methods)} solvers): "
                         f"{p}; no overall difference in ranks is shown, so no post-hoc ranking is drawn.")
    return " ".join(parts)


def _summary_html(boards: list[Leaderboard], task_names: dict[str, str] | None = None) -> str:
    """One row per solver (its best-ranked preset per board; the presets in a note), oracles in
    their own block, n per column, the one-vs-best marks and the verdict sentences."""
    task_names = task_names or {}
    ranked = [b for b in boards if any(c.rank is not None for c in b.cells)]
    if not ranked:
        return '<p class="note">No leaderboard is ranked.</p>'
    solvers: list[str] = []
    oracles: list[str] = []
    for b in ranked:
        for c in b.cells:
            if c.solver not in solvers + oracles:
                (oracles if c.is_oracle else solvers).append(c.solver)
    out = [f'<p class="verdict"><b>{E(overall_verdict(ranked))}</b></p>',
           '<table class="summary"><thead><tr><th>solver</th>']
    for b in ranked:
        n = max((c.metrics[b.primary].n for c in b.cells if b.primary in c.metrics), default=0)
        head = render_header(Header(DISPLAY.get(b.primary, b.primary), UNITS.get(b.primary, ""), arrow(b.primary)),
                             "html")
        out.append(f"<th>{E(task_names.get(b.task, b.task))}<br>{E(b.dataset)}<br>{head}<br>n = {n}</th>")
    out.append("</tr></thead><tbody>")
    folded: dict[str, set[str]] = {}
    for group, title in ((solvers, None), (oracles, "exact references (not ranked)")):
        if title and group:
            out.append(f'<tr><th colspan="{len(ranked) + 1}">{E(title)}</th></tr>')
        for sv in group:
            row = [f"<td>{E(solver_name(sv))}</td>"]
            for b in ranked:
                cs = [c for c in b.cells if c.solver == sv and b.primary in c.metrics]
                if not cs:
                    row.append("<td>—</td>")
                    continue
                c = min(cs, key=lambda c: (c.rank is None, c.rank or 0, c.preset))
                folded.setdefault(sv, set()).update(x.preset for x in cs)
                row.append(f"<td>{_mark_html(c, b.primary)}</td>")
            out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    out.append('<p class="note">Mean of the primary metric over images (seeds averaged per image). Bold: the best '
               "solver of the column; underlined: not significantly worse than it (paired t-test on image means "
               "against the best, Bonferroni over the column's other solvers, α = 0.05; the adjusted intervals are "
               "in the leaderboards). Oracles are exact references. Each solver shows its best-ranked preset; "
               "presets: " + E("; ".join(f"{solver_name(k)}: {', '.join(sorted(v))}" for k, v in folded.items()))
               + ".</p>")
    verdicts = [board_verdict(b, task_names) for b in ranked]
    out.append("<ul class=\"verdicts\">" + "".join(f"<li>{E(v)}</li>" for v in verdicts if v) + "</ul>")
    return "\n".join(out)


def _figure_html(f: FigureRecord, page_dir: Path) -> str:
    with Image.open(f.png) as im:  # figures are saved at 200 dpi: show at half size (sharp on HiDPI)
        w, h = (max(1, v // 2) for v in im.size)
    return (f'<figure class="fig-{E(f.kind)}"><img src="{E(_img(f.png, page_dir))}" width="{w}" height="{h}" '
            f'alt="{E(f.title)}">'
            f"<figcaption><b>{E(f.title)}.</b> {E(f.caption)} "
            f"(PDF: figures/{E(f.pdf.name)})</figcaption></figure>")


def _meta_html(run: RunData) -> str:
    meta = dict(run.meta)
    config = meta.pop("config", None)
    keys = [k for k in META_ORDER if k in meta] + sorted(k for k in meta if k not in META_ORDER)
    out = ['<table class="meta"><tbody>']
    out += [f"<tr><th>{E(k)}</th><td>{E(meta[k])}</td></tr>" for k in keys]
    df = run.results
    if len(df):
        for col, name in (("device", "devices in rows"), ("torch_version", "torch in rows"),
                          ("code_version", "code versions in rows"), ("batch_size", "batch sizes")):
            if col in df:
                vals = sorted({str(v) for v in df[col].dropna()})
                out.append(f"<tr><th>{E(name)}</th><td>{E(', '.join(vals))}</td></tr>")
        if "noise_sigma" in df:
            pairs = sorted({(str(t), float(s)) for t, s in zip(df["task"], pd.to_numeric(df["noise_sigma"]))
                            if not pd.isna(s)})
            txt = "; ".join(f"{t}: {s:g} (pixel units), sigma_y = {noise_sigma_to_model(s):g} (model units)"
                            for t, s in pairs)
            out.append(f"<tr><th>noise per task</th><td>{E(txt)}</td></tr>")
    out.append("</tbody></table>")
    if config:
        out += ["<h3>Resolved configuration</h3>", f"<pre>{E(config)}</pre>"]
    return "\n".join(out)


def _status_html(run: RunData) -> str:
    ms = run.metric_status
    if ms is None or not len(ms):
        return '<p class="note">No metric status recorded.</p>'
    out = ['<table class="metric-status"><thead><tr><th>metric</th><th>available</th><th>backbone</th>'
           + "<th>note</th></tr></thead><tbody>"]
    for _, r in ms.iterrows():
        avail = r.get("available")
        a = "yes" if avail is not None and not pd.isna(avail) and int(avail) else "no"
        bb = "" if r.get("backbone") is None or pd.isna(r.get("backbone")) else r.get("backbone")
        note = "" if r.get("note") is None or pd.isna(r.get("note")) else r.get("note")
        out.append(f"<tr><td>{E(r['metric'])}</td><td>{a}</td><td>{E(bb)}</td><td>{E(note)}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _matched_html(boards: list[Leaderboard], targets: list[float] | None) -> str:
    """The "At matched cost" tables (:mod:`.matched`), collapsible; '' when there are none."""
    from .matched import REL_TOL, tables

    out = []
    for b, ts, rows in tables(boards, targets):
        cells = "".join(f"<th>NFE+VJP ≈ {t:g}</th>" for t in ts)
        body = "".join("<tr>" + "".join(
            f"<td><b>{E(v[2:-2])}</b></td>" if v.startswith("**") else f"<td>{E(v)}</td>" for v in r) + "</tr>"
            for r in rows)
        out.append(f"<h3>{E(b.dataset)} · {E(b.task)}</h3><table><thead><tr><th>solver</th>{cells}</tr></thead>"
                   f"<tbody>{body}</tbody></table>")
    if not out:
        return ""
    return ("<details><summary>At matched cost (forward-equivalents per image: NFE + VJP)</summary>"
            f'<p class="note">Primary metric (mean [95% interval], preset) of each solver\'s best-ranked cell within '
            f"±{REL_TOL:.0%} of the column's budget; bold: best mean of the column (no test); —: not run at that "
            "budget.</p>" + "\n".join(out) + "</details>")


def render_html(run: RunData, boards: list[Leaderboard], figs: list[FigureRecord], notes: list[str],
                page_dir: Path, matched_nfe: list[float] | None = None, banner: str | None = None) -> str:
    """The page's HTML; ``page_dir`` is the folder the page is written to (figure addresses are
    relative to it); ``banner`` (an incomplete or running run) is shown under the title."""
    title = f"invbench report: {run.experiment}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{E(CSP)}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{E(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{E(title)}</h1>",
             *([f'<p class="banner">{E(banner)}</p>'] if banner else []),
             ('<p class="note">Generated by <code>invbench report</code>; tables are also in '
              '<a href="leaderboard.md">leaderboard.md</a>, <a href="leaderboard.tex">leaderboard.tex</a> and '
              '<a href="leaderboard.csv">leaderboard.csv</a>, figures as PDF in <code>figures/</code>.</p>'),
             "<h2>Summary</h2>", _summary_html(boards, task_names_of_run(run.meta.get("config"))),
             f'<p class="note">{E(machine_line(run.meta))}</p>']
    figs = [f for f in figs if f.width_in == DOUBLE_COLUMN_IN]   # the page shows the double-column set
    # the answer first: ranking, paired differences, then cost
    lead = [f for f in figs if f.kind in ("cd", "delta", "pareto")]
    parts += [_figure_html(f, page_dir) for f in lead]
    parts += ["<h2>Leaderboards</h2>", f'<p class="note">{E(CI_NOTE)}</p>']
    parts += [f"<details><summary>{E(board_title(b))}</summary>\n{_board_html(b, i)}\n</details>"
              for i, b in enumerate(boards)]
    if not boards:
        parts.append('<p class="note">The run has no results.</p>')
    parts.append(_matched_html(boards, matched_nfe))
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(f, page_dir) for f in figs if f not in lead]
    parts += [f'<p class="note">{E(n)}</p>' for n in notes]
    parts += ["<h2>Run metadata</h2>", _meta_html(run), "<h2>Metric availability</h2>", _status_html(run),
              "</body></html>"]
    return "\n".join(parts)


def write_html(run: RunData, boards: list[Leaderboard], figs: list[FigureRecord], notes: list[str],
               path: Path, matched_nfe: list[float] | None = None, banner: str | None = None) -> Path:
    atomic_write_text(path, render_html(run, boards, figs, notes, Path(path).parent, matched_nfe, banner))
    return path
