"""Leaderboards at matched cost: each solver's primary metric at a given cost per image, so that
"better" is read at equal cost.

Cost is counted in *forward-equivalents*: network evaluations plus vector–Jacobian products
through the network (NFE + VJP per image), so DPS at 100 NFE + 100 VJP (200) is not matched with
DiffPIR at 100 NFE (100). A VJP costs about one to two forward passes on the hardware we measured;
counting it as one is the lower bound, stated wherever the number is printed.
A solver is *at* a budget T when one of its cells has a mean cost per image within ±10% of T; with
several such cells (presets), its best-ranked one stands for it. Targets come from ``[report]
matched_nfe`` / ``--matched-nfe`` (in forward-equivalents); by default, every cost (rounded) at
which at least two solvers of a leaderboard ran. Oracles are not matched (they are references).
"""

from __future__ import annotations

import math

from . import escape
from .stats import DECIMALS, direction, fmt_number
from .summary import CellSummary, Leaderboard
from .tables import DISPLAY

REL_TOL = 0.10   # a cell is at budget T when |cost - T| <= 10% of T


def cost(c: CellSummary) -> float:
    """Forward-equivalents per image: NFE + VJP (a missing VJP count is 0)."""
    return c.nfe + (c.vjp if math.isfinite(c.vjp) else 0.0)


def at_budget(b: Leaderboard, target: float) -> dict[str, CellSummary]:
    """solver -> its best-ranked cell of ``b`` whose NFE per image is within :data:`REL_TOL` of
    ``target`` and which has the primary metric."""
    out: dict[str, CellSummary] = {}
    for c in b.cells:
        if c.is_oracle or not (math.isfinite(c.nfe) and abs(cost(c) - target) <= REL_TOL * target
                                and b.primary in c.metrics):
            continue
        cur = out.get(c.solver)
        if cur is None or (c.rank or 10**9) < (cur.rank or 10**9):
            out[c.solver] = c
    return out


def default_targets(b: Leaderboard) -> list[float]:
    """Costs (forward-equivalents, rounded to integers) at which at least two solvers of ``b`` ran."""
    by: dict[int, set[str]] = {}
    for c in b.cells:
        if not c.is_oracle and math.isfinite(c.nfe) and cost(c) > 0 and b.primary in c.metrics:
            by.setdefault(round(cost(c)), set()).add(c.solver)
    return sorted(float(t) for t, s in by.items() if len(s) >= 2)


def _best(cells: list[CellSummary], primary: str) -> CellSummary | None:
    d = direction(primary) or 1
    scored = [c for c in cells if math.isfinite(c.metrics[primary].mean)]
    return max(scored, key=lambda c: d * c.metrics[primary].mean) if scored else None


def matched_table(b: Leaderboard, targets: list[float] | None = None) -> tuple[list[float], list[list[str]]] | None:
    """(targets, rows) of one leaderboard: rows ``[solver, value at T1, value at T2, …]`` where a
    value is ``mean [low, high] (preset)`` with ``**`` around the best mean of its column, ``—``
    where the solver has no cell at that budget. None when no target has two solvers."""
    ts = [float(t) for t in targets] if targets else default_targets(b)
    cols = [at_budget(b, t) for t in ts]
    keep = [i for i, col in enumerate(cols) if len(col) >= 2]
    if not keep:
        return None
    ts, cols = [ts[i] for i in keep], [cols[i] for i in keep]
    best = [_best(list(col.values()), b.primary) for col in cols]
    solvers = sorted({s for col in cols for s in col})
    nd = DECIMALS.get(b.primary, 3)
    rows = []
    for s in solvers:
        row = [s]
        for col, top in zip(cols, best, strict=True):
            c = col.get(s)
            if c is None:
                row.append("—")
                continue
            m = c.metrics[b.primary]
            text = f"{fmt_number(m.mean, nd)} [{fmt_number(m.low, nd)}, {fmt_number(m.high, nd)}] ({c.preset})"
            row.append(f"**{text}**" if c is top else text)
        rows.append(row)
    return ts, rows


def tables(boards: list[Leaderboard], targets: list[float] | None = None):
    """``(board, budgets, rows)`` of every leaderboard with a matched-cost table (:func:`matched_table`)."""
    for b in boards:
        t = matched_table(b, targets)
        if t is not None:
            yield b, t[0], t[1]


def to_markdown(boards: list[Leaderboard], targets: list[float] | None = None) -> str:
    """The "At matched cost" section of leaderboard.md ('' when no leaderboard has two solvers at
    one budget)."""
    from tabulate import tabulate

    parts = []
    for b, ts, rows in tables(boards, targets):
        head = ["solver"] + [f"NFE+VJP ≈ {t:g}" for t in ts]
        esc = [[escape.markdown(v) if not v.startswith("**") else "**" + escape.markdown(v[2:-2]) + "**" for v in r]
               for r in rows]
        parts += [f"### {escape.markdown(b.dataset)} · {escape.markdown(b.task)}", "",
                  tabulate(esc, headers=head, tablefmt="github", disable_numparse=True), ""]
    if not parts:
        return ""
    metric = {DISPLAY.get(b.primary, b.primary) for b in boards}
    return "\n".join(["## At matched cost", "",
                      (f"{', '.join(sorted(metric))} (mean [95% interval], preset) of each solver's best-ranked "
                      "cell whose forward-equivalents per image (network evaluations + VJPs through the network, a "
                      f"VJP counted as one) are within ±{REL_TOL:.0%} of the column's budget; bold: the "
                      "best mean of the column (no test); —: not run at that budget. The quality-vs-NFE figures "
                      "show the whole curves."), ""] + parts)


def records(boards: list[Leaderboard], targets: list[float] | None = None) -> list[dict]:
    """Rows of ``leaderboard_matched_nfe.csv``: one per (dataset, task, budget, solver) present."""
    out = []
    for b in boards:
        ts = [float(t) for t in targets] if targets else default_targets(b)
        for t in ts:
            col = at_budget(b, t)
            if len(col) < 2:
                continue
            for s, c in sorted(col.items()):
                m = c.metrics[b.primary]
                out.append({"dataset": b.dataset, "task": b.task, "nfe_target": t, "solver": s, "preset": c.preset,
                            "nfe_mean": c.nfe, "vjp_mean": c.vjp, "cost_fe": cost(c), "metric": b.primary,
                            "mean": m.mean, "ci_low": m.low,
                            "ci_high": m.high, "n": m.n})
    return out
