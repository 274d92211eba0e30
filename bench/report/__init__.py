"""Reports of a run: leaderboards (Markdown/LaTeX/CSV), paper figures and one HTML page.

``write_report(run_dir, out_dir=None)`` writes into ``out_dir`` (default ``<run_dir>/report/``):
``leaderboard.md``, ``leaderboard.tex``, ``leaderboard.csv``, ``figures/*.png|pdf`` and
``index.html``. The folder is built aside and swapped in as a whole (:mod:`.output`); an
incomplete or running run says so (:mod:`.completeness`). See docs/reports.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .data import RunData, RunDirError, load_run
from .escape import terminal
from .summary import build_leaderboards

__all__ = ["RunData", "RunDirError", "build_leaderboards", "check_report_choices", "check_report_out", "load_run",
           "report_settings", "write_report"]


REPORT_SUBDIR = "report"  # the default report folder inside a run folder


def check_report_out(run_dir: Path, out_dir: Path) -> None:
    """RunDirError unless ``out_dir`` can hold a report: not an existing file or dangling link,
    and not inside the run folder except its own ``report/`` subfolder (a report never writes
    among a run's data)."""
    if out_dir.is_symlink() and not out_dir.exists():
        raise RunDirError(f"report --out {out_dir}: is a symbolic link to a missing target; remove it or choose "
                          "another --out")
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


def _listed(values: list[str], limit: int = 8) -> str:
    shown = ", ".join(values[:limit]) if values else "none"
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_report_choices(run: RunData, reference: str | None, image_ids: list[str] | None,
                         reference_from: str = "--reference", images_from: str = "image_ids") -> None:
    """ConfigError (one line, exit 2) when ``reference`` is no solver of the run, or an id of
    ``image_ids`` is the image of no row; the line names the value and what the run has."""
    from invbench.bench.config import ConfigError

    df = run.results
    if reference is not None:
        solvers = sorted({str(s) for s in df["solver"]}) if len(df) else []
        if str(reference) not in solvers:
            raise ConfigError(f"{reference_from} {reference!r}: no such solver in the run; solvers in the run: "
                              f"{_listed(solvers)}")
    if image_ids is not None:
        ids = sorted({str(i) for i in df["image_id"]}) if len(df) else []
        unknown = [str(i) for i in image_ids if str(i) not in ids]
        if unknown:
            raise ConfigError(f"{images_from}: image id {unknown[0]!r} is the image of no row of the run; ids in the "
                              f"run: {_listed(ids)}")


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
    A ``reference`` that is no solver of the run, or an image id of no row, is refused
    (:class:`~invbench.bench.config.ConfigError`). The report is built in a staging folder and
    swapped in whole (:mod:`.output`): an existing ``out_dir`` that is not a report is refused, and
    a storage error is one :class:`RunDirError` line. Warnings (an incomplete run, an image over
    the pixel cap) go to stderr as ``invbench: warning: ...`` lines and into the report.
    Raises :class:`RunDirError` when the run directory or its store is missing.
    """
    from .figures import make_figures
    from .html import write_html
    from .output import check_replaceable, staged_report
    from .tables import write_tables

    run = load_run(Path(run_dir), progress=True)
    cfg = report_settings(run)
    primary = (cfg.get("primary") or None) if primary is None else primary
    check_report_choices(run, reference, image_ids)
    check_report_choices(run, None, cfg.get("images") if image_ids is None else None, images_from="report.images")
    image_ids = cfg.get("images") if image_ids is None else image_ids
    warnings: list[str] = []
    if reference is None and cfg.get("reference") is not None:
        reference = str(cfg["reference"])
        if reference not in {str(s) for s in run.results["solver"]}:   # declared, not reached (yet)
            warnings.append(f"report.reference {reference!r} has no row in this run; no Δ {reference} column")
    zoom = tuple(cfg["zoom"]) if zoom is None and cfg.get("zoom") else zoom
    matched_nfe = cfg.get("matched_nfe") if matched_nfe is None else matched_nfe
    out_dir = Path(run_dir) / REPORT_SUBDIR if out_dir is None else Path(out_dir)
    check_report_out(Path(run_dir), out_dir)
    check_replaceable(out_dir)
    boards = build_leaderboards(run, primary, reference=reference)
    banner = run.completeness.banner() if run.completeness is not None else None
    refused: list[str] = []
    with staged_report(out_dir) as stage:
        from .tables import machine_line

        write_tables(boards, run.experiment, stage, matched_nfe, banner, run.meta.get("config"), machine_line(run.meta))
        figs, notes = make_figures(run, boards, stage / "figures", image_ids, zoom=zoom, refused=refused)
        write_html(run, boards, figs, notes + warnings, stage / "index.html", matched_nfe, banner)
    for line in ([banner] if banner else []) + warnings + refused:
        sys.stderr.write(f"invbench: warning: {terminal(line)}\n")
    return out_dir
