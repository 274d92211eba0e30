"""Report colours: one per registered solver, stable across reports, distinct."""

from __future__ import annotations

from invbench.bench.report.style import Palette

from invbench import solvers


def test_every_registered_solver_has_its_own_colour_whatever_the_run_holds():
    names = sorted(solvers.names())
    full = Palette(names)
    assert len({full.color(n) for n in names}) == len(names)           # distinct
    for n in names:                                                    # a run with one solver
        assert Palette([n]).color(n) == full.color(n)
    assert Palette(["_unregistered"]).color("_unregistered") not in {full.color(n) for n in names}
