"""Figures (bench/report/figures.py, figgrid.py, cd.py) of the fixed small run of ``fixture_report``:
every kind at both column widths with units and no empty panel (read back through the report's
``figures/figures.json``); measured page sizes, text sizes and text overlaps (renderer bounding
boxes); markers and colours; the log-axis and outside-cell rules; the zoom insets; the
critical-difference figure; and the rendered pixels against committed baselines.

Refresh the baselines after a deliberate change of the figures (then look at them):

    .venv/bin/python -m tests.bench.test_figures --update-baselines
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers.report_fixture import HOSTILE, CellSpec, default_cells, make_run

BASELINES = Path(__file__).parent / "figure_baselines"
# The baseline figures: one of each kind at single-column width, from the fixture report.
BASELINE_KINDS = ("delta", "pareto", "bars", "grid", "nfe", "memory", "dist_to_map")
# RMS difference allowed, in 8-bit grey levels (matplotlib.testing.compare). Agg draws with
# doubles and the fixture's numbers are seeded, so identical software renders identical pixels;
# the tolerance absorbs anti-aliasing differences only. A changed colour, marker, tick or label
# moves the RMS by several levels (checked in test_baseline_check_catches_a_changed_figure).
RMS_TOL = 1.0
ZOOM = (0.1, 0.1, 0.25)


def _pdf_size_in(pdf: Path) -> tuple[float, float]:
    box = re.search(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", pdf.read_bytes())
    x0, y0, x1, y1 = (float(box.group(k)) for k in range(1, 5))
    return (x1 - x0) / 72.0, (y1 - y0) / 72.0


def _render(out: Path, widths: tuple[float, ...], zoom=None, only_board: tuple[str, str] | None = None):
    """Figures of the fixture run; ``only_board`` (dataset, task) restricts them to one board."""
    from invbench.bench.report import build_leaderboards, load_run
    from invbench.bench.report.figures import make_figures

    run_dir = make_run(out / "run", default_cells(HOSTILE))
    run = load_run(run_dir)
    boards = [b for b in build_leaderboards(run) if only_board is None or (b.dataset, b.task) == only_board]
    recs, _notes = make_figures(run, boards, out / "figures", widths=widths, zoom=zoom)
    return recs


def _baseline_set(recs) -> dict[str, Path]:
    """kind -> the PNG of its first board (sorted by file name), one per kind."""
    out: dict[str, Path] = {}
    for r in sorted(recs, key=lambda r: r.png.name):
        if r.kind in BASELINE_KINDS and r.kind not in out:
            out[r.kind] = r.png
    return out


@pytest.fixture(scope="module")
def fixture_figures(fixture_report):
    from invbench.bench.report.figures import read_manifest

    _, out = fixture_report
    return read_manifest(out / "figures")


def _col1(recs):
    from invbench.bench.report.figures import SINGLE_COLUMN_IN

    return [r for r in recs if r.width_in == SINGLE_COLUMN_IN]


@pytest.mark.parametrize("width", ["double", "single"])
def test_every_figure_kind_at_its_width_with_units_and_no_empty_panel(width, fixture_figures):
    """What a reviewer checks: every figure kind exists at double (6.8 in) and single (3.3 in)
    column width; fonts are embedded TrueType; every data axis names its unit; no panel is empty.
    The manifest lists every file."""
    from invbench.bench.report.figures import DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN

    w = DOUBLE_COLUMN_IN if width == "double" else SINGLE_COLUMN_IN
    recs = [r for r in fixture_figures if r.width_in == w]
    folder = fixture_figures[0].png.parent
    assert {p.name for p in folder.glob("*.png")} == {r.png.name for r in fixture_figures}
    kinds = {r.kind for r in recs}
    assert {"delta", "pareto", "bars", "grid", "nfe", "memory", "dist_to_map"} <= kinds
    assert all(r.png.stem.endswith("__col1") == (width == "single") for r in recs)
    for r in recs:
        data = r.pdf.read_bytes()
        assert b"/FontFile2" in data, f"{r.pdf.name}: fonts not embedded as TrueType"
        if r.kind in ("grid", "cd"):
            continue                               # images / rank axis: no data units
        for xl, yl in r.axis_labels:
            units = [lab for lab in (xl, yl) if "[" in lab and "]" in lab]
            assert units, (r.pdf.name, xl, yl)     # at least one axis states its unit
        a = np.asarray(Image.open(r.png).convert("L"), float)
        for band in np.array_split(a, 2, axis=1):  # no half of the figure is blank (empty panel)
            assert band.std() > 3, r.png.name


def test_pdf_pages_have_fixed_measured_sizes(fixture_figures):
    """Every single-column PDF is at most 3.35 in wide and 4.5 in tall, every double-column PDF at
    most 6.9 in wide, and each page is exactly the size the figure was drawn at (no tight box
    growing or shrinking it); the PNGs have the same size at 200 dpi."""
    from invbench.bench.report.figures import SINGLE_COLUMN_IN

    assert fixture_figures
    for r in fixture_figures:
        w, h = _pdf_size_in(r.pdf)
        if r.width_in == SINGLE_COLUMN_IN:
            assert r.pdf.stem.endswith("__col1") and w <= 3.35 and h <= 4.5, (r.pdf.name, w, h)
        else:
            assert w <= 6.9, (r.pdf.name, w, h)
        assert abs(w - r.width_in) < 0.01 and abs(h - r.height_in) < 0.01, (r.pdf.name, w, h, r.height_in)
        with Image.open(r.png) as im:
            assert abs(im.size[0] / 200 - w) < 0.02 and abs(im.size[1] / 200 - h) < 0.02, (r.png.name, im.size)


def _measure(widths, zoom=ZOOM, cells=None, reference="dps"):
    """Every figure of the fixture run drawn (not written) at ``widths``: {stem: problems}."""
    import tempfile

    from invbench.bench.report import build_leaderboards, load_run
    from invbench.bench.report.figures import check_text, make_figures

    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as d:
        run = load_run(make_run(Path(d) / "run", cells or default_cells(HOSTILE)))
        boards = build_leaderboards(run, reference=reference)
        make_figures(run, boards, Path(d) / "figures", zoom=zoom, widths=widths, formats=(),
                     inspect=lambda fig, stem: found.__setitem__(stem, check_text(fig)))
    return found


@pytest.fixture(scope="module")
def measured():
    from invbench.bench.report.figures import DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN

    return _measure((DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN))


def test_text_is_6_pt_or_more_inside_the_page_and_never_overlaps(measured):
    """Measured in the renderer, on every figure of the fixture run (hostile solver names, zoom
    insets) at both widths: no text under 6 pt, no text box leaving the page, no two text boxes
    overlapping (titles, tick labels, legends, outside-cell values)."""
    assert len(measured) >= 20
    assert {k: v for k, v in measured.items() if v} == {}


def test_the_text_measurement_finds_overlaps_small_text_and_text_off_the_page():
    import matplotlib.pyplot as plt
    from invbench.bench.report.figures import check_text

    fig = plt.figure(figsize=(2, 1))
    fig.text(0.1, 0.5, "overlapping", fontsize=8)
    fig.text(0.15, 0.5, "texts here", fontsize=8)
    fig.text(0.1, 0.1, "tiny", fontsize=5)
    fig.text(0.9, 0.9, "off the page", fontsize=8)
    problems = check_text(fig)
    plt.close(fig)
    assert any("overlap" in p and "overlapping" in p for p in problems)
    assert any("5 pt" in p for p in problems) and any("outside the page" in p for p in problems)


def test_manifest_records_one_distinct_marker_and_colour_per_solver(fixture_figures):
    """figures.json: every solver of the run with its display name, colour and marker; no two
    solvers share a marker; oracles are grey and hollow."""
    import matplotlib.colors as mcolors

    doc = json.loads((fixture_figures[0].png.parent / "figures.json").read_text())
    solvers = doc["solvers"]
    assert set(solvers) == {"vml_map", "oracle_map", *HOSTILE.values()}
    markers = [s["marker"] for s in solvers.values()]
    assert len(set(markers)) == len(markers)
    assert solvers["vml_map"]["name"] == "VML-MAP" and solvers["oracle_map"]["name"] == "Exact MAP"
    r, g, b = mcolors.to_rgb(solvers["oracle_map"]["color"])
    assert r == g == b and solvers["oracle_map"]["fill"] == "none"
    assert all(not s["oracle"] and s["fill"] == "full" for n, s in solvers.items() if n != "oracle_map")


# ----------------------------------------------------------------------------- value axes


def test_log_axis_rule_and_far_cells_at_the_edge():
    """A non-negative metric spanning more than two decades gets a log axis, at most two a linear
    one; a metric that can be negative never does; one value far outside the others (a failing
    solver's MSE of 19.3 beside 0.002-0.008) is left out of the range and reported as outside."""
    from invbench.bench.report.figaxes import fit

    assert fit([1e-4, 1e-3, 1e-2, 1e-1], metric="mse").log
    assert not fit([1e-3, 3e-3, 1e-2, 5e-2], metric="mse").log
    assert not fit([-30.0, 1.0, 100.0, 3000.0], metric="psnr").log
    f = fit([0.002, 0.004, 0.008, 0.003, 19.3], metric="mse")
    assert f.outside == [4] and not f.log and f.hi < 0.02
    f = fit([24.1, 22.3, 26.0, 23.2, 25.4, -12.9], metric="psnr")
    assert f.outside == [5] and f.lo > 15
    spread = [10.0 ** k for k in range(-4, 5)]                      # evenly over 8 decades: none outside
    assert fit(spread, metric="mse").outside == [] and fit(spread, metric="mse").log


def _failing_run(tmp: Path, psnr_failing: float = -12.86):
    """The fixture's inpainting board plus a RED-diff cell whose MSE is about 19.3."""
    cells = [c for c in default_cells() if c.task == "inpaint_box"]
    cells.append(CellSpec("reddiff", "default", "inpaint_box", "tiny", "small-cpu", psnr_failing, 0.4, 50, 0))
    from invbench.bench.report import build_leaderboards, load_run

    run = load_run(make_run(tmp / "run", cells))
    return run, build_leaderboards(run)[0]


def _draw_bars(b, width) -> tuple[dict, list[str]]:
    """The ``bars`` figures of board ``b`` drawn (not written): ({metric word of the x label:
    (x limits, x scale)}, every text drawn)."""
    import matplotlib.pyplot as plt
    from invbench.bench.report import figures
    from invbench.bench.report.figcheck import drawn_texts
    from invbench.bench.report.style import RC, Palette

    axes: dict = {}
    texts: list[str] = []

    def look(fig, stem):
        texts.extend(t.text for t in drawn_texts(fig))
        axes.update({ax.get_xlabel().split()[0]: (ax.get_xlim(), ax.get_xscale()) for ax in fig.axes
                     if ax.get_xlabel()})

    ctx = figures.Ctx(width, Palette({c.solver for c in b.cells}), Path("."), formats=(), inspect=look)
    with plt.rc_context(RC):
        figures.bars(b, ctx)
    return axes, texts


def test_a_failing_cell_is_marked_at_the_axis_edge_and_squashes_nothing(tmp_path):
    """RED-diff with MSE ≈ 19.3 beside solvers at 0.002-0.01: the MSE and PSNR panels keep the
    others' range, and RED-diff is written at the edge with its value and an arrow."""
    from invbench.bench.report.figures import SINGLE_COLUMN_IN

    _, b = _failing_run(tmp_path)
    mse = next(c for c in b.cells if c.solver == "reddiff").metrics["mse"].mean
    assert 15 < mse < 25
    axes, texts = _draw_bars(b, SINGLE_COLUMN_IN)
    assert axes["MSE"][0][1] < 0.1 and axes["PSNR"][0][0] > 10
    assert f"{mse:.3g} \u25b6" in texts                              # the value, pointing right
    psnr = next(c for c in b.cells if c.solver == "reddiff").metrics["psnr"].mean
    assert f"\u25c0 {psnr:.3g}" in texts                             # and pointing left on PSNR


def test_a_metric_over_three_decades_is_drawn_on_a_log_axis(tmp_path):
    from invbench.bench.report.figures import SINGLE_COLUMN_IN

    cells = [CellSpec(s, "default", "inpaint_box", "tiny", "small-cpu", p, 1.0, 50, 0)
             for s, p in (("dps", 10.0), ("ddrm", 20.0), ("vml_map", 30.0), ("pigdm", 40.0))]
    from invbench.bench.report import build_leaderboards, load_run

    b = build_leaderboards(load_run(make_run(tmp_path / "run", cells)))[0]
    axes, _ = _draw_bars(b, SINGLE_COLUMN_IN)
    assert axes["MSE"][1] == "log" and axes["PSNR"][1] == "linear"


# ----------------------------------------------------------------------------- grids and zoom


def test_single_column_grid_keeps_the_truth_the_measurement_and_the_chosen_cells(tmp_path):
    """At one column: best, reference and VML-MAP first, at most four cells; at two: all cells."""
    from invbench.bench.report.figgrid import grid_cells

    _, b = _failing_run(tmp_path)
    b.reference = "ddrm"
    ranked = sorted((c for c in b.cells if c.rank is not None), key=lambda c: c.rank)
    chosen = grid_cells(b, single=True)
    named = list(dict.fromkeys([ranked[0].solver, "ddrm", "vml_map"]))     # best, reference, VML-MAP
    assert [c.solver for c in chosen[:len(named)]] == named and chosen[0].key == ranked[0].key
    assert 3 <= len(chosen) <= 4 and len({c.key for c in chosen}) == len(chosen)
    assert len(grid_cells(b, single=False)) == len([c for c in b.cells if c.n_rows])


def test_zoom_inset_is_the_marked_region_magnified_3x_outside_the_image():
    """The inset shows exactly the pixels of the marked rectangle, at 3 × the image's own scale,
    below the image (outside it); a region over a third of the side shows its central third."""
    import matplotlib.pyplot as plt
    from invbench.bench.report.figgrid import effective_zoom, place, zoom_inset
    from matplotlib.image import AxesImage
    from matplotlib.patches import Rectangle

    img = np.random.default_rng(0).random((20, 30, 3))
    for zoom, (x0, y0) in (((0.1, 0.2, 0.3), (3, 4)), ((0.6, 0.5, 0.25), (18, 10))):
        fig = plt.figure(figsize=(3, 3))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, 3)
        ax.set_ylim(0, 3)
        box = place(ax, img, 0.5, 2.8, 1.2)
        zl, zr, zb, zt = zoom_inset(ax, img, zoom, box, below_in=0.15)
        shown = [a for a in ax.images if isinstance(a, AxesImage)][-1]
        sh, sw = round(zoom[2] * 20), round(zoom[2] * 30)
        np.testing.assert_array_equal(np.asarray(shown.get_array()), img[y0:y0 + sh, x0:x0 + sw])
        left, bottom, _, ih, px = box
        assert np.isclose(zr - zl, 3 * sw * px) and np.isclose(zt - zb, 3 * sh * px)      # 3x
        assert zt <= bottom - 0.15 + 1e-9                                                  # outside, below
        rect = next(p for p in ax.patches if isinstance(p, Rectangle))
        assert np.isclose(rect.get_x(), left + x0 * px) and np.isclose(rect.get_width(), sw * px)
        assert np.isclose(rect.get_y() + rect.get_height(), bottom + ih - y0 * px)       # top edge at row y0
        plt.close(fig)
    assert effective_zoom((0.0, 0.0, 0.6)) == pytest.approx((0.6 / 2 - 1 / 6, 0.6 / 2 - 1 / 6, 1 / 3))


# ----------------------------------------------------------------------------- critical difference


def _cd_boards(effect: float, n_boards: int = 3, n_img: int = 8, seed: int = 0):
    """Boards of four solvers whose image means differ by ``effect`` dB per solver (plus noise)
    and an oracle (excluded from the ranking)."""
    rng = np.random.default_rng(seed)
    boards = []
    for k in range(n_boards):
        idx = [f"i{j}" for j in range(n_img)]
        means = {s: pd.Series(25 - effect * r + rng.normal(0, 1, n_img), index=idx) for r, s in enumerate("abcd")}
        order = sorted(means, key=lambda s: -means[s].mean())
        cells = [SimpleNamespace(solver=s, preset="default", key=(s, "default", f"t{k}", "d", "p"),
                                 rank=order.index(s) + 1) for s in "abcd"]
        cells.append(SimpleNamespace(solver="oracle_mean", preset="default", key=("oracle_mean",), rank=None))
        boards.append(SimpleNamespace(primary="psnr", cells=cells,
                                      image_means={c.key: means[c.solver] for c in cells if c.rank is not None}))
    return boards


def _cd_drawn(boards):
    """(result, clique bars drawn, texts drawn) of the critical-difference figure of ``boards``."""
    import matplotlib.pyplot as plt
    from invbench.bench.report import cd, figures
    from invbench.bench.report.figcheck import drawn_texts
    from invbench.bench.report.style import RC, Palette

    seen = {}

    def look(fig, stem):
        seen["bars"] = sum(1 for ax in fig.axes for ln in ax.lines if ln.get_gid() == cd.CLIQUE_GID)
        seen["texts"] = " ".join(t.text for t in drawn_texts(fig))
        seen["problems"] = figures.check_text(fig)

    ctx = figures.Ctx(figures.SINGLE_COLUMN_IN, Palette("abcd"), Path("."), formats=(), inspect=look)
    with plt.rc_context(RC):
        rec = cd.cd_figure(boards, ctx)
    assert rec is not None and seen["problems"] == []
    return cd.critical_difference(boards), seen["bars"], seen["texts"]


def test_cd_draws_no_cliques_when_friedman_does_not_reject():
    """Image-level blocks (3 boards × 8 images = 24), oracles excluded: with no real difference
    Friedman does not reject and no bar is drawn, the title says so; with large differences it
    rejects and each clique is one bar."""
    res, bars, texts = _cd_drawn(_cd_boards(effect=0.0))
    assert res.n_blocks == 24 and set(res.methods) == set("abcd") and res.friedman_p >= 0.05
    assert not res.rejects and res.cliques == [] and bars == 0
    assert "not significant" in texts and "24 image blocks" in texts and "Friedman" in texts
    res, bars, texts = _cd_drawn(_cd_boards(effect=0.8))
    assert res.rejects and res.friedman_p < 0.05 and res.methods[0] == "a"
    assert bars == len(res.cliques) and "CD = " in texts


def test_figures_drawn_in_parallel_are_the_figures_drawn_here(tmp_path):
    """Forked workers write the same files (PNG bytes) and records as drawing in this process."""
    from invbench.bench.report import build_leaderboards, load_run
    from invbench.bench.report.figures import SINGLE_COLUMN_IN, make_figures

    run = load_run(make_run(tmp_path / "run", [c for c in default_cells() if c.dataset == "gmm8"]))
    boards = build_leaderboards(run)
    one, _ = make_figures(run, boards, tmp_path / "one", widths=(SINGLE_COLUMN_IN,), workers=1)
    two, _ = make_figures(run, boards, tmp_path / "two", widths=(SINGLE_COLUMN_IN,), workers=2)
    assert [(r.kind, r.png.name, r.caption) for r in one] == [(r.kind, r.png.name, r.caption) for r in two]
    for a, b in zip(one, two, strict=True):
        assert a.png.read_bytes() == b.png.read_bytes(), a.png.name


def test_zoom_is_validated_with_the_field_named():
    from invbench.bench.config import ConfigError, check_zoom

    assert check_zoom([0, 0.5, 0.5], "report.zoom") == (0.0, 0.5, 0.5)
    for bad in ([0.8, 0, 0.3], [0, 0, 0], [0, 0], ["a", 0, 0.1], [0, -0.1, 0.2]):
        with pytest.raises(ConfigError, match=r"^report\.zoom: "):
            check_zoom(bad, "report.zoom")


def _compare(expected: Path, actual: Path) -> dict | None:
    """None when the images match within RMS_TOL; else the difference (a page of another size
    differs by an infinite RMS)."""
    from matplotlib.testing.compare import compare_images
    from matplotlib.testing.exceptions import ImageComparisonFailure

    try:
        return compare_images(str(expected), str(actual), RMS_TOL, in_decorator=True)
    except ImageComparisonFailure as e:        # raised for images of different sizes
        return {"rms": float("inf"), "reason": str(e)}


def _meta() -> dict:
    return json.loads((BASELINES / "meta.json").read_text())


def _require_same_matplotlib():
    made_with = _meta()["matplotlib"]
    if made_with != matplotlib.__version__:
        pytest.skip(f"figure baselines were rendered with matplotlib {made_with}, this is {matplotlib.__version__}: "
                    "refresh with `python -m tests.bench.test_figures --update-baselines` and look at them")


def test_figures_match_pixel_baselines(fixture_figures):
    _require_same_matplotlib()
    got = _baseline_set(_col1(fixture_figures))
    assert set(got) == set(BASELINE_KINDS)
    for kind, png in got.items():
        base = BASELINES / f"{kind}.png"
        assert base.exists(), f"{base} missing"
        res = _compare(base, png)
        assert res is None, f"{kind}: RMS {res['rms']:.2f} > {RMS_TOL} grey levels against {base.name}"


def test_baseline_check_catches_a_changed_figure(fixture_figures, tmp_path):
    """The tolerance is not so loose that a visible change passes: one solver's colour changed in
    the Pareto plot, or the grid drawn with a zoomed inset, fails the comparison."""
    _require_same_matplotlib()
    from invbench.bench.report import figures, style

    base = _baseline_set(_col1(fixture_figures))
    board = tuple(base["pareto"].stem.split("__")[1:3])           # the board the baselines show
    orig = style.Palette.color
    try:
        style.Palette.color = lambda self, solver: "#000000" if "vml" in solver else orig(self, solver)
        recs = _render(tmp_path, (figures.SINGLE_COLUMN_IN,), zoom=(0.0, 0.5, 0.4), only_board=board)
    finally:
        style.Palette.color = orig
    got = _baseline_set(recs)
    for kind in ("pareto", "grid"):
        res = _compare(BASELINES / f"{kind}.png", got[kind])
        assert res is not None, f"{kind}: a changed figure passed the baseline check"


def _update_baselines() -> None:
    import shutil
    import tempfile

    from invbench.bench.report.figures import SINGLE_COLUMN_IN

    BASELINES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        recs = _render(Path(d), (SINGLE_COLUMN_IN,))
        for kind, png in _baseline_set(recs).items():
            shutil.copyfile(png, BASELINES / f"{kind}.png")
    (BASELINES / "meta.json").write_text(json.dumps(
        {"matplotlib": matplotlib.__version__, "kinds": list(BASELINE_KINDS),
         "width": "single column (3.3 in)", "fixture": "tests/helpers/report_fixture.py default_cells(HOSTILE)"},
        indent=1) + "\n")
    print(f"wrote {len(BASELINE_KINDS)} baselines to {BASELINES}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update-baselines"]:
        sys.exit("usage: python -m tests.bench.test_figures --update-baselines")
    _update_baselines()
