"""One paper style, and one colour and one marker shape per solver, for every figure of every report.

Solvers (the package's own) have fixed colours and markers so that figures of different runs
agree. The eight solver colours are Okabe–Ito's (Okabe & Ito 2008, "Color Universal Design")
blue, vermillion, green, reddish purple, orange and sky blue with Paul Tol's indigo and wine:
chosen so that every pair stays apart (CIELAB ΔE ≥ 15) also under simulated deuteranopia and
protanopia (Machado et al. 2009; checked in tests/bench/test_style.py). Colour is never the only
cue: each solver also has its own marker shape. Oracles (exact references) are greys with hollow
markers. Names outside the registry (a user's solver) take the spare colours and markers in
sorted order; presets of one solver drawn together (in one board) share its colour and marker and
differ by the marker's fill (full, left half, bottom half, ...).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from .names import solver_name

# solver -> (colour, marker); the package's solvers
SOLVER_STYLE: dict[str, tuple[str, str]] = {
    "vml_map": ("#0072B2", "o"), "dps": ("#D55E00", "s"), "ddrm": ("#009E73", "^"), "pigdm": ("#CC79A7", "D"),
    "daps": ("#332288", "v"), "diffpir": ("#E69F00", "P"), "reddiff": ("#882255", "X"), "lmaps": ("#56B4E9", "*"),
}
# exact references: greys, drawn hollow
ORACLE_STYLE: dict[str, tuple[str, str]] = {
    "oracle_map": ("#000000", "h"), "oracle_mean": ("#555555", "<"), "oracle_sample": ("#8C8C8C", ">"),
}
# Paul Tol's muted scheme, for names outside the registry (never a registered solver's colour)
SPARE_COLORS = ["#117733", "#44AA99", "#999933", "#AA4499", "#CC6677", "#88CCEE", "#DDCC77"]
SPARE_MARKERS = ["p", "d", "H", "8", "1", "2", "3", "4", "+", "x", "|", "_"]
SPARE_GREYS = ["#6E6E6E", "#A0A0A0", "#3C3C3C"]
PRESET_FILLS = ["full", "left", "bottom", "right", "top"]

RC = {
    "font.family": ["DejaVu Sans"],   # :func:`.fonts.use_shared_subset` puts its subset first
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "figure.titlesize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.0,
    "lines.markersize": 4,
    "errorbar.capsize": 1.5,
    "savefig.dpi": 200,
    "savefig.bbox": None,             # fixed page sizes: the figure size is the page size
    "figure.constrained_layout.h_pad": 0.02,
    "figure.constrained_layout.w_pad": 0.02,
    "pdf.fonttype": 42,               # TrueType in PDFs (editable text, accepted by publishers)
    "ps.fonttype": 42,
    "text.usetex": False,
    "axes.unicode_minus": False,
}

MIN_FONT_PT = 6.0   # the smallest text any figure prints (at its print size: figures are not scaled)


def is_oracle(solver: str) -> bool:
    return str(solver).startswith("oracle")


class Palette:
    """Solver -> colour and marker, (solver, preset) -> marker fill, fixed for the whole report.

    The package's solvers and oracles have fixed styles (:data:`SOLVER_STYLE`,
    :data:`ORACLE_STYLE`) whatever the run holds; other names (a user's solver, one registered at
    run time) take the spare colours and markers in sorted order of the names present, so no two
    series of a report share a marker."""

    def __init__(self, solvers, presets_by_solver: dict[str, list[str]] | None = None):
        self.colors: dict[str, str] = {}
        self.markers_by_solver: dict[str, str] = {}
        for s, (c, m) in {**SOLVER_STYLE, **ORACLE_STYLE}.items():
            self.colors[s], self.markers_by_solver[s] = c, m
        extra = sorted(set(map(str, solvers)) - set(self.colors))
        spare_m = [m for m in SPARE_MARKERS if m not in self.markers_by_solver.values()]
        n_solver = n_oracle = 0
        for k, s in enumerate(extra):
            if is_oracle(s):
                self.colors[s] = SPARE_GREYS[n_oracle % len(SPARE_GREYS)]
                n_oracle += 1
            else:
                self.colors[s] = SPARE_COLORS[n_solver % len(SPARE_COLORS)]
                n_solver += 1
            self.markers_by_solver[s] = spare_m[k] if k < len(spare_m) else f"${k}$"   # numbered beyond
        self.fills: dict[tuple[str, str], str] = {}
        self.set_presets(presets_by_solver or {})

    def set_presets(self, presets_by_solver: dict[str, list[str]]) -> None:
        """The marker fills of the presets drawn together (one board): a solver's presets in sorted
        order, ``default`` first, fill its marker fully, by the left half, the bottom half, ...; a
        solver with one preset there is always filled."""
        self.fills = {}
        for s, ps in presets_by_solver.items():
            ordered = sorted(set(map(str, ps)), key=lambda p: (p != "default", p))
            for j, p in enumerate(ordered):
                self.fills[(str(s), p)] = PRESET_FILLS[j % len(PRESET_FILLS)]

    def color(self, solver: str) -> str:
        return self.colors.get(str(solver), "#777777")

    def marker(self, solver: str, preset: str = "default") -> str:
        return self.markers_by_solver.get(str(solver), "o")

    def fill(self, solver: str, preset: str = "default") -> str:
        return self.fills.get((str(solver), str(preset)), "full")

    def kw(self, solver: str, preset: str = "default", size: float = 4.0) -> dict:
        """Keyword arguments of ``plot``/``errorbar`` for one cell's marker: the solver's colour and
        shape, hollow for oracles, the preset's fill otherwise."""
        c = self.color(solver)
        out = {"marker": self.marker(solver, preset), "color": c, "markersize": size, "markeredgecolor": c,
               "markeredgewidth": 0.8}
        if is_oracle(solver):
            out["markerfacecolor"] = "white"
        else:
            out["fillstyle"] = self.fill(solver, preset)
            out["markerfacecoloralt"] = "white"
        return out

    def record(self, solvers) -> dict:
        """``{solver: {name, color, marker, oracle, fill}}`` for ``figures.json`` (``fill``: "none" for the
        hollow oracles, else "full"; a second preset drawn beside the first is half-filled)."""
        return {s: {"name": solver_name(s), "color": self.color(s), "marker": self.marker(s), "oracle": is_oracle(s),
                    "fill": "none" if is_oracle(s) else "full"} for s in sorted(set(map(str, solvers)))}
