"""Reports of a run: leaderboards (Markdown/LaTeX/CSV), paper figures and one HTML page.

``write_report(run_dir, out_dir=None)`` writes into ``out_dir`` (default ``<run_dir>/report/``):
``leaderboard.md``, ``leaderboard.tex``, ``leaderboard.csv``, ``figures/*.png|pdf`` and
``index.html``. See docs/reports.md.
"""

from __future__ import annotations

from pathlib import Path

from .data import RunData, RunDirError, load_run
from .summary import build_leaderboards

__all__ = ["RunData", "RunDirError", "build_leaderboards", "check_report_out", "load_run", "report_settings",
           "write_report"]


REPORT_SUBDIR = "report"  # the default report folder inside a run folder


def check_report_out(run_dir: Path, out_dir: Path) -> None:
    """RunDirError unless ``out_dir`` can hold a report: not an existing file or dangling link,
    and not inside the run folder except its own ``report/`` subfolder (a report never writes
    among a run's data)."""
    if out_dir.is_symlink() and not out_dir.exists():
        raise RunDirError(f"report --out {out_dir}: is a symbolic link to a missing target; remove it or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"report --out {out_dir}: exists and is not a directory")
    run, out = Path(run_dir).resolve(), out_dir.resolve()
    if out != run / REPORT_SUBDIR and (out == run or run in out.parents):
        raise RunDirError(f"report --out {out_dir}: is inside the run folder {run_dir}; write reports to "
                          f"{Path(run_dir) / REPORT_SUBDIR} (the default) or outside the run folder")


def report_settings(run: RunData) -> dict:
    """The ``[report]`` table of the configuration the run was made with (``reference``,
    ``primary``, ``images``, ``zoom``, ``matched_nfe``; see ``invbench.bench.config.ReportSpec``),
    or ``{}``."""
    import tomllib

    text = run.meta.get("config")
    if not text:
        return {}
    try:
        rep = tomllib.loads(text).get("report", {})
    except tomllib.TOMLDecodeError:
        return {}
    return rep if isinstance(rep, dict) else {}


def write_report(run_dir: Path, out_dir: Path | None = None, *, primary: dict[str, str] | None = None,
                 image_ids: list[str] | None = None, reference: str | None = None,
                 zoom: tuple[float, float, float] | None = None, matched_nfe: list[float] | None = None) -> Path:
    """Write the report of ``run_dir`` and return the output directory.

    ``out_dir`` defaults to ``<run_dir>/report/``: a report lives next to the data it was made
    from, never in the source tree unless asked (``--out reports/NAME``).
    ``primary`` maps task -> ranking metric (default ``psnr``); ``image_ids`` selects the images of
    the sample grids (default: the first three ids of each dataset); ``reference`` names a solver
    whose paired difference every cell also shows (column ``Δ <solver>``); ``zoom`` ``(x, y, size)``
    adds a zoomed inset of that square region (fractions of the image side) to every grid image;
    ``matched_nfe`` lists the budgets (NFE per image) of the "At matched cost" tables (default: every
    NFE at which two solvers ran).
    Each argument left ``None`` comes from the run configuration's ``[report]`` table, if any.
    Raises :class:`RunDirError` when the run directory or its store is missing.
    """
    from .figures import make_figures
    from .html import write_html
    from .tables import write_tables

    run = load_run(Path(run_dir))
    cfg = report_settings(run)
    primary = (cfg.get("primary") or None) if primary is None else primary
    image_ids = cfg.get("images") if image_ids is None else image_ids
    reference = cfg.get("reference") if reference is None else reference
    zoom = tuple(cfg["zoom"]) if zoom is None and cfg.get("zoom") else zoom
    matched_nfe = cfg.get("matched_nfe") if matched_nfe is None else matched_nfe
    out_dir = Path(run_dir) / REPORT_SUBDIR if out_dir is None else Path(out_dir)
    check_report_out(Path(run_dir), out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    boards = build_leaderboards(run, primary, reference=reference)
    write_tables(boards, run.experiment, out_dir, matched_nfe)
    figs, notes = make_figures(run, boards, out_dir / "figures", image_ids, zoom=zoom)
    write_html(run, boards, figs, notes, out_dir / "index.html", matched_nfe)
    return out_dir
