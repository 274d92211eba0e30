"""Report colours: one per solver of the package, stable across reports, distinct, and not moved
by solvers registered at run time (plugins, the test suite's own)."""

from __future__ import annotations

from invbench.bench.report.style import Palette

from invbench import solvers
from tests.helpers import parts


def test_every_registered_solver_has_its_own_colour_whatever_the_run_holds():
    names = sorted(solvers.NAMES)
    full = Palette(names)
    assert len({full.color(n) for n in names}) == len(names)           # distinct
    for n in names:                                                    # a run with one solver
        assert Palette([n]).color(n) == full.color(n)
    assert Palette(["_unregistered"]).color("_unregistered") not in {full.color(n) for n in names}


def test_solvers_registered_later_move_no_colour():
    """The test suite registers ``_test_*`` solvers in some processes and not others; a report's
    colours must be the same either way (they were not, and a figure baseline caught it)."""
    before = Palette(solvers.NAMES).colors
    parts.register()
    assert set(solvers.names()) > set(solvers.NAMES)
    after = Palette(sorted(solvers.names()))
    assert {n: after.color(n) for n in solvers.NAMES} == before


# Machado, Oliveira & Fernandes (2009), severity 1.0, applied to linear RGB
CVD = {"deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                        [-0.011820, 0.042940, 0.968881]],
       "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                      [-0.003882, -0.048116, 1.051998]]}


def _lab(hex_color: str, matrix=None):
    """CIELAB (D65) of a colour, seen through ``matrix`` (a colour-vision simulation) if given."""
    import matplotlib.colors as mcolors
    import numpy as np

    c = np.array(mcolors.to_rgb(hex_color))
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    if matrix is not None:
        lin = np.clip(np.array(matrix) @ lin, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_solver_colours_stay_apart_under_colour_blindness():
    """Any two of the package's solvers differ by ΔE ≥ 15 (CIELAB) in normal vision and under
    simulated deuteranopia and protanopia; ΠGDM and LMAPS were 4 apart under deuteranopia."""
    import itertools

    import numpy as np

    pal = Palette(solvers.NAMES)
    names = [n for n in sorted(solvers.NAMES) if not n.startswith("oracle")]
    for view, matrix in [("normal", None), *CVD.items()]:
        for a, b in itertools.combinations(names, 2):
            d = float(np.linalg.norm(_lab(pal.color(a), matrix) - _lab(pal.color(b), matrix)))
            assert d >= 15, (view, a, b, round(d, 1))


def test_every_series_has_its_own_marker_and_oracles_are_grey_and_hollow():
    """One marker shape per solver or oracle, also with names outside the registry; oracles are
    grey (equal RGB) and drawn hollow."""
    import matplotlib.colors as mcolors

    names = sorted(solvers.NAMES) + ["_mine", "oracle_custom", "zz_other"]
    pal = Palette(names)
    markers = [pal.marker(n) for n in names]
    assert len(set(markers)) == len(markers)
    for n in names:
        kw = pal.kw(n)
        if n.startswith("oracle"):
            r, g, b = mcolors.to_rgb(pal.color(n))
            assert r == g == b and kw["markerfacecolor"] == "white"
        else:
            assert kw["fillstyle"] == "full" and "markerfacecolor" not in kw
