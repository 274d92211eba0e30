"""scripts/regression_gate.py, the measurement of the gate's error rates: exact binomial
intervals, the design (a fresh baseline per iteration, 20 pairs per slowdown point), the
quality-drop hook and the resumable logs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from invbench.bench.report.data import RunData

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gate():
    spec = importlib.util.spec_from_file_location("regression_gate", ROOT / "scripts" / "regression_gate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_clopper_pearson_bounds(gate):
    """The bounds the issue's targets are stated in: 0 of 60 -> upper 5.96 %, 0 of 10 -> 30.8 %,
    10 of 10 -> lower 69.2 %."""
    assert gate.clopper_pearson(0, 60)[1] == pytest.approx(0.0596, abs=1e-4)
    assert gate.clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert gate.clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    lo, hi = gate.clopper_pearson(7, 20)
    assert lo < 7 / 20 < hi


def test_design_gives_each_slowdown_point_forty_pairs_and_fresh_seeds(gate, tmp_path):
    counts = {p: 0 for p in gate.POINTS}
    for i in range(60):
        for p in gate.points_of(i):
            counts[p] += 1
    assert set(counts.values()) == {40}
    src = tmp_path / "c.toml"
    src.write_text('name = "x"\nseeds = [0]\n')
    assert "seeds = [1007]" in gate.iteration_config(src, tmp_path / "d.toml", 7).read_text()


def test_quality_drop_hook_lowers_only_the_target_solver(gate):
    rows = pd.DataFrame({"solver": ["ddrm"] * 40 + ["dps"] * 2, "status": ["ok"] * 42,
                         "image_id": [f"i{k}" for k in range(40)] + ["i0", "i1"], "psnr": [20.0] * 42})
    run = RunData(Path("."), rows, pd.DataFrame(), {}, pd.DataFrame())
    exact = gate.with_drop(run, "ddrm", 0.3, 0.0, seed=1).results
    assert np.allclose(exact["psnr"][:40], 19.7) and np.allclose(exact["psnr"][40:], 20.0)
    noisy = gate.with_drop(run, "ddrm", 0.3, 0.25, seed=1).results["psnr"][:40] - 20.0
    assert abs(noisy.mean() + 0.3) < 0.15 and 0.15 < noisy.std() < 0.35
    assert run.results["psnr"].eq(20.0).all()           # the loaded run is not modified


def test_logs_are_resumable(gate, tmp_path):
    log = tmp_path / "runs.jsonl"
    gate._append(log, {"iteration": 0, "scenario": "identical"})
    with log.open("a") as f:
        f.write('{"iteration": 0, "scen')                # a line cut by an interruption
    assert gate._jsonl(log) == [{"iteration": 0, "scenario": "identical"}]
    gate._append(log, {"iteration": 1, "scenario": "hog"})   # the next record on its own line
    assert gate._jsonl(log) == [{"iteration": 0, "scenario": "identical"}, {"iteration": 1, "scenario": "hog"}]
    assert json.loads(log.read_text().splitlines()[0])["scenario"] == "identical"
    assert not gate._complete(tmp_path / "missing-run")
