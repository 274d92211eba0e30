"""Paper figures of a run (matplotlib, Agg backend), each written as PDF and PNG at a fixed page size.

Per leaderboard (dataset × task):

* ``delta``    the main comparison: each solver cell's paired difference to the board's best cell
  (``delta_best``, cell − best on image means) with the Bonferroni-adjusted interval the table's
  marks are read from; best / tied / worse as in the tables; oracles left out;
* ``bars``     every metric, one panel each: each cell's mean with its (unpaired, image-level)
  95 % interval, oracles hollow grey; at single-column width split into files of ≤ 4 panels;
* ``pareto``   quality (primary metric) versus s/image on a log axis, with the Pareto front;
* ``grid``     sample grid: truth | measurement | cells (at single column: the best, the
  reference and VML-MAP), optional zoom insets at 3× under the images;
* ``nfe``      primary metric versus cost in forward-equivalents (NFE + VJP, as the matched-cost
  tables count it), only when a solver ran at two budgets or more;
* ``memory``   peak GPU memory per cell (skipped with a note when every value is NULL, e.g. CPU);
* ``dist_to_map`` distribution of the distance to the exact MAP (analytic priors only);

and once per run ``cd``, the critical-difference diagram (:mod:`.cd`).

Every figure is drawn at double-column width (6.8 in, ``<stem>.pdf|png``) and single-column width
(3.3 in, ≤ 4.5 in tall, ``<stem>__col1.pdf|png``); the figure size is the page size (no tight
bounding box). Text is ≥ 6 pt. Value axes follow :mod:`.figaxes` (log axis over > 2 decades, far
outside cells marked at the edge). Styles: :mod:`.style`; ``figures.json`` records every file and
each solver's colour and marker.

This module draws them all (in forked workers when there are many) and writes the manifest; the
kinds live in :mod:`.figures_quality` (delta, bars), :mod:`.figures_cost` (pareto, nfe, memory),
:mod:`.figures_posterior` (dist_to_map), :mod:`.figgrid` (grid) and :mod:`.cd`; what they share
(records, the drawing context, labels, text fitting, saving) in :mod:`.figbase`.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..fsafety import atomic_write_bytes
from .data import RunData
from .figbase import (
    DOUBLE_COLUMN_IN,
    SINGLE_COLUMN_IN,
    Ctx,
    FigureRecord,
    Inspect,
    axis_label,
    cell_name,
)
from .figgrid import grid
from .figures_cost import cost_of, memory, nfe_curves, pareto
from .figures_posterior import dist_to_map
from .figures_quality import bars, delta
from .names import task_names_of_run
from .style import MIN_FONT_PT, RC, Palette, is_oracle
from .summary import Leaderboard

# ---------------------------------------------------------------- orchestration

def _board_figures(b: Leaderboard, run: RunData, ctx: Ctx, image_ids, zoom) -> list[FigureRecord]:
    presets: dict[str, list[str]] = {}
    for c in b.cells:
        presets.setdefault(c.solver, []).append(c.preset)
    ctx.pal.set_presets(presets)
    made = [delta(b, ctx), *bars(b, ctx), pareto(b, ctx), grid(b, run, ctx, image_ids, zoom=zoom),
            nfe_curves(b, ctx), memory(b, ctx), dist_to_map(b, run, ctx)]
    return [r for r in made if r is not None]


PARALLEL_MIN_TASKS = 8   # fewer figure tasks are drawn in the calling process: forking would not pay
MAX_WORKERS = 4


@dataclass
class _Job:
    """What the figure tasks of one :func:`make_figures` call read (inherited by forked workers)."""

    run: RunData
    boards: list[Leaderboard]
    out_dir: Path
    image_ids: list[str] | None
    zoom: tuple[float, float, float] | None
    pal: Palette
    task_names: dict[str, str]
    formats: tuple[str, ...]
    inspect: Inspect | None
    rc: dict


_JOB: dict[str, _Job] = {}


def _draw(task: tuple[float, int | None]) -> tuple[list[FigureRecord], list[str]]:
    """One task: the critical-difference figure (board None) or one board's figures, at a width;
    returns the records and the refused-image lines."""
    job = _JOB["job"]
    width, i = task
    ctx = Ctx(width, job.pal, job.out_dir, job.task_names, job.formats, job.inspect, [])
    with plt.rc_context(job.rc):
        if i is None:
            from .cd import cd_figure

            rec = cd_figure(job.boards, ctx)
            recs = [rec] if rec is not None else []
        else:
            recs = _board_figures(job.boards[i], job.run, ctx, job.image_ids, job.zoom)
    return recs, ctx.refused


def _die_with_parent(parent: int) -> None:
    """Worker start: end with the report process (Linux ``PR_SET_PDEATHSIG``), so a killed report
    leaves no worker writing into its staging folder."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def worker_count(n_tasks: int, workers: int | None = None) -> int:
    """Processes that draw the figures: ``workers`` if given, else 1 below
    :data:`PARALLEL_MIN_TASKS` tasks or off Linux (forking is safe there, and workers can be tied
    to the report's life), else the CPUs this process may use (at most :data:`MAX_WORKERS`)."""
    import multiprocessing

    if workers is not None:
        return max(1, int(workers))
    if (n_tasks < PARALLEL_MIN_TASKS or not sys.platform.startswith("linux")
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus, n_tasks))


def _run_tasks(tasks: list[tuple[float, int | None]], n: int) -> list[tuple[list[FigureRecord], list[str]]]:
    """The results of ``tasks`` in order: drawn here, or by ``n`` forked processes (each figure is
    independent; files are written atomically by whoever draws them)."""
    if n <= 1:
        return [_draw(t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        return list(pool.map(_draw, tasks))


def make_figures(run: RunData, boards: list[Leaderboard], out_dir: Path,
                 image_ids: list[str] | None = None, *, zoom: tuple[float, float, float] | None = None,
                 widths: tuple[float, ...] = (DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN),
                 refused: list[str] | None = None, inspect: Inspect | None = None,
                 formats: tuple[str, ...] = ("png", "pdf"), workers: int | None = None,
                 ) -> tuple[list[FigureRecord], list[str]]:
    """Write all figures into ``out_dir``, each at double-column (6.8 in, ``<stem>.pdf|png``) and
    single-column width (3.3 in, ``<stem>__col1.pdf|png``) unless ``widths`` names only one; returns
    the records and notes on skipped figures. ``zoom`` adds zoomed insets to the sample grids
    (:mod:`.figgrid`). Run images over the pixel cap are not drawn: one line each, naming the file,
    goes to the notes and to ``refused``. ``inspect(fig, stem)`` is called with every figure before
    it is written (the tests measure text there; the figures are then drawn in this process);
    ``formats`` () writes no figure file. ``workers``: processes drawing the figures
    (:func:`worker_count` when None)."""
    from . import fonts

    for width in widths:
        if width not in (DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN):
            raise ValueError(f"figure width {width} in: expected {DOUBLE_COLUMN_IN} or {SINGLE_COLUMN_IN}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pal = Palette({c.solver for b in boards for c in b.cells})
    rc = {**RC, "font.family": fonts.families()}
    tasks = [(w, i) for w in widths for i in (None, *range(len(boards)))]
    n = 1 if inspect is not None else worker_count(len(tasks), workers)
    _JOB["job"] = _Job(run, boards, out_dir, image_ids, zoom, pal, task_names_of_run(run.meta.get("config")),
                       formats, inspect, rc)
    try:
        results = _run_tasks(tasks, n)
    finally:
        _JOB.clear()
    recs = [r for rs, _ in results for r in rs]
    refused_here = list(dict.fromkeys(line for _, lines in results for line in lines))
    notes: list[str] = []
    if not any(r.kind == "cd" for r in recs):
        notes.append("No critical-difference diagram: it needs at least 3 solvers common to every "
                     "(dataset, task) board and at least 2 image blocks.")
    if boards and not any(math.isfinite(c.peak_mem_mib) for b in boards for c in b.cells):
        notes.append("Peak-memory bars skipped: peak GPU memory is NULL for every cell (CPU run); "
                     "peak RSS is in the tables.")
    if not any(r.kind == "nfe" for r in recs):
        notes.append("No quality-vs-cost plot: no solver ran at two budgets or more.")
    notes += refused_here
    if refused is not None:
        refused += refused_here
    if formats:
        write_manifest(recs, out_dir / MANIFEST, pal.record({c.solver for b in boards for c in b.cells}))
    return recs, notes


MANIFEST = "figures.json"


def write_manifest(recs: list[FigureRecord], path: Path, solvers: dict | None = None) -> None:
    """``figures.json``: ``figures``, one entry per figure file pair (kind, title, caption, PNG and
    PDF names, the column width and page height in inches, the (x, y) axis labels), and ``solvers``,
    each solver's display name, colour, marker and preset fills, for scripts that pick figures for
    a paper and for checks that read a report without drawing it again."""
    import json

    entries = [{"kind": r.kind, "title": r.title, "caption": r.caption, "png": r.png.name, "pdf": r.pdf.name,
                "width_in": r.width_in, "height_in": r.height_in, "axis_labels": [list(p) for p in r.axis_labels]}
               for r in recs]
    doc = {"figures": entries, "solvers": solvers or {},
           "cost": "forward-equivalents per image: NFE + VJP (a VJP counted as one forward pass)"}
    atomic_write_bytes(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())


def read_manifest(folder: Path) -> list[FigureRecord]:
    """The :class:`FigureRecord` list of a report's ``figures/`` folder (see :func:`write_manifest`)."""
    import json

    doc = json.loads((folder / MANIFEST).read_text())
    entries = doc["figures"] if isinstance(doc, dict) else doc
    return [FigureRecord(e["kind"], e["title"], e["caption"], folder / e["png"], folder / e["pdf"], e["width_in"],
                         tuple(tuple(p) for p in e["axis_labels"]), e.get("height_in", 0.0)) for e in entries]


def check_text(fig) -> list[str]:
    """Problems of a drawn figure's text (:func:`.figcheck.check_figure` at :data:`MIN_FONT_PT`)."""
    from .figcheck import check_figure

    return check_figure(fig, MIN_FONT_PT)


__all__ = [
    "DOUBLE_COLUMN_IN",
    "MANIFEST",
    "SINGLE_COLUMN_IN",
    "FigureRecord",
    "axis_label",
    "cell_name",
    "check_text",
    "cost_of",
    "is_oracle",
    "make_figures",
    "read_manifest",
    "write_manifest",
]
