"""Paired difference to a reference solver named for the report (``--reference``)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from invbench.bench.report import escape
from invbench.bench.report.data import load_run
from invbench.bench.report.summary import build_leaderboards
from scipy import stats as st


def _pairs(df: pd.DataFrame, c, metric: str) -> pd.Series:
    m = (df["solver"].astype(str) == c.solver) & (df["preset"].astype(str) == c.preset) \
        & (df["task"].astype(str) == c.task) & (df["dataset"].astype(str) == c.dataset) \
        & (df["prior"].astype(str) == c.prior) & (df["status"].astype(str) == "ok")
    rows = df[m]
    s = pd.Series(pd.to_numeric(rows[metric], errors="coerce").to_numpy(float), index=rows["image_id"].astype(str))
    s = s[np.isfinite(s.to_numpy())]
    return s.groupby(level=0).mean()   # the image is the unit: seeds averaged per image


def test_delta_to_reference_matches_scipy(fixture_report):
    run_dir, _out = fixture_report
    run = load_run(run_dir)
    plain = build_leaderboards(run)
    b0 = next(b for b in plain if sum(c.rank is not None for c in b.cells) >= 3)
    ref_solver = [c for c in b0.cells if c.rank is not None][-1].solver   # a non-best solver
    boards = build_leaderboards(run, reference=ref_solver)
    b = next(x for x in boards if (x.dataset, x.task) == (b0.dataset, b0.task))
    assert b.reference == ref_solver
    ref = next(c for c in b.cells if c.solver == ref_solver and c.rank is not None)
    assert ref.delta_ref is None
    checked = 0
    for c in b.cells:
        if c.rank is None or c is ref:
            continue
        a, r = _pairs(run.results, c, b.primary), _pairs(run.results, ref, b.primary)
        keys = a.index.intersection(r.index)
        d = a.loc[keys].to_numpy() - r.loc[keys].to_numpy()
        assert c.delta_ref is not None and c.delta_ref.n == d.size
        assert np.isclose(c.delta_ref.mean, d.mean(), rtol=1e-12, atol=1e-12)
        if d.size > 1 and np.ptp(d) > 0:
            lo, hi = st.t.interval(0.95, d.size - 1, loc=d.mean(), scale=st.sem(d))
            assert np.isclose(c.delta_ref.low, lo, rtol=1e-9) and np.isclose(c.delta_ref.high, hi, rtol=1e-9)
        checked += 1
    assert checked >= 2
    # everything else is unchanged by naming a reference
    assert [(c.key, c.rank, c.is_best, c.tied_with_best) for x in plain for c in x.cells] == \
        [(c.key, c.rank, c.is_best, c.tied_with_best) for x in boards for c in x.cells]


@pytest.mark.slow  # a full report in a subprocess; the numbers are checked by the fast tests above
def test_cli_reference_column_in_every_format(fixture_report, tmp_path):
    run_dir, _ = fixture_report
    b0 = next(b for b in build_leaderboards(load_run(run_dir)) if sum(c.rank is not None for c in b.cells) >= 2)
    ref_solver = [c for c in b0.cells if c.rank is not None][-1].solver
    out = tmp_path / "rep"
    p = subprocess.run([sys.executable, "-m", "invbench.bench.cli", "report", str(run_dir), "--out", str(out),
                        "--reference", ref_solver], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    recs = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    mine = [r for r in recs if (r["dataset"], r["task"]) == (b0.dataset, b0.task)]
    assert all(r["reference"] == ref_solver for r in mine)
    assert any(r["delta_ref_mean"] not in ("", None) for r in mine)
    assert "Δ " + escape.markdown(ref_solver) in (out / "leaderboard.md").read_text()
    assert escape.latex(ref_solver) in (out / "leaderboard.tex").read_text()
    assert "Δ " + escape.html_text(ref_solver) in (out / "index.html").read_text()
    assert "delta_ref_mean" in recs[0]


def test_absent_reference_adds_no_column(fixture_report):
    run_dir, _ = fixture_report
    boards = build_leaderboards(load_run(run_dir), reference="no_such_solver")
    assert all(b.reference is None for b in boards)
    assert all(c.delta_ref is None for b in boards for c in b.cells)

