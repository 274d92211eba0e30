"""scripts/head_to_head.py and configs/head-to-head/: the configs are the demo's tasks at the
released presets with an exact twin; the driver tunes, collects, checks the split, runs, reports
and resumes without redoing what is done."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "head-to-head"


def _driver():
    path = ROOT / "scripts" / "head_to_head.py"
    spec = importlib.util.spec_from_file_location("head_to_head", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["head_to_head"] = mod  # its dataclass resolves names through it
    spec.loader.exec_module(mod)
    return mod


def _toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_configs_are_the_demo_tasks_at_released_presets_with_an_exact_twin():
    demo = _toml(ROOT / "configs" / "demo-released.toml")
    demo_tasks = {t["name"]: t for t in demo["tasks"]}
    demo_solvers = [s for s in demo["solvers"] if not s["name"].startswith("oracle")]
    for task, spec in demo_tasks.items():
        small, twin = _toml(CONFIGS / f"{task}.toml"), _toml(CONFIGS / f"{task}-gmm.toml")
        assert small["tasks"] == [spec] == twin["tasks"]
        assert small["priors"] == [{"name": "small-cpu"}]
        assert twin["priors"] == [{"name": "gmm-crops32"}]
        for doc in (small, twin):
            (ds,) = doc["datasets"]
            assert ds["type"] == "bundled" and ds["size"] == 32 and ds["n"] >= 64
            assert ds["split"] == "test" and doc["seeds"] == [0, 1]
            assert doc["solvers"][: len(demo_solvers)] == demo_solvers
        assert {s["name"] for s in twin["solvers"][len(demo_solvers) :]} == {
            "oracle_map",
            "oracle_mean",
            "oracle_sample",
        }
        assert small["datasets"] == twin["datasets"]
        assert twin["dtype"] == "float64"  # the oracles' SVD checks fail in float32


def _argv(work: Path, *extra: str) -> list[str]:
    return [
        "--work",
        str(work),
        "--tasks",
        "sr4_avgpool",
        "--priors",
        "gmm-crops32",
        "--solvers",
        "ddrm",
        "dps",
        "--budgets",
        "8",
        "--trials",
        "2",
        "--val-crops",
        "2",
        "--test-crops",
        "2",
        "--seeds",
        "[0]",
        *extra,
    ]


def test_driver_tunes_collects_runs_reports_and_resumes(tmp_path):
    h2h = _driver()
    work = tmp_path / "w"
    assert h2h.main(["tune", *_argv(work)]) == 0
    study = work / "tune" / "gmm-crops32" / "sr4_avgpool" / "fe8" / "dps"
    preset = tomllib.loads((study / "preset.toml").read_text())["tuned"]
    # 4 DPS steps = 4 NFE + 4 VJP (3 would run 4 levels on the prior's skip schedule: 8 too)
    assert preset["params"]["steps"] == 4 and preset["budget"]["fe_cap_per_solve"] == 8
    stamp = (study / "study.sqlite3").stat().st_mtime_ns
    assert h2h.main(["tune", *_argv(work)]) == 0  # done: skipped, not reopened
    assert (study / "study.sqlite3").stat().st_mtime_ns == stamp
    assert h2h.main(["tune", *_argv(work), "--trials", "3"]) == 0  # a larger budget resumes
    assert h2h.finished_trials(study) == 3
    assert h2h.main(["presets", *_argv(work, "--trials", "3")]) == 0
    records = json.loads((work / "presets" / "presets.json").read_text())
    assert {r["solver"] for r in records} == {"ddrm", "dps"}
    assert all(r["trials"] == 3 and r["budget_fe"] == 8 for r in records)
    assert h2h.main(["run", *_argv(work)]) == 0
    con = sqlite3.connect(work / "run" / "gmm-crops32" / "sr4_avgpool" / "rows" / "results.sqlite")
    labels = {r[0] for r in con.execute("SELECT solver FROM results WHERE status = 'ok'")}
    con.close()
    assert {"dps", "dps-fe8", "ddrm-fe8", "oracle_map", "oracle_mean"} <= labels
    assert h2h.main(["run", *_argv(work)]) == 0  # resumes: nothing left to do
    assert h2h.main(["report", *_argv(work)]) == 0
    assert any((work / "report" / "gmm-crops32" / "sr4_avgpool").iterdir())
    pub = work / "publish"  # the study's own report
    assert "## Tuned − released (8 FE)" in (pub / "tables.md").read_text()
    rows = pd.read_csv(pub / "rows.csv.gz")
    assert set(rows["arm"]) == {"released", "fe8", "oracle"} and len(rows) == len(labels_rows(work))
    for solver in ("ddrm", "dps"):
        kept = pub / "tune" / "gmm-crops32" / "sr4_avgpool" / "fe8" / solver
        assert (
            gzip.decompress((kept / "study.sqlite3.gz").read_bytes())
            == (
                work / "tune" / "gmm-crops32" / "sr4_avgpool" / "fe8" / solver / "study.sqlite3"
            ).read_bytes()
        )
        assert gzip.decompress((kept / "evaluated_images.jsonl.gz").read_bytes())
    assert (pub / "figures" / "tuned_vs_released.png").stat().st_size > 0
    assert (
        "tuned:../../../tune/"
        in (pub / "per-run" / "gmm-crops32" / "sr4_avgpool" / "run.toml").read_text()
    )


def labels_rows(work: Path) -> list:
    con = sqlite3.connect(work / "run" / "gmm-crops32" / "sr4_avgpool" / "rows" / "results.sqlite")
    try:
        return con.execute("SELECT solver FROM results").fetchall()
    finally:
        con.close()


def test_run_refuses_a_test_crop_seen_in_tuning(tmp_path, monkeypatch):
    h2h = _driver()
    from invbench.bench import config, datasets, tune

    work = tmp_path / "w"
    _, st, _ = h2h.parse(["run", *_argv(work)])
    exp = config.load(st.config("gmm-crops32", "sr4_avgpool"), list(st.run_sets))
    crop = datasets.build(exp.datasets[0].build_spec(), exp.base_dir).get(1)
    monkeypatch.setattr(h2h, "evaluated_hashes", lambda *a: {tune.image_sha256(crop)})
    with pytest.raises(SystemExit, match="evaluated in tuning"):
        h2h.phase_run(st)
