"""The committed exact-posterior validation table (reports/validation/, `make validation`) is
reproducible: a slice of it is recomputed here and must match the committed rows to float64
round-off (everything is seeded, CPU, float64; the CSVs store floats with full precision)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from invbench.bench.studies import exact_posterior as V

REPORT = Path(__file__).resolve().parents[2] / "reports" / "validation"
SLICE = {"prior": "gmm-digits", "preset": "inpaint_random", "sigma_y": 0.05,
         "solvers": ("vml_map/default", "ddrm")}  # ddrm exercises the 64-sample sets too
RTOL, ATOL = 1e-9, 1e-10


def _close(committed: str, recomputed) -> bool:
    if isinstance(recomputed, str):
        return committed == recomputed
    a, b = float(committed), float(recomputed)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= ATOL + RTOL * abs(a)


@pytest.fixture(scope="module")
def committed():
    table = V.read_csv(REPORT / "table.csv")
    problems = V.read_csv(REPORT / "problems.csv.gz")
    return table, problems


@pytest.fixture(scope="module")
def recomputed():
    torch.set_num_threads(1)
    return V.run_suite(
        V.default_config(), progress=lambda m: None,
        only=lambda p, t, s, lab: p == SLICE["prior"] and t == SLICE["preset"] and s == SLICE["sigma_y"]
        and lab in SLICE["solvers"])


def _key(r) -> tuple:
    return (r["prior"], r["preset"], float(r["sigma_y"]), r["solver"])


def test_slice_matches_committed_table(committed, recomputed):
    table, _ = committed
    _, new_table = recomputed
    assert len(new_table) == len(SLICE["solvers"])
    rows = {_key(r): r for r in table}
    for new in new_table:
        old = rows[_key(new)]
        for col, val in new.items():
            if col in V.TIMING_COLUMNS:
                continue
            assert _close(old[col], val), f"{_key(new)} {col}: committed {old[col]} vs recomputed {val!r}"


def test_slice_matches_committed_problem_rows(committed, recomputed):
    _, problems = committed
    new_problems, _ = recomputed
    old = {(*_key(r), int(r["j"])): r for r in problems}
    assert len(new_problems) == 32 * len(SLICE["solvers"])
    for new in new_problems:
        ref = old[(*_key(new), new["j"])]
        for col in V.PROBLEM_COLUMNS:
            if col in new:
                assert _close(ref[col], new[col] if isinstance(new[col], str) else float(new[col])), \
                    f"{_key(new)} j={new['j']} {col}: committed {ref[col]} vs recomputed {new[col]!r}"


def test_committed_table_covers_the_acceptance_grid(committed):
    """The study's scope (reports/validation/README.md): 4 GMM priors x >= 4 linear presets x all solvers x >= 32 problems, sample-set
    metrics (64+ samples) for the samplers, and the exact oracles behaving as the closed form."""
    table, _ = committed
    main = [r for r in table if float(r["sigma_y"]) == 0.05]
    assert {r["prior"] for r in main} == {"gmm-synthetic-64", "gmm-synthetic-256", "gmm-digits", "gmm-patches"}
    assert len({r["preset"] for r in main}) >= 4
    for prior in {r["prior"] for r in main}:
        for preset in {r["preset"] for r in main}:
            cell = {r["solver"]: r for r in main if r["prior"] == prior and r["preset"] == preset}
            assert {"vml_map/default", "vml_map/plain", "dps", "ddrm", "pigdm", "oracle_map", "oracle_mean",
                    "oracle_sample"} <= set(cell), (prior, preset)
            for r in cell.values():
                assert int(r["n_problems"]) >= 32 and int(r["n_failed"]) == 0
            for s in ("dps", "ddrm", "pigdm", "oracle_sample"):
                assert int(cell[s]["n_samples"]) >= 64 and math.isfinite(float(cell[s]["sw_mean"]))
            # the oracle MAP is the exact global MAP; the oracle mean has zero error to the mean
            assert float(cell["oracle_map"]["frac_global"]) == 1.0
            assert float(cell["oracle_map"]["dist_to_map_mean"]) < 1e-8
            assert float(cell["oracle_mean"]["err_post_mean_mean"]) < 1e-8
