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
