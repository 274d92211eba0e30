"""``invbench compare``: exit 0 on an identical rerun, 1 when a run is altered to be worse
(lower PSNR on paired rows, slower, ok -> failed, rows missing), 2 on bad input; the quality
gate follows its documented paired-CI rule (checked against scipy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from invbench.bench.gate.compare import Thresholds, compare_runs, main
from invbench.bench.report.data import load_run
from scipy import stats

from invbench import bench
from tests.helpers.report_fixture import alter, make_run


@pytest.fixture(autouse=True)
def twelve_images(monkeypatch):
    """12 images per dataset (x 2 seeds): enough for every cell to be gated (--min-samples 6)."""
    from tests.helpers import report_fixture

    for name, (shape, _) in list(report_fixture.DATASETS.items()):
        monkeypatch.setitem(report_fixture.DATASETS, name, (shape, [f"{name}{k:02d}" for k in range(12)]))


@pytest.fixture()
def runs(tmp_path):
    """Base run and an identical rerun (same grid, same seed, same values)."""
    base = make_run(tmp_path / "base", write_images=False)
    new = make_run(tmp_path / "new", write_images=False)
    return base, new


def flagged(base: Path, new: Path, **kw) -> dict[tuple, list[str]]:
    vs = compare_runs(load_run(base), load_run(new), Thresholds(**kw))
    return {v.key: v.reasons for v in vs if v.reasons}


def test_identical_rerun_passes(runs, capsys):
    base, new = runs
    assert main([str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "0 of 10 cell(s) regressed" in out


def test_lower_psnr_is_a_regression(runs, capsys):
    base, new = runs
    # every dps row loses 1 dB plus small per-row noise (a worse solver on the same images)
    rng = np.random.default_rng(0)
    for rid in bench.load_results(new).query("solver == 'dps' and status == 'ok'")["row_id"]:
        alter(new, "UPDATE results SET psnr = psnr - ? WHERE row_id = ?", (1.0 + rng.normal(0, 0.1), rid))
    assert main([str(base), str(new)]) == 1
    assert "REGRESSION: psnr worse" in capsys.readouterr().out
    bad = flagged(base, new)
    assert {k[0] for k in bad} == {"dps"} and len(bad) == 3  # dps on its three tasks, nobody else


def test_quality_rule_matches_paired_t_interval(runs):
    """Same mean drop (0.2 dB): noisy per-image differences (seeds averaged first) whose one-sided
    t test of "worse by more than 0.1 dB" is not significant -> not flagged; the same drop on
    every image -> flagged. The p-value is scipy's one-sided paired t test on image means."""
    base, new = runs
    key = ("vml_map", "default", "inpaint_box", "tiny", "small-cpu")
    where = "solver='vml_map' AND preset='default' AND task='inpaint_box'"
    odd = "CAST(substr(image_id, -1) AS INTEGER) % 2 = 1"
    alter(new, f"UPDATE results SET psnr = psnr + CASE WHEN {odd} THEN -3.0 ELSE 2.6 END WHERE {where}")
    q = "solver=='vml_map' and preset=='default' and task=='inpaint_box'"
    d = bench.load_results(new).query(q).groupby("image_id")["psnr"].mean()
    b = bench.load_results(base).query(q).groupby("image_id")["psnr"].mean()
    diffs = (d - b).to_numpy()
    assert diffs.mean() == pytest.approx(-0.2)
    assert stats.ttest_1samp(diffs, -0.1, alternative="less").pvalue > 0.05
    assert key not in flagged(base, new)
    c = next(v for v in compare_runs(load_run(base), load_run(new), Thresholds()) if v.key == key)
    assert c.quality.p_value == pytest.approx(stats.ttest_1samp(diffs, -0.1, alternative="less").pvalue)
    alter(new, f"UPDATE results SET psnr = psnr - CASE WHEN {odd} THEN -3.0 ELSE 2.6 END - 0.2 WHERE {where}")
    assert key in flagged(base, new)
    assert key not in flagged(base, new, max_drop=0.25)  # a drop within the allowed threshold passes


def test_lower_better_metric_direction(runs):
    base, new = runs
    key = ("ddrm", "default", "inpaint_box", "tiny", "small-cpu")
    alter(new, "UPDATE results SET mse = mse * 0.5 WHERE solver='ddrm'")  # better
    assert flagged(base, new, metric="mse", max_drop=0.0) == {}
    alter(new, "UPDATE results SET mse = mse * 4 + 0.01 WHERE solver='ddrm'")  # worse (higher)
    assert key in flagged(base, new, metric="mse", max_drop=0.001)


def test_slowdown_is_a_regression(runs, capsys):
    base, new = runs
    alter(new, "UPDATE results SET seconds = seconds * 2 WHERE solver='ddrm'")
    assert main([str(base), str(new)]) == 1
    assert "slower" in capsys.readouterr().out
    # 2x is within --max-slowdown 2.5; an absolute slack above the growth also passes
    assert main([str(base), str(new), "--max-slowdown", "2.5"]) == 0
    assert main([str(base), str(new), "--min-slowdown-s", "1.0"]) == 0  # ddrm median is ~0.2 s


def test_ok_to_failed_and_missing_rows_are_regressions(runs, capsys):
    base, new = runs
    alter(new, "UPDATE results SET status='error', message='boom', psnr=NULL WHERE solver='oracle_map' AND seed=1")
    assert main([str(base), str(new)]) == 1
    assert "ok -> error" in capsys.readouterr().out
    base2, new2 = runs[0], make_run(runs[1].parent / "new2", write_images=False)
    alter(new2, "DELETE FROM results WHERE solver='dps' AND task='phase_retrieval'")
    assert main([str(base2), str(new2)]) == 1
    assert main([str(base2), str(new2), "--allow-missing"]) == 0


def test_bad_input_exits_2(runs, tmp_path, capsys):
    base, new = runs
    assert main([str(base), str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main([str(base), str(new), "--metric", "nonexistent"]) == 2
    assert main([str(base), str(new), "--metric", "lpips"]) == 2  # unavailable in metric_status
    assert "unavailable" in capsys.readouterr().err
    assert main([str(base), str(new), "--alpha", "1.5"]) == 2
    assert main([str(base)]) == 2  # usage error
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "results.sqlite").write_bytes(b"not a database at all" * 100)
    assert main([str(base), str(tmp_path / "corrupt")]) == 2
    assert "cannot read results store" in capsys.readouterr().err
    other = make_run(tmp_path / "other", write_images=False, experiment="o")
    alter(other, "UPDATE results SET seed = seed + 100")
    assert main([str(base), str(other)]) == 2  # nothing pairs


def test_module_entry_point_exit_code(runs):
    base, new = runs
    alter(new, "UPDATE results SET psnr = psnr - 2 WHERE solver='vml_map'")
    r = subprocess.run([sys.executable, "-m", "invbench.bench.gate.compare", str(base), str(new)], capture_output=True,
                       text=True,
                       check=False)
    assert r.returncode == 1, r.stderr


GATE_CONFIG = """
name = "gate"
seeds = [0, 1]
batch_size = 4
device = "cpu"
dtype = "float32"

[[datasets]]
name = "digits"
type = "digits"
split = "test"
limit = 6

[[priors]]
name = "gmm-digits"
datasets = ["digits"]

[[tasks]]
name = "inpaint_random-50"
operator = "inpaint_random"
noise_sigma = 0.05
params = { ratio = 0.5 }

[[solvers]]
name = "dps"
preset = "paper-inpaint"
overrides = { steps = 25 }

[[solvers]]
name = "ddrm"
overrides = { steps = 10 }

[metrics]
image = ["psnr", "mse"]
"""


@pytest.mark.slow
def test_real_runs_rerun_passes_fewer_steps_fails(tmp_path):
    """Acceptance on real runs: a rerun of the same config passes (0); the same config with DPS
    cut from 25 to 2 steps is another config (refused, 2) and, with --allow-config-change, fails
    the gate (1) on the DPS cell only."""
    cfg = tmp_path / "gate.toml"
    cfg.write_text(GATE_CONFIG)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    exe = [sys.executable, "-c", "import sys; from invbench.bench.cli import main; sys.exit(main())"]

    def run(out, *sets):
        r = subprocess.run([*exe, "run", str(cfg), "--out", str(tmp_path / out), "--no-progress",
                            *[a for s in sets for a in ("--set", s)]],
                           capture_output=True, text=True, env=env, timeout=900, check=False)
        assert r.returncode == 0, r.stderr
        return tmp_path / out

    base, rerun, worse = run("base"), run("rerun"), run("worse", "solvers[0].overrides.steps=2")
    assert main([str(base), str(rerun)]) == 0
    assert main([str(base), str(worse)]) == 2   # another config: refused unless --allow-config-change
    assert main([str(base), str(worse), "--allow-config-change"]) == 1
    bad = flagged(base, worse, allow_config_change=True)
    assert set(bad) == {("dps", "paper-inpaint", "inpaint_random-50", "digits", "gmm-digits")}
    assert any("psnr worse" in r for r in bad[next(iter(bad))])
