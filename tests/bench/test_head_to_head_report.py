"""invbench.bench.studies.head_to_head*: the study's own report agrees with an independent
computation on synthetic rows (image means over seeds, paired t intervals with Bonferroni,
Kendall's τ, the normalised time) and its marks agree with the intervals printed beside them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from invbench.bench.report.data import RunData
from invbench.bench.studies import head_to_head as h2h
from invbench.bench.studies import head_to_head_figures as figs
from invbench.bench.studies import head_to_head_tables as tables
from scipy import stats

SOLVERS = ("ddrm", "dps", "vml_map", "pigdm")
TASKS = ("denoise", "inpaint_random-50")
PRIORS = ("small-cpu", "gmm-crops32")
N_IMG, SEEDS = 12, (0, 1)
CONFIG = """
[[tasks]]
name = "denoise"
operator = "denoise"
[[tasks]]
name = "inpaint_random-50"
operator = "inpaint_random"
params = { ratio = 0.5 }
"""
# true mean PSNR of (solver, arm); tuning helps DPS a lot, hurts VML-MAP, leaves the others
LEVEL = {
    ("ddrm", "released"): 26.0,
    ("ddrm", "fe20"): 26.05,
    ("dps", "released"): 20.0,
    ("dps", "fe20"): 24.0,
    ("vml_map", "released"): 27.0,
    ("vml_map", "fe20"): 25.0,
    ("pigdm", "released"): 25.0,
    ("pigdm", "fe20"): 25.5,
}
SECONDS = {"ddrm": 0.02, "dps": 0.05, "vml_map": 0.03, "pigdm": 0.04}  # s/image of the tuned arm
NFE = {"ddrm": (20, 0), "dps": (10, 10), "vml_map": (10, 5), "pigdm": (10, 10)}


def _row(label: str, prior: str, task: str, i: int, seed: int, psnr: float, seconds: float, nfe: int,
         vjp: int) -> dict:
    return {"solver": label, "preset": "default", "task": task, "dataset": "crops32", "prior": prior,
            "image_id": f"crop{i:04d}", "seed": seed, "status": "ok", "psnr": psnr, "seconds": seconds,
            "nfe": nfe, "vjp": vjp, "batch_size": 1, "timings": f"{label}-{i}-{seed}"}


def _rows(prior: str, task: str, rng: np.random.Generator) -> pd.DataFrame:
    recs = []
    image_effect = rng.normal(0, 2.0, N_IMG)
    shift = 0.0 if prior == "small-cpu" else -1.0
    levels = dict(LEVEL)
    if prior == "gmm-crops32":   # the exact twin is also tuned at 100 FE (a second budget)
        levels.update({(s, "fe100"): LEVEL[(s, "fe20")] + 1.0 for s in SOLVERS})
    scale = {"fe20": 1, "released": 2, "fe100": 5}
    for (s, arm), mu in levels.items():
        label = s if arm == "released" else f"{s}-{arm}"
        for i in range(N_IMG):
            for seed in SEEDS:
                psnr = mu + shift + image_effect[i] + rng.normal(0, 0.6)
                recs.append(_row(label, prior, task, i, seed, psnr, SECONDS[s] * scale[arm],
                                 scale[arm] * NFE[s][0], scale[arm] * NFE[s][1]))
    if prior == "gmm-crops32":
        recs += [_row("oracle_mean", prior, task, i, seed, 28.0 + image_effect[i], 0.001, 0, 0)
                 for i in range(N_IMG) for seed in SEEDS]
    return pd.DataFrame(recs)


@pytest.fixture(scope="module")
def study() -> h2h.Study:
    rng = np.random.default_rng(7)
    runs = {
        (p, t): RunData(
            Path("."), _rows(p, t, rng), pd.DataFrame(), {"config": CONFIG}, pd.DataFrame()
        )
        for p in PRIORS
        for t in TASKS
    }
    return h2h.study_of(runs)


def _image_means(df: pd.DataFrame, label: str) -> pd.Series:
    return df[df["solver"] == label].groupby("image_id")["psnr"].mean()


def test_arms_split_and_rename(study):
    assert study.arms == ["released", "fe20", "fe100"] and study.solvers() == [
        "ddrm",
        "dps",
        "vml_map",
        "pigdm",
    ]  # by display name
    b = study.board("gmm-crops32", "denoise", "fe20")
    assert {c.solver for c in b.cells} == set(SOLVERS) | {"oracle_mean"}
    c = study.cell("small-cpu", "denoise", "fe20", "dps")
    rows = study.runs[("small-cpu", "denoise")].results
    assert c.metrics["psnr"].mean == pytest.approx(_image_means(rows, "dps-fe20").mean(), abs=1e-12)
    assert (c.nfe, c.vjp) == (10, 10)


def test_tuned_minus_released_is_the_bonferroni_paired_t_interval_and_marks_agree(study):
    ds = tables.deltas(study, "fe20")
    assert len(ds) == len(PRIORS) * len(TASKS) * len(SOLVERS)
    level = 1 - 0.05 / len(SOLVERS)
    for d in ds:
        rows = study.runs[(d.prior, d.task)].results
        diff = (_image_means(rows, f"{d.solver}-fe20") - _image_means(rows, d.solver)).to_numpy()
        half = stats.t.ppf(0.5 + level / 2, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
        assert d.level == pytest.approx(level) and d.m == len(SOLVERS)
        assert d.ci.mean == pytest.approx(diff.mean(), abs=1e-12)
        assert d.ci.half_width == pytest.approx(half, rel=1e-9)
    by = {(d.prior, d.task, d.solver): d for d in ds}
    assert by[("small-cpu", "denoise", "dps")].verdict == "better"
    assert by[("small-cpu", "denoise", "vml_map")].verdict == "worse"
    md = tables.delta_markdown(study, "fe20")
    for line in md.splitlines():  # a mark exactly where the printed interval excludes 0
        for low, high, mark in re.findall(r"\[([−+]\d+\.\d+), ([−+]\d+\.\d+)\]( [▲▼])?", line):
            lo, hi = (float(x.replace("−", "-")) for x in (low, high))
            assert mark == (" ▲" if lo > 0 else " ▼" if hi < 0 else "")


def test_cost_is_normalised_by_ddrms_seconds_per_nfe(study):
    assert h2h.seconds_per_nfe(study, "small-cpu", "denoise", "fe20") == pytest.approx(0.02 / 20)
    md = tables.cost_markdown(study)
    dps = next(line for line in md.splitlines() if line.startswith("| DPS |"))
    # small-cpu (first table): released 20 + 20 FE, 0.1 s/image = 100 NFE-eq.; tuned 10 + 10,
    # 0.05 s = 50; no 100-FE arm; DDRM's 20-FE arm normalises: 0.02 s / 20 NFE
    assert dps.split(" | ")[1:] == ["20 + 20", "10 + 10", "—", "100", "50", "— |"]
    twin = md.split("**gmm-crops32**")[1]
    dps = next(line for line in twin.splitlines() if line.startswith("| DPS |"))
    assert dps.split(" | ")[1:] == ["20 + 20", "10 + 10", "50 + 50", "100", "50", "250 |"]


def test_cross_prior_tau_is_scipys_on_the_tuned_means(study):
    rows = tables.cross_prior(study, "fe20", "small-cpu", "gmm-crops32")
    assert [r.task for r in rows] == list(TASKS)
    for r in rows:
        x = [study.cell("small-cpu", r.task, "fe20", s).metrics["psnr"].mean for s in r.solvers]
        y = [study.cell("gmm-crops32", r.task, "fe20", s).metrics["psnr"].mean for s in r.solvers]
        res = stats.kendalltau(x, y)
        assert (r.tau, r.p) == pytest.approx((res.statistic, res.pvalue))


def test_main_table_bolds_the_best_mean_and_report_documents_build(study, tmp_path):
    md, tex = tables.main_tables(study, "small-cpu", "fe20")
    best = max(
        SOLVERS, key=lambda s: study.cell("small-cpu", "denoise", "fe20", s).metrics["psnr"].mean
    )
    row = next(
        line for line in md.splitlines() if line.startswith(f"| {tables.solver_name(best)} |")
    )
    assert row.split(" | ")[1].startswith("**")
    assert r"\textbf{" in tex and r"\begin{tabular}" in tex
    doc = tables.tables_markdown(
        study, "fe20", "small-cpu", "gmm-crops32", {("daps", "denoise"): "why"}
    )
    groups = {f"crop{i:04d}": ("a" if i % 2 else "b") for i in range(N_IMG)}
    by = tables.by_group(study, "fe20", groups)
    assert set(by) == {(p, t, g) for p in PRIORS for t in TASKS for g in "ab"}
    for (p, t, g), top in by.items():   # the best of a group is the best mean on its images
        rows = study.runs[(p, t)].results
        ids = [k for k, v in groups.items() if v == g]
        means = {s: _image_means(rows, f"{s}-fe20").loc[ids].mean() for s in SOLVERS}
        assert top[0] == max(means, key=means.get)
    assert "| Prior | Task | all images | a (6) | b (6) |" in tables.groups_markdown(study, "fe20", groups, "half")
    for head in (
        "## Main results: tuned presets at 20",
        "## Tuned − released (20 FE)",
        "## Cost",
        "## Rankings under the learned prior",
        "## Overall ranking over tasks",
    ):
        assert head in doc
    assert figs.draw_all(study, "fe20", "small-cpu", "gmm-crops32", tmp_path) == []
    kinds = ("tuned_vs_released", "learned_vs_exact", "budget__gmm-crops32")   # two budgets: the twin only
    assert {p.name for p in tmp_path.iterdir()} == {f"{k}.{e}" for k in kinds for e in ("png", "pdf")}
    assert "## Main results: tuned presets at 100" in doc and "## Tuned − released (100 FE)" in doc
    assert doc.split("## Tuned − released (100 FE)")[1].split("\n## ")[0].count("**small-cpu**") == 0


def test_half_widths_at_95_percent_are_the_unadjusted_paired_t(study):
    b = study.board("small-cpu", "denoise", "fe20")
    best = next(c for c in b.cells if c.is_best)
    rows = study.runs[("small-cpu", "denoise")].results
    expect = []
    for c in b.cells:
        if c.is_best or c.solver.startswith("oracle"):
            continue
        d = (_image_means(rows, f"{c.solver}-fe20") - _image_means(rows, f"{best.solver}-fe20")).to_numpy()
        expect.append(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    got = h2h.half_widths(study, "small-cpu", "fe20", 0.95)
    assert sorted(got[: len(expect)]) == pytest.approx(sorted(expect), rel=1e-9)
    adjusted = h2h.half_widths(study, "small-cpu", "fe20")[: len(expect)]
    assert all(a > g for a, g in zip(sorted(adjusted), sorted(got[: len(expect)])))


def test_a_main_table_of_tuned_presets_says_so_under_itself(study):
    """The demo's headline is a table of presets tuned here: its note names them and how they
    were tuned (the provenance of the rows), in Markdown and in LaTeX."""
    rows = study.runs[("small-cpu", "denoise")].results
    prov = "tuned-here (trials 24, fe_cap_per_solve 20; validation split)"
    tuned = rows.assign(preset_provenance=[prov if "-fe" in s else "default" for s in rows["solver"]])
    run = h2h.RunData(Path("."), tuned, pd.DataFrame(), {"config": CONFIG}, pd.DataFrame())
    one = h2h.study_of({("small-cpu", "denoise"): run})
    md, tex = tables.main_tables(one, "small-cpu", "fe20")
    line = "Presets tuned here (trials 24, fe\\_cap\\_per\\_solve 20; validation split): DDRM, DPS, VML-MAP, ΠGDM."
    assert line in md
    assert "Presets tuned here" in tex
    assert "tuned here" not in tables.main_tables(one, "small-cpu", "released")[0]
