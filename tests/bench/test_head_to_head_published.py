"""reports/head-to-head/: the committed study. Its tables are exactly what its published rows give,
no test crop was evaluated in any of its tuning studies, its tuning record is complete, and the
demo's headline presets are the study's."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import tomllib
from invbench.bench import config, datasets, tune
from invbench.bench.studies import head_to_head as h2h
from invbench.bench.studies import head_to_head_tables as tables

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "reports" / "head-to-head"


def _driver():
    spec = importlib.util.spec_from_file_location("head_to_head", ROOT / "scripts" / "head_to_head.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["head_to_head"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_published_tables_are_what_the_published_rows_give():
    rows = pd.read_csv(PUBLISHED / "rows.csv.gz", keep_default_na=False, na_values=[""])
    configs = {(p.parent.name, p.name): (p / "run.toml").read_text() for p in PUBLISHED.glob("per-run/*/*")}
    assert len(configs) == 8      # each run's config is published (task names, marks' context)
    study = h2h.study_from_rows(rows, configs)
    driver = _driver()
    notes = {k: v for k, v in driver.RELEASED_NOTES.items() if k[1] in study.tasks}
    assert study.priors == ["small-cpu", "gmm-crops32"] and len(study.tasks) == 4
    groups = driver.crop_groups(driver.parse(["report"])[1])
    text = tables.tables_markdown(study, "fe20", "small-cpu", "gmm-crops32", notes, groups)
    assert text == (PUBLISHED / "tables.md").read_text()
    assert set(rows["status"]) == {"ok"}
    for (prior, task), run in study.runs.items():   # 64 test crops x 2 seeds in every cell
        per_cell = run.results.groupby("solver").size()
        assert set(per_cell) == {128}, (prior, task)


def test_no_test_crop_was_evaluated_in_tuning():
    logs = sorted(PUBLISHED.glob("tune/*/*/fe*/*/evaluated_images.jsonl.gz"))
    assert len(logs) == 96
    seen = {json.loads(line)["image_sha256"] for f in logs for line in gzip.decompress(f.read_bytes()).splitlines()}
    exp = config.load(ROOT / "configs" / "head-to-head" / "denoise.toml")
    ds = datasets.build(exp.datasets[0].build_spec(), exp.base_dir)
    test = {tune.image_sha256(ds.get(i)) for i in range(len(ds))}
    assert len(test) == 64 and len(seen) == 16
    assert not test & seen
    checks = sorted(PUBLISHED.glob("per-run/*/*/split_check.json"))
    assert len(checks) == 8
    for check in checks:
        doc = json.loads(check.read_text())
        assert doc["test_crops"] == 64 and doc["shared"] == 0


def test_tuning_record_is_complete():
    studies = sorted(PUBLISHED.glob("tune/*/*/fe*/*/study.sqlite3.gz"))
    assert len(studies) == 2 * 4 * 8 + 4 * 8          # both priors at 20 FE, the twin at 100 FE too
    con = sqlite3.connect(":memory:")
    con.deserialize(gzip.decompress(studies[0].read_bytes()))
    done = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    assert done == 24
    for s in studies:
        preset = tomllib.loads((s.parent / "preset.toml").read_text())["tuned"]
        assert preset["split"] == "validation" and preset["n_problems"] == 16
        assert preset["budget"]["trials"] == 24
        assert not preset["config"].startswith("/")


def test_demo_headline_runs_the_study_presets():
    demo = config.load(ROOT / "configs" / "demo.toml")
    assert demo.datasets[0].fields.get("split") == "test"
    for s in demo.solvers:
        (task,) = s.tasks
        study = PUBLISHED / "tune" / "small-cpu" / task / "fe20" / s.name / "preset.toml"
        committed = ROOT / "configs" / "presets" / "head-to-head" / task / f"{s.name}-fe20.toml"
        assert committed.read_text() == study.read_text()
        assert s.overrides == tomllib.loads(study.read_text())["tuned"]["params"]


def test_every_main_table_has_its_latex():
    names = {p.name for p in PUBLISHED.glob("main-*.tex")}
    assert names == {f"main-{p}-{a}.tex" for p, arms in (("small-cpu", ("fe20", "released")),
                                                        ("gmm-crops32", ("fe20", "fe100", "released")))
                     for a in arms}
    for name in names:
        tex = (PUBLISHED / name).read_text()
        assert tex.count(r"\begin{tabular}") == 1 and r"\textbf{" in tex
