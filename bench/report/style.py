"""One paper style and one colour per solver for every figure of every report.

Colours come from the Okabe–Ito colour-blind-safe palette (Okabe & Ito 2008, "Color Universal
Design"), extended by seaborn's ``colorblind`` palette when a run has more solvers. The known
solvers have fixed colours so figures of different runs agree; other solver names get the
remaining colours in sorted order. Presets of one solver share its colour and differ by marker.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
FIXED = {"vml_map": "#0072B2", "dps": "#D55E00", "ddrm": "#009E73", "pigdm": "#CC79A7",
         "oracle_map": "#000000", "oracle_mean": "#E69F00", "oracle_sample": "#56B4E9",
         # the second-round solvers keep the muted colours they were first drawn with
         "daps": "#332288", "diffpir": "#117733", "reddiff": "#882255"}
# Paul Tol's "muted" qualitative scheme (colour-blind safe), distinct from the fixed colours above
TOL_MUTED = ["#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#88CCEE", "#CC6677", "#DDCC77"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 5,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,   # TrueType in PDFs (editable text, accepted by publishers)
    "ps.fonttype": 42,
    "text.usetex": False,
    "axes.unicode_minus": False,
}


class Palette:
    """Solver -> colour and (solver, preset) -> marker, fixed for the whole report. Colours come
    from the solver registry (Okabe–Ito for the original solvers, then Paul Tol's muted scheme; both
    colour-blind safe), so a
    solver has the same colour in every report, new solvers included. Solvers registered at run time
    (plugins, tests) and names outside the registry take the next spare colours, in sorted order of
    the ones present."""

    def __init__(self, solvers, presets_by_solver: dict[str, list[str]] | None = None):
        spare = [c for c in TOL_MUTED if c not in FIXED.values()]
        from invbench import solvers as registry

        # every registered solver has its colour whatever the run holds (stable across reports);
        # names outside the registry (e.g. test-only solvers) follow in sorted order
        known = sorted(registry.NAMES)   # the package's own solvers: not those registered later (tests,
        #                                  plugins), so one report's colours never depend on what else ran
        extra = sorted(set(map(str, solvers)) - set(known))
        self.colors: dict[str, str] = {}
        i = 0
        for s in known + extra:
            if s in FIXED:
                self.colors[s] = FIXED[s]
            else:
                self.colors[s] = spare[i % len(spare)]
                i += 1
        self.markers: dict[tuple[str, str], str] = {}
        for s, ps in (presets_by_solver or {}).items():
            ordered = sorted(ps, key=lambda p: (p != "default", p))
            for j, p in enumerate(ordered):
                self.markers[(s, p)] = MARKERS[j % len(MARKERS)]

    def color(self, solver: str) -> str:
        return self.colors.get(str(solver), "#777777")

    def marker(self, solver: str, preset: str) -> str:
        return self.markers.get((str(solver), str(preset)), "o")
