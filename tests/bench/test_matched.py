"""Leaderboards at matched cost (invbench/bench/report/matched.py): which cell stands for a solver
at a budget, the default budgets, and the tables written by the report."""

from __future__ import annotations

import csv
import io

import pytest
from invbench.bench.report import matched
from invbench.bench.report.data import load_run
from invbench.bench.report.summary import build_leaderboards

from tests.helpers.report_fixture import HOSTILE, CellSpec, make_run


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One leaderboard, cost in forward-equivalents (NFE + VJP): dps and pigdm at 200 (pigdm also
    at 208, within 10%), diffpir at 100 NFE + 0 VJP (alone at 100: not matched with dps), ddrm at
    20, vml_map at 80 and 20 (two presets), daps at 224 (outside 10% of 200)."""
    cells = [CellSpec("dps", "default", "t", "tiny", "p", 24.0, 1.0, 100, 100),
             CellSpec("pigdm", "default", "t", "tiny", "p", 25.0, 0.5, 100, 100),
             CellSpec("pigdm", "long", "t", "tiny", "p", 26.0, 0.5, 104, 104),
             CellSpec("diffpir", "default", "t", "tiny", "p", 23.5, 0.5, 100, 0),
             CellSpec("ddrm", "default", "t", "tiny", "p", 22.0, 0.2, 20, 0),
             CellSpec("vml_map", "default", "t", "tiny", "p", 27.0, 1.0, 50, 30),
             CellSpec("vml_map", "fast", "t", "tiny", "p", 23.0, 0.3, 12, 8),
             CellSpec("daps", "default", "t", "tiny", "p", 28.0, 2.0, 224, 0)]
    run = load_run(make_run(tmp_path_factory.mktemp("m") / "run", cells, write_images=False))
    (b,) = build_leaderboards(run)
    return b


def test_a_solver_at_a_budget_is_its_best_ranked_cell_within_ten_percent(board):
    at200 = matched.at_budget(board, 200)
    assert set(at200) == {"dps", "pigdm"}                      # daps at 224 is outside ±10%
    best_pigdm = min((c for c in board.cells if c.solver == "pigdm"), key=lambda c: c.rank)
    assert at200["pigdm"] is best_pigdm
    assert set(matched.at_budget(board, 20)) == {"ddrm", "vml_map"}
    assert matched.at_budget(board, 20)["vml_map"].preset == "fast"
    # DPS (100 NFE + 100 VJP) is not matched with DiffPIR (100 NFE): VJPs count
    assert set(matched.at_budget(board, 100)) == {"diffpir"}
    assert matched.default_targets(board) == [20.0, 200.0]    # where two solvers ran


def test_table_values_are_the_cells_and_the_best_is_bold(board):
    ts, rows = matched.matched_table(board, [20, 50, 200])
    assert ts == [20.0, 200.0]                               # 50: no solver, no comparison
    by = {r[0]: r[1:] for r in rows}
    assert set(by) == {"ddrm", "vml_map", "dps", "pigdm"}   # daps and diffpir are at no compared budget
    assert by["ddrm"][1] == "—" and by["dps"][0] == "—"
    col = {s: v[1] for s, v in by.items() if v[1] != "—"}
    best = max(matched.at_budget(board, 200).values(), key=lambda c: c.metrics["psnr"].mean)
    assert [s for s, v in col.items() if v.startswith("**")] == [best.solver]
    assert f"({best.preset})" in col[best.solver]
    recs = matched.records([board], [200])
    at200 = matched.at_budget(board, 200)
    assert {(r["solver"], r["preset"]) for r in recs} == {(c.solver, c.preset) for c in at200.values()}
    for r in recs:
        c = at200[r["solver"]]
        assert r["mean"] == c.metrics["psnr"].mean and r["n"] == c.metrics["psnr"].n
        assert r["cost_fe"] == c.nfe + c.vjp


def test_report_writes_the_matched_section(fixture_report):
    _, out = fixture_report
    md = (out / "leaderboard.md").read_text()
    assert "## At matched cost" in md and "NFE+VJP ≈ 200" in md
    recs = list(csv.DictReader(io.StringIO((out / "leaderboard_matched_nfe.csv").read_text())))
    at200 = {r["solver"] for r in recs if float(r["nfe_target"]) == 200}
    assert at200 == {HOSTILE["dps"], HOSTILE["pigdm"]}   # both at 100 NFE + 100 VJP on tiny/inpaint_box
    assert "At matched cost" in (out / "index.html").read_text()
