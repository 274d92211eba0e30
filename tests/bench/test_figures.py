"""Figures (invbench/bench/report/figures.py) of the fixed small run of ``fixture_report``: every
kind at both column widths with units and no empty panel (read back through the report's
``figures/figures.json``), the zoomed inset shows exactly the marked region, and the rendered
pixels match committed baselines within a tolerance.

Refresh the baselines after a deliberate change of the figures (then look at them):

    .venv/bin/python -m tests.bench.test_figures --update-baselines
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from tests.helpers.report_fixture import HOSTILE, default_cells, make_run

BASELINES = Path(__file__).parent / "figure_baselines"
# The baseline figures: one of each kind at single-column width, from the fixture report.
BASELINE_KINDS = ("pareto", "bars", "grid", "nfe", "memory", "dist_to_map")
# RMS difference allowed, in 8-bit grey levels (matplotlib.testing.compare). Agg draws with
# doubles and the fixture's numbers are seeded, so identical software renders identical pixels;
# the tolerance absorbs anti-aliasing differences only. A changed colour, marker, tick or label
# moves the RMS by several levels (checked in test_baseline_check_catches_a_changed_figure).
RMS_TOL = 1.0


def _pdf_width_in(pdf: Path) -> float:
    box = re.search(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", pdf.read_bytes())
    return (float(box.group(3)) - float(box.group(1))) / 72.0


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
    column width, no wider than the column (outside legends may add a little); fonts are embedded
    TrueType; every data axis names its unit; no panel is empty. The manifest lists every file."""
    from invbench.bench.report.figures import DOUBLE_COLUMN_IN, SINGLE_COLUMN_IN

    w = DOUBLE_COLUMN_IN if width == "double" else SINGLE_COLUMN_IN
    recs = [r for r in fixture_figures if r.width_in == w]
    folder = fixture_figures[0].png.parent
    assert {p.name for p in folder.glob("*.png")} == {r.png.name for r in fixture_figures}
    kinds = {r.kind for r in recs}
    assert {"pareto", "bars", "grid", "nfe", "memory", "dist_to_map"} <= kinds
    assert all(r.png.stem.endswith("__col1") == (width == "single") for r in recs)
    for r in recs:
        pw = _pdf_width_in(r.pdf)
        assert 0.3 * r.width_in <= pw <= r.width_in + 1.6, (r.pdf.name, pw)   # tight bbox; legends outside
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


def test_zoom_inset_shows_exactly_the_marked_region():
    """The inset's pixels are the region [y:y+s, x:x+s] of the image, the marked rectangle has
    that size, and the inset sits in the corner away from the region."""
    import matplotlib.pyplot as plt
    from invbench.bench.report.figures import _zoom_inset
    from matplotlib.patches import Rectangle

    img = np.random.default_rng(0).random((20, 30, 3))
    for zoom, (x0, y0, left) in (((0.1, 0.2, 0.3), (3, 4, False)), ((0.6, 0.5, 0.25), (18, 10, True))):
        fig, ax = plt.subplots()
        ax.imshow(img)
        _zoom_inset(ax, img, zoom)
        ins = [a for a in ax.child_axes]
        assert len(ins) == 1
        shown = np.asarray(ins[0].get_images()[0].get_array())
        sh, sw = round(zoom[2] * 20), round(zoom[2] * 30)
        np.testing.assert_array_equal(shown, img[y0:y0 + sh, x0:x0 + sw])
        rect = next(p for p in ax.patches if isinstance(p, Rectangle))
        assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (x0 - 0.5, y0 - 0.5, sw, sh)
        fig.canvas.draw()   # positions are final once drawn
        a, b = ax.get_position(), ins[0].get_position()
        inset_left = (b.x0 - a.x0) / a.width < 0.25            # the inset's corner, in the axes' fraction
        plt.close(fig)
        assert inset_left == left                               # opposite the region's side


def test_zoom_is_validated_with_the_field_named():
    from invbench.bench.config import ConfigError, check_zoom

    assert check_zoom([0, 0.5, 0.5], "report.zoom") == (0.0, 0.5, 0.5)
    for bad in ([0.8, 0, 0.3], [0, 0, 0], [0, 0], ["a", 0, 0.1], [0, -0.1, 0.2]):
        with pytest.raises(ConfigError, match=r"^report\.zoom: "):
            check_zoom(bad, "report.zoom")


def _compare(expected: Path, actual: Path) -> dict | None:
    from matplotlib.testing.compare import compare_images

    return compare_images(str(expected), str(actual), RMS_TOL, in_decorator=True)


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
