"""``invbench compare`` cost verdicts on synthetic calibrated runs: a machine slowed down for both
the solver and its network passes by default (normalised cost) and fails with ``--cost wall``;
extra time in the solver loop or extra network evaluations fail; too few timings are
"not gated" (exit 0, or 3 with --fail-not-gated); output formats and exit codes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from invbench.bench.gate.compare import main
from invbench.bench.gate.verdict import EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION

from tests.helpers.report_fixture import make_run

MACHINE = {"cpu_model": "Test CPU", "cpu_capability": "AVX2", "gpu_name": "", "torch_threads": "2",
           "device": "cpu: Test CPU"}


def calibrate(run_dir: Path, net_share: float = 0.95, meta: dict | None = None) -> Path:
    """Give a fixture run what a current run records: ``net_seconds`` (``net_share`` of each
    row's seconds), ``timings`` (one timed call per row) and meta ``calibration`` + machine."""
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        con.execute("ALTER TABLE results ADD COLUMN net_seconds REAL")
        con.execute("ALTER TABLE results ADD COLUMN timings TEXT")
        con.execute("UPDATE results SET net_seconds = seconds * ? WHERE nfe > 0", (net_share,))
        con.execute("UPDATE results SET net_seconds = 0 WHERE nfe = 0")
        for k, v in {**MACHINE, "calibration": json.dumps({"small-cpu": {"t_forward_s": 0.01}}),
                     **(meta or {})}.items():
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
    con.close()
    sync_timings(run_dir)
    return run_dir


def sync_timings(run_dir: Path) -> None:
    """Rewrite ``timings`` from ``seconds``/``net_seconds`` (after a test changed them)."""
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        rows = con.execute("SELECT row_id, seconds, net_seconds FROM results WHERE status = 'ok'").fetchall()
        for rid, s, n in rows:
            con.execute("UPDATE results SET timings = ? WHERE row_id = ?",
                        (json.dumps({"call": rid[:16], "seconds": [s], "net_seconds": [n]}), rid))
    con.close()


def change(run_dir: Path, sql: str) -> None:
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        con.execute(sql)
    con.close()
    sync_timings(run_dir)


@pytest.fixture(autouse=True)
def twelve_images(monkeypatch):
    """12 images per dataset (x 2 seeds): enough for every cell to be gated (--min-samples 6)."""
    from tests.helpers import report_fixture

    for name, (shape, _) in list(report_fixture.DATASETS.items()):
        monkeypatch.setitem(report_fixture.DATASETS, name, (shape, [f"{name}{k:02d}" for k in range(12)]))


@pytest.fixture()
def runs(tmp_path):
    base = calibrate(make_run(tmp_path / "base", write_images=False))
    new = calibrate(make_run(tmp_path / "new", write_images=False))
    return base, new


def as_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_identical_calibrated_rerun_passes_on_normalised_cost(runs, capsys):
    code, d = as_json(capsys, *map(str, runs))
    assert code == EXIT_OK and d["exit_code"] == 0 and d["cost"] == "normalised" and d["regressed"] == 0
    speed = {c["solver"]: c["speed"] for c in d["cells"] if c["task"] == "inpaint_box" and c["preset"] == "default"}
    assert speed["dps"]["basis"] == "normalised" and speed["dps"]["ratio"] == pytest.approx(1.0)
    oracle = next(c for c in d["cells"] if c["solver"] == "oracle_map")
    assert oracle["speed"]["basis"] == "wall"   # no network time: judged on wall time


def test_loaded_machine_is_not_a_regression_but_wall_time_is(runs, capsys):
    """Another process slows the whole new run 2.5x (solver and network alike)."""
    base, new = runs
    change(new, "UPDATE results SET seconds = seconds * 2.5, net_seconds = net_seconds * 2.5")
    assert main([str(base), str(new)]) == EXIT_OK
    capsys.readouterr()
    code, d = as_json(capsys, str(base), str(new), "--cost", "wall")
    assert code == EXIT_REGRESSION
    flagged = [c for c in d["cells"] if c["verdict"] == "regression"]
    assert flagged and all("slower" in " ".join(c["reasons"]) for c in flagged)
    assert all(c["speed"]["ratio"] == pytest.approx(2.5, rel=0.1) and c["speed"]["n"] >= 6 for c in flagged)


def test_extra_time_in_the_solver_loop_is_a_regression(runs, capsys):
    """+50 % solver time outside the network (an injected delay): the normalised ratio rises."""
    base, new = runs
    change(new, "UPDATE results SET seconds = seconds * 1.5 WHERE solver = 'ddrm'")
    code, d = as_json(capsys, str(base), str(new))
    assert code == EXIT_REGRESSION
    bad = {(c["solver"], c["task"]) for c in d["cells"] if c["verdict"] == "regression"}
    assert bad == {("ddrm", "inpaint_box")}
    c = next(c for c in d["cells"] if c["solver"] == "ddrm" and c["task"] == "inpaint_box")
    lo, hi = c["speed"]["ci"]
    assert lo <= c["speed"]["ratio"] <= hi and c["speed"]["p_value"] < 0.05
    assert "solver time / network time" in c["reasons"][0]


def test_more_network_evaluations_is_a_regression(runs, capsys):
    base, new = runs
    change(new, "UPDATE results SET nfe = nfe * 3 / 2, vjp = vjp * 3 / 2 WHERE solver = 'vml_map' AND preset = 'fast'")
    code, d = as_json(capsys, str(base), str(new))
    assert code == EXIT_REGRESSION
    c = next(c for c in d["cells"] if c["verdict"] == "regression")
    assert (c["solver"], c["preset"]) == ("vml_map", "fast") and c["nfe_per_image"] == [10, 15]
    assert any("more network work: NFE" in r for r in c["reasons"])


def test_too_few_timings_is_not_gated(runs, capsys):
    base, new = runs
    change(new, "UPDATE results SET seconds = seconds * 3 WHERE solver = 'ddrm'")
    code, d = as_json(capsys, str(base), str(new), "--min-samples", "30")
    assert code == EXIT_OK and d["regressed"] == 0 and d["not_gated"] >= 1
    c = next(c for c in d["cells"] if c["solver"] == "ddrm" and c["task"] == "inpaint_box")
    assert c["verdict"] == "not gated" and c["speed"]["n"] == 24
    assert any(x.startswith("time not gated: 24 paired timed call(s) < 30") for x in c["not_gated"])
    assert main([str(base), str(new), "--min-samples", "30", "--fail-not-gated"]) == EXIT_INCONCLUSIVE
    assert main([str(base), str(new), "--min-samples", "6", "--fail-not-gated"]) == EXIT_REGRESSION


def test_wall_cost_warns_when_machines_differ(tmp_path, capsys):
    base = calibrate(make_run(tmp_path / "base", write_images=False))
    new = calibrate(make_run(tmp_path / "new", write_images=False), meta={"cpu_capability": "AVX512"})
    code, d = as_json(capsys, str(base), str(new), "--cost", "wall")
    assert code == EXIT_OK and any("cpu_capability: 'AVX2' vs 'AVX512'" in w for w in d["warnings"])
    assert main([str(base), str(new), "--cost", "wall"]) == EXIT_OK
    assert "warning: wall-time cost between runs on different machines" in capsys.readouterr().err
    _, d = as_json(capsys, str(base), str(new))          # normalised: no machine warning
    assert d["warnings"] == []


def test_uncalibrated_runs(tmp_path, capsys):
    """Runs of an older version carry no calibration: auto falls back to wall time with a
    warning; an explicit --cost normalised is bad input."""
    base = make_run(tmp_path / "base", write_images=False)
    new = calibrate(make_run(tmp_path / "new", write_images=False))
    code, d = as_json(capsys, str(base), str(new))
    assert code == EXIT_OK and d["cost"] == "wall" and "no device calibration" in d["warnings"][0]
    assert main([str(base), str(new), "--cost", "normalised"]) == EXIT_BAD_INPUT
    assert "--cost normalised needs both runs" in capsys.readouterr().err


def test_markdown_and_text_formats(runs, capsys):
    base, new = runs
    change(new, "UPDATE results SET seconds = seconds * 1.5 WHERE solver = 'ddrm'")
    assert main([str(base), str(new), "--format", "markdown"]) == EXIT_REGRESSION
    md = capsys.readouterr().out
    assert md.startswith("### invbench compare: regression")
    assert "**Cells not ok**" in md and "ddrm / default / inpaint" in md
    assert "| solver " in md and "| base | cpu: Test CPU | Test CPU | AVX2 |" in md
    assert main([str(base), str(new)]) == EXIT_REGRESSION
    txt = capsys.readouterr().out
    assert "REGRESSION: slower: solver time / network time x1.5" in txt and "n = 24 paired calls" in txt
    assert "1 of 10 cell(s) regressed" in txt and "cost normalised" in txt
    assert "family-wise error rate 0.05 by Holm over" in txt
    assert main([str(base), str(new), "--format", "yaml"]) == EXIT_BAD_INPUT
    assert main([str(base), str(new), "--min-samples", "0"]) == EXIT_BAD_INPUT
