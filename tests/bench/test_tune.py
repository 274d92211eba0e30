"""invbench tune: validation-only evaluation, seeded reproducibility, bad input, preset round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import torch
from invbench.bench import cli, datasets, tune, tune_cost
from invbench.bench.datasets import digits_split_indices

CONFIG = """
name = "tunet"
seeds = [0]
[[datasets]]
name = "digits"
type = "digits"
split = "test"
limit = 3
{extra}
[[priors]]
name = "gmm-digits"
[[tasks]]
name = "denoise"
operator = "denoise"
noise_sigma = 0.1
[[solvers]]
name = "ddrm"
overrides = {{ steps = 5 }}
"""


def _cfg(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "t.toml"
    p.write_text(CONFIG.format(extra=extra))
    return p


def _trials(out: Path) -> list[dict]:
    import optuna

    st = optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{out / 'study.sqlite3'}")
    return [dict(t.params, value=t.value) for t in st.trials]


def test_no_test_image_is_evaluated(tmp_path):
    # The config asks for the test split; tuning must evaluate validation images only.
    out = tmp_path / "o"
    assert cli.main(["tune", str(_cfg(tmp_path)), "--solver", "ddrm", "--budget-trials", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "evaluated_images.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3
    test = datasets.build({"type": "digits", "split": "test"})
    test_hashes = {tune.image_sha256(test.get(i)) for i in range(len(test))}
    test_ids = {f"digits{i}" for i in digits_split_indices("test")}
    assert not {r["image_sha256"] for r in rows} & test_hashes
    assert not {r["image_id"] for r in rows} & test_ids
    val_ids = {f"digits{i}" for i in digits_split_indices("validation")}
    assert {r["image_id"] for r in rows} <= val_ids
    doc = tomllib.loads((out / "preset.toml").read_text())["tuned"]
    assert doc["split"] == "validation" and "digits" in doc["manifest_sha256"]
    assert doc["config"] == _cfg(tmp_path).name      # outside the source tree: its name, no folders


def test_a_config_of_the_source_tree_is_recorded_relative_to_it():
    root = Path(tune.__file__).resolve().parents[1]
    cfg = root / "configs" / "smoke.toml"
    assert tune.shown_config_path(cfg) == "configs/smoke.toml"


def test_bundled_validation_crops_are_not_test_crops(tmp_path):
    spec = {"name": "c", "type": "bundled", "n": 4, "size": 16, "seed": 0}
    val = datasets.build(tune.split_spec(spec, "validation"))
    assert val.source()["split"] == "validation"
    forbidden = tune.test_split_hashes(spec, ".")
    assert len(forbidden) == 4
    assert not {tune.image_sha256(val.get(i)) for i in range(len(val))} & forbidden


def test_leak_is_refused(tmp_path, monkeypatch):
    # If a validation image equalled a test image, tuning stops before solving anything.
    cfg = _cfg(tmp_path)
    val = datasets.build({"type": "digits", "split": "validation"})
    monkeypatch.setattr(tune, "test_split_hashes", lambda spec, base: {tune.image_sha256(val.get(0))})
    with pytest.raises(tune.TuneError, match="test split"):
        tune.tune(cfg, "ddrm", budget_trials=1, out=tmp_path / "o", log=lambda s: None)
    assert not (tmp_path / "o").exists()


def test_same_seed_same_trials(tmp_path):
    cfg = _cfg(tmp_path)
    a = tune.tune(cfg, "ddrm", budget_trials=4, out=tmp_path / "a", seed=3, log=lambda s: None)
    b = tune.tune(cfg, "ddrm", budget_trials=4, out=tmp_path / "b", seed=3, log=lambda s: None)
    c = tune.tune(cfg, "ddrm", budget_trials=4, out=tmp_path / "c", seed=4, log=lambda s: None)
    assert _trials(tmp_path / "a") == _trials(tmp_path / "b")
    assert a.best_params == b.best_params
    assert [t["eta"] for t in _trials(tmp_path / "a")] != [t["eta"] for t in _trials(tmp_path / "c")]
    assert c.n_trials == 4


def test_resume_continues_the_study(tmp_path):
    cfg = _cfg(tmp_path)
    tune.tune(cfg, "ddrm", budget_trials=2, out=tmp_path / "r", seed=1, log=lambda s: None)
    r = tune.tune(cfg, "ddrm", budget_trials=4, out=tmp_path / "r", seed=1, log=lambda s: None)
    assert r.n_trials == 4
    # the first two trials are the fresh run's first two
    tune.tune(cfg, "ddrm", budget_trials=2, out=tmp_path / "f", seed=1, log=lambda s: None)
    assert _trials(tmp_path / "r")[:2] == _trials(tmp_path / "f")


def test_nfe_cap_prunes_and_budget_nfe_stops(tmp_path):
    cfg = _cfg(tmp_path)
    r = tune.tune(cfg, "ddrm", budget_nfe=40, out=tmp_path / "n", log=lambda s: None)
    assert r.nfe_total >= 40 and r.nfe_total < 40 + 15   # 5 NFE x 3 images per trial
    with pytest.raises(tune.TuneError, match="--nfe-cap 4: the cheapest setting .* costs 5 "):
        tune.tune(cfg, "ddrm", budget_trials=2, nfe_cap=4, out=tmp_path / "cap", log=lambda s: None)
    assert not (tmp_path / "cap").exists()          # refused before the folder is created


@pytest.mark.parametrize("args, needle", [
    (["--solver", "nope", "--budget-trials", "2"], "unknown solver"),
    (["--solver", "ddrm", "--budget-trials", "0"], "--budget-trials"),
    (["--solver", "ddrm", "--budget-nfe", "-3"], "--budget-nfe"),
    (["--solver", "oracle_map", "--budget-trials", "2"], "SEARCH_SPACE"),
    (["--solver", "ddrm", "--metric", "ssim"], "--metric"),
    (["--solver", "ddrm", "--fe-cap", "0"], "--fe-cap"),
    (["--solver", "ddrm", "--fe-cap", "20", "--nfe-cap", "20"], "--fe-cap"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, needle):
    out = tmp_path / "o"
    rc = cli.main(["tune", str(_cfg(tmp_path)), *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err
    assert not out.exists()


def test_dataset_without_split_is_refused(tmp_path, capsys):
    img = tmp_path / "imgs"
    img.mkdir()
    from PIL import Image

    Image.fromarray((torch.rand(8, 8, 3) * 255).byte().numpy()).save(img / "a.png")
    datasets_mod = datasets
    (img / "MANIFEST.sha256").write_text(datasets_mod.make_manifest(img))
    p = tmp_path / "f.toml"
    p.write_text(CONFIG.format(extra="").replace('type = "digits"\nsplit = "test"', f'type = "folder"\nroot = "{img}"'))
    out = tmp_path / "o"
    rc = cli.main(["tune", str(p), "--solver", "ddrm", "--budget-trials", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no validation split" in err and not out.exists()


def test_tuned_preset_round_trip_into_run(tmp_path):
    cfg = _cfg(tmp_path)
    r = tune.tune(cfg, "ddrm", budget_trials=2, out=tmp_path / "tn", log=lambda s: None)
    run_cfg = tmp_path / "run.toml"
    run_cfg.write_text(cfg.read_text() + '\n[[solvers]]\nname = "ddrm"\nlabel = "ddrm-tuned"\n'
                       f'preset = "tuned:{tmp_path / "tn" / "preset.toml"}"\n'
                       '\n[[solvers]]\nname = "lmaps"\npreset = "cpu"\noverrides = { steps = 2, inner_steps = 2 }\n')
    assert cli.main(["run", str(run_cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    import sqlite3

    con = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    rows = con.execute("SELECT solver, preset_provenance, status FROM results").fetchall()
    con.close()
    prov = {s: p for s, p, _ in rows}
    assert all(st == "ok" for *_, st in rows)
    assert prov["ddrm"] == "default"
    assert prov["ddrm-tuned"] == "tuned-here (trials 2; validation split)"
    assert prov["lmaps"] == "reconstruction, no public code; named preset cpu"   # Solver.FIDELITY first
    from invbench.bench import config

    exp = config.load(run_cfg)
    tuned = next(s for s in exp.solvers if s.label == "ddrm-tuned")
    assert tuned.overrides["eta"] == r.best_params["eta"] and tuned.overrides["steps"] == 5


def test_tuned_preset_bad_file(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    run_cfg = tmp_path / "run.toml"
    run_cfg.write_text(cfg.read_text().replace('name = "ddrm"', 'name = "ddrm"\npreset = "tuned:missing.toml"'))
    assert cli.main(["run", str(run_cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "solvers[0].preset" in err and "missing.toml" in err and not (tmp_path / "run").exists()


def test_nfe_cap_shapes_the_space_of_step_counts():
    """VML-MAP searches its level and inner-step counts N, K (NFE = N(K+1)): under a cap every drawn
    configuration fits and several do (none is discarded); without a cap the full ranges are drawn."""
    import optuna
    from invbench.bench.run import nfe_per_image

    from invbench import solvers

    cls = solvers.get("vml_map")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for cap in (10, 60, None):
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        drawn = []
        for i in range(25):
            trial = study.ask()
            params = tune.suggest_within_cap(trial, cls, "default", {}, cap)
            nfe = nfe_per_image(cls.from_preset("default", **params))
            drawn.append((params["n_levels"], params["inner_steps"], nfe))
            study.tell(trial, -abs(params["step_size"] - 1.0) - i * 1e-6)   # any score: TPE must keep going
        if cap == 10:
            assert {(n, k) for n, k, _ in drawn} == {(5, 1)}     # N >= 5 and K >= 1: the one fit
        elif cap == 60:
            assert all(nfe <= 60 for *_, nfe in drawn) and len({(n, k) for n, k, _ in drawn}) >= 5
        else:
            assert max(nfe for *_, nfe in drawn) > 60


def test_a_diverging_trial_is_pruned_and_the_study_goes_on(tmp_path, monkeypatch):
    """A configuration whose solve diverges costs its trial, not the study: the trial is pruned
    with the reason kept, the budget counts it, and the preset file says how many diverged."""
    import optuna
    from invbench.solvers.ddrm import DDRM

    from invbench import solvers

    orig = DDRM.solve

    def fragile(self, *a, **kw):
        if self.params.eta > 0.5:
            raise solvers.SolverDiverged("non-finite values in ddrm step 3: state")
        return orig(self, *a, **kw)

    monkeypatch.setattr(DDRM, "solve", fragile)
    r = tune.tune(_cfg(tmp_path), "ddrm", budget_trials=8, out=tmp_path / "d", log=lambda s: None)
    st = optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{tmp_path / 'd' / 'study.sqlite3'}")
    div = [t for t in st.trials if "diverged" in t.user_attrs]
    assert len(st.trials) == 8 and div and all(t.state == optuna.trial.TrialState.PRUNED for t in div)
    assert all(t.params["eta"] > 0.5 for t in div) and r.best_params["eta"] <= 0.5
    doc = tomllib.loads((tmp_path / "d" / "preset.toml").read_text())
    assert doc["tuned"]["trials_diverged"] == len(div)


def _dps_cfg(tmp_path: Path) -> Path:
    p = tmp_path / "dps.toml"
    p.write_text(CONFIG.format(extra="").replace('name = "ddrm"\noverrides = { steps = 5 }',
                                                 'name = "dps"\noverrides = { steps = 100 }'))
    return p


def _study(out: Path):
    import optuna

    storage = f"sqlite:///{out / 'study.sqlite3'}"
    return optuna.load_study(study_name=tune.STUDY_NAME, storage=storage)


def test_fe_cap_fits_the_steps_of_a_solver_with_vjps(tmp_path):
    """DPS spends one NFE and one VJP per step: under --fe-cap 20 its 100 configured steps become
    10 (20 forward-equivalents per solve), measured, recorded in the preset and in every trial."""
    out = tmp_path / "fe"
    quiet = lambda s: None
    r = tune.tune(_dps_cfg(tmp_path), "dps", budget_trials=2, fe_cap=20, out=out, log=quiet)
    doc = tomllib.loads((out / "preset.toml").read_text())["tuned"]
    assert doc["params"]["steps"] == 10 and doc["budget"]["fe_cap_per_solve"] == 20
    assert doc["measured_per_solve"] == {"nfe": 10.0, "vjp": 10.0, "fe": 20.0}
    assert doc["fe_spent"] == 2 * 3 * 20 and r.nfe_total == 2 * 3 * 10
    for t in _study(out).trials:
        assert t.user_attrs["fe_measured_per_solve"] == 20.0 and t.user_attrs["solves"] == 3
    cache = json.loads((out / tune.FE_CACHE_NAME).read_text())
    assert [10.0, 10.0] in cache.values()
    # a solver without VJPs at the same cap: 20 steps (DDRM)
    tune.tune(_cfg(tmp_path), "ddrm", budget_trials=1, fe_cap=20, out=tmp_path / "d", log=quiet)
    ddrm = tomllib.loads((tmp_path / "d" / "preset.toml").read_text())["tuned"]
    assert ddrm["params"]["steps"] == 20


def test_recorded_fe_is_what_the_solves_spent(tmp_path, monkeypatch):
    """A trial's measured FE is the NFE + VJP counted on the prior of each solve it made."""
    spent: list[tuple[int, int]] = []
    orig = tune.solve_and_score

    def counted(solver, problems, prior):
        out = orig(solver, problems, prior)
        spent.append((prior.nfe, prior.vjp))
        return out

    monkeypatch.setattr(tune, "solve_and_score", counted)       # the trials' solves
    monkeypatch.setattr(tune_cost, "solve_and_score", counted)  # the FE meter's
    out = tmp_path / "m"
    tune.tune(_dps_cfg(tmp_path), "dps", budget_trials=1, fe_cap=12, out=out, log=lambda s: None)
    t = _study(out).trials[0]
    trial_solves = spent[-3:]                    # the earlier solves measured the step count
    assert t.user_attrs["fe_trial"] == sum(n + v for n, v in trial_solves)
    assert t.user_attrs["nfe_trial"] == sum(n for n, _ in trial_solves)
    assert t.user_attrs["vjp_measured_per_solve"] == sum(v for _, v in trial_solves) / 3
    assert t.user_attrs["fe_measured_per_solve"] <= 12


def test_a_study_started_with_one_fe_cap_refuses_another(tmp_path):
    import sqlite3

    cfg, out = _cfg(tmp_path), tmp_path / "b"
    tune.tune(cfg, "ddrm", budget_trials=1, fe_cap=10, out=out, log=lambda s: None)
    with pytest.raises(tune.TuneError, match="--fe-cap 10, not 12"):
        tune.tune(cfg, "ddrm", budget_trials=2, fe_cap=12, out=out, log=lambda s: None)
    with pytest.raises(tune.TuneError, match="--fe-cap"):
        tune.tune(cfg, "ddrm", budget_trials=2, out=out, log=lambda s: None)
    with pytest.raises(tune.TuneError, match="only one of --nfe-cap C or --fe-cap C"):
        tune.tune(cfg, "ddrm", budget_trials=2, nfe_cap=5, fe_cap=10, out=out, log=lambda s: None)
    # a study written before --fe-cap existed records none: it continues without one
    old = tmp_path / "old"
    tune.tune(cfg, "ddrm", budget_trials=1, out=old, log=lambda s: None)
    con = sqlite3.connect(old / "study.sqlite3")
    con.execute("DELETE FROM study_user_attributes WHERE key = 'fe_cap'")
    con.commit()
    con.close()
    assert tune.tune(cfg, "ddrm", budget_trials=2, out=old, log=lambda s: None).n_trials == 2
    with pytest.raises(tune.TuneError, match="--fe-cap None, not 10"):
        tune.tune(cfg, "ddrm", budget_trials=3, fe_cap=10, out=old, log=lambda s: None)


def test_fe_cache_of_another_solver_in_the_folder_is_not_reused(tmp_path):
    """The FE cache is keyed by solver, base preset, problem and prior: DPS's measured cost of
    ``steps = 5`` left in a folder is not DDRM's cost of the same setting."""
    import json

    import torch
    from invbench.bench import problem, tune_cost
    from invbench.bench.config import TaskSpec
    from invbench.bench.tune_types import Case

    from invbench import priors, solvers

    task = TaskSpec(name="den", operator="denoise", noise_sigma=0.05, params={})
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    case = Case(problem.build_problem(task, "d", "i0", x, "tune", "tune"), priors.build("gmm-digits"), "sha")
    dps = tune_cost.FeMeter(solvers.get("dps"), "default", case)
    ddrm = tune_cost.FeMeter(solvers.get("ddrm"), "default", case)
    cache = tmp_path / "fe_per_setting.json"
    cache.write_text(json.dumps({dps.scope + " " + json.dumps({"steps": 5}): [999.0, 999.0]}))
    dps.attach(cache)
    ddrm.attach(cache)
    assert dps.counts({"steps": 5}) == (999.0, 999.0)      # its own entry is reused
    nfe, vjp = ddrm.counts({"steps": 5})                    # measured: DDRM spends no VJP
    assert vjp == 0 and 0 < nfe < 999


def test_a_locked_folder_is_refused_before_its_fe_cache_is_touched(tmp_path, monkeypatch):
    """Two workers on one grid: the second meets the first's lock before it measures anything or
    writes the folder's FE cache."""
    import fcntl

    out = tmp_path / "locked"
    out.mkdir()
    held = open(out / ".lock", "a+")  # noqa: SIM115 - held for the test
    fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def measured(*a, **k):
        raise AssertionError("the FE cost was measured in a folder another tune holds")

    monkeypatch.setattr(tune, "fe_setup", measured)
    try:
        with pytest.raises(tune.TuneError, match="another invbench tune is writing this tune folder"):
            tune.tune(_cfg(tmp_path), "ddrm", budget_trials=1, fe_cap=10, out=out, log=lambda s: None)
    finally:
        held.close()
    assert not (out / "fe_per_setting.json").exists()
