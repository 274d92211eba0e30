"""Third reliability round: ``invbench tune``'s study folder. A study is bound to its solver,
config and split, locked while a tune writes it, resumed after a kill without repeating trials,
its budgets are bounded, and every argument is checked before ``--out`` is created. Each test
reproduces a defect of the earlier code (docs/reliability.md, "Third round")."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from test_bad_inputs import check_error_line

from tests.helpers import parts
from tests.helpers.reliability import cli

DENOISE = '[[tasks]]\nname = "denoise"\noperator = "denoise"\nnoise_sigma = 0.1\n'


def _text(steps: int = 3, solver: str = "ddrm") -> str:
    """Two 8x8 validation digits, the test prior, one denoising task, one solver."""
    return parts.toml_config("tune-rel",
                             solvers_=f'[[solvers]]\nname = "{solver}"\noverrides = {{ steps = {steps} }}\n',
                             tasks=DENOISE, limit=2)


def _cfg(tmp: Path, name: str = "c.toml", **kw) -> Path:
    p = tmp / name
    p.write_text(_text(**kw))
    return p


def _study(out: Path):
    import optuna
    from invbench.bench import tune

    return optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{out / 'study.sqlite3'}")


def _states(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in _study(out).trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _finished_params(out: Path) -> list[dict]:
    return [dict(t.params) for t in _study(out).trials if t.state.name in ("COMPLETE", "PRUNED")]


def _tune(capsys, cfg: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return cli(capsys, ["tune", str(cfg), "--out", str(out), *args])


# ----------------------------------------------------------------------------- binding


def test_another_solvers_study_is_refused(tmp_path, capsys):
    """A DDRM study in --out is not continued by a PiGDM tune (whose preset would have held
    DDRM's eta, eta_b): exit 2 naming both solvers and the way out; the study is untouched."""
    out = tmp_path / "o"
    assert _tune(capsys, _cfg(tmp_path), out, "--solver", "ddrm", "--budget-trials", "2")[0] == 0
    preset = (out / "preset.toml").read_bytes()
    rc, _, err = _tune(capsys, _cfg(tmp_path, "p.toml", solver="pigdm"), out, "--solver", "pigdm", "--budget-trials",
                       "4")
    assert rc == 2
    check_error_line(err, [str(out), "'ddrm'", "'pigdm'", "another --out"])
    assert _states(out) == {"COMPLETE": 2}
    assert (out / "preset.toml").read_bytes() == preset


def test_another_configs_study_is_refused(tmp_path, capsys):
    """A steps = 3 tune does not continue a steps = 20 study (its preset would be picked among
    trials scored at 20 steps): the config hash differs, exit 2."""
    out = tmp_path / "o"
    assert _tune(capsys, _cfg(tmp_path, steps=20), out, "--solver", "ddrm", "--budget-trials", "2")[0] == 0
    rc, _, err = _tune(capsys, _cfg(tmp_path, "c3.toml", steps=3), out, "--solver", "ddrm", "--budget-trials", "4")
    assert rc == 2
    check_error_line(err, [str(out), "config", "another --out"])
    rc, _, err = _tune(capsys, _cfg(tmp_path, steps=20), out, "--solver", "ddrm", "--budget-trials", "4",
                       "--set", "solvers[0].overrides.steps=3")
    assert rc == 2
    check_error_line(err, ["config"])
    assert _states(out) == {"COMPLETE": 2}
    # the same config (another file with the same text) resumes
    assert _tune(capsys, _cfg(tmp_path, "again.toml", steps=20), out, "--solver", "ddrm", "--budget-trials",
                 "3")[0] == 0
    assert _states(out) == {"COMPLETE": 3}


def test_study_of_another_split_or_unbound_is_refused(tmp_path, capsys):
    """The split is part of the binding; a study without any binding (written by an older
    invbench, with trials) cannot be checked and is refused too."""
    cfg, out = _cfg(tmp_path), tmp_path / "o"
    assert _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "1")[0] == 0
    st = _study(out)
    st.set_user_attr("split", "test")
    rc, _, err = _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "2")
    assert rc == 2
    check_error_line(err, ["split", "'test'", "'validation'"])
    import optuna
    from invbench.bench import tune

    old = tmp_path / "old"
    old.mkdir()
    legacy = optuna.create_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{old / 'study.sqlite3'}",
                                 direction="maximize")
    legacy.add_trial(optuna.trial.create_trial(params={"eta": 0.5, "eta_b": 0.5}, value=30.0,
                                               distributions={"eta": optuna.distributions.FloatDistribution(0, 1),
                                                              "eta_b": optuna.distributions.FloatDistribution(0, 1)}))
    rc, _, err = _tune(capsys, cfg, old, "--solver", "ddrm", "--budget-trials", "2")
    assert rc == 2
    check_error_line(err, [str(old), "another --out"])
    assert _states(old) == {"COMPLETE": 1}


# ----------------------------------------------------------------------------- resume after a kill


class _Killed(BaseException):
    """Stands for SIGKILL: Optuna neither catches it nor closes the trial (it stays RUNNING)."""


def test_killed_tune_resumes_without_repeating_trials(tmp_path, capsys, monkeypatch):
    """A tune killed during its 4th trial and rerun closes the stale RUNNING trial (FAIL, with a
    note; not counted), proposes new parameters (not the first trials' again) and ends with as
    many finished trials as the budget: the same trials, hence the same best, as a tune that was
    never interrupted."""
    from invbench.solvers.ddrm import DDRM

    cfg = _cfg(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "o"
    assert _tune(capsys, cfg, ref, "--solver", "ddrm", "--budget-trials", "6", "--seed", "5")[0] == 0

    orig, calls = DDRM.solve, []

    def dies_in_trial_4(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3 * 2 + 1:          # 2 problems per trial: first solve of the 4th trial
            raise _Killed
        return orig(self, *a, **kw)

    monkeypatch.setattr(DDRM, "solve", dies_in_trial_4)
    with pytest.raises(_Killed):
        _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "6", "--seed", "5")
    monkeypatch.setattr(DDRM, "solve", orig)
    assert _states(out) == {"COMPLETE": 3, "RUNNING": 1}
    first = _finished_params(out)

    rc, _, err = _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "6", "--seed", "5")
    assert rc == 0, err
    assert _states(out) == {"COMPLETE": 6, "FAIL": 1}
    stale = next(t for t in _study(out).trials if t.state.name == "FAIL")
    assert stale.number == 3 and "interrupted" in stale.user_attrs.get("note", "")
    resumed = _finished_params(out)[3:]
    assert len(resumed) == 3 and not [p for p in resumed if p in first]
    assert _finished_params(out) == _finished_params(ref)
    assert _study(out).best_value == _study(ref).best_value


def _completed_so_far(out: Path) -> int:
    """COMPLETE trials of a study another process is writing, read through a read-only SQLite
    connection (opening it with Optuna could create the schema under the writer); 0 while the
    study cannot be read yet."""
    db = out / "study.sqlite3"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkilled_tune_process_resumes(tmp_path):
    """The same with a real SIGKILL of an ``invbench tune`` process in the middle of its study."""
    cfg, out = _cfg(tmp_path), tmp_path / "o"
    args = ["tune", str(cfg), "--solver", "ddrm", "--budget-trials", "400", "--out", str(out)]
    p = parts.cli_subprocess(args)
    try:
        while p.poll() is None and _completed_so_far(out) < 3:
            time.sleep(0.1)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.communicate()
    assert p.returncode == -signal.SIGKILL, "the tune ended before it could be killed"
    done = _states(out).get("COMPLETE", 0)
    first = _finished_params(out)
    r = parts.cli_run(["tune", str(cfg), "--solver", "ddrm", "--budget-trials", str(done + 3), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    states = _states(out)
    assert states.get("COMPLETE") == done + 3 and "RUNNING" not in states
    assert not [q for q in _finished_params(out)[done:] if q in first]


# ----------------------------------------------------------------------------- lock


def test_second_tune_on_a_locked_folder_is_refused(tmp_path, capsys):
    """While a tune holds OUT/.lock, another exits 2 naming the folder and the holder's pid and
    writes nothing (it used to crash in Optuna's schema creation, or overrun the budget)."""
    cfg, out = _cfg(tmp_path), tmp_path / "o"
    assert _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "1")[0] == 0
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.seek(0)
        held.truncate()
        held.write("4242\n")
        held.flush()
        rc, _, err = _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "3")
    assert rc == 2
    check_error_line(err, [str(out), "another invbench tune", "4242"])
    assert _states(out) == {"COMPLETE": 1}
    assert _tune(capsys, cfg, out, "--solver", "ddrm", "--budget-trials", "3")[0] == 0   # released: resumes
    assert _states(out) == {"COMPLETE": 3}


@pytest.mark.slow
def test_two_tunes_at_once(tmp_path):
    """Two ``invbench tune`` processes started together on one fresh --out: none crashes, a
    refused one exits 2, and the study holds exactly the budget's trials."""
    cfg, out = _cfg(tmp_path), tmp_path / "o"
    args = ["tune", str(cfg), "--solver", "ddrm", "--budget-trials", "10", "--out", str(out)]
    procs = [parts.cli_subprocess(args) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    for rc, err in results:
        assert rc in (0, 2), err
        if rc == 2:
            assert "another invbench tune" in err
    assert 0 in [rc for rc, _ in results]
    assert _states(out) == {"COMPLETE": 10}


# ----------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "0"])
def test_budget_nfe_must_be_finite_and_positive(tmp_path, capsys, value):
    out = tmp_path / "o"
    rc, _, err = _tune(capsys, _cfg(tmp_path), out, "--solver", "ddrm", f"--budget-nfe={value}")
    assert rc == 2
    check_error_line(err, ["--budget-nfe"])
    assert not out.exists()


def test_nfe_cap_below_every_setting_is_refused_up_front(tmp_path, capsys):
    """DDRM at 3 steps costs 3 NFE per solve whatever eta: a cap of 2 leaves nothing to try, and
    ``--budget-nfe`` used to loop for ever on pruned trials that spend nothing."""
    out = tmp_path / "o"
    rc, _, err = _tune(capsys, _cfg(tmp_path), out, "--solver", "ddrm", "--budget-nfe", "30", "--nfe-cap", "2")
    assert rc == 2
    check_error_line(err, ["--nfe-cap", "3"])
    assert not out.exists()


def test_budget_nfe_stops_when_every_trial_is_pruned(tmp_path, capsys, monkeypatch):
    """Should the cheapest setting fit the cap but every drawn one not, the NFE-budget loop stops
    after a bounded number of consecutive trials that spent nothing, with a clear message."""
    from invbench.bench import tune, tune_cost

    costs = iter([3.0])      # the up-front check sees a feasible setting; every trial then costs 50

    def cost(s):  # one sequence for both modules that look the NFE up
        return next(costs, 50.0)

    monkeypatch.setattr(tune_cost, "nfe_per_image", cost)  # the cap check, the cap shaping
    monkeypatch.setattr(tune, "nfe_per_image", cost)       # the objective
    out = tmp_path / "o"
    rc, _, err = _tune(capsys, _cfg(tmp_path), out, "--solver", "ddrm", "--budget-nfe", "30", "--nfe-cap", "10")
    assert rc == 2
    check_error_line(err, ["--nfe-cap", "no trial completed"])
    assert _states(out) == {"PRUNED": tune.MAX_IDLE_TRIALS}


# ----------------------------------------------------------------------------- arguments


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    for out in (f, f / "sub"):
        rc, _, err = _tune(capsys, _cfg(tmp_path), out, "--solver", "ddrm", "--budget-trials", "1")
        assert rc == 2
        check_error_line(err, ["--out", str(out)])
    assert f.read_text() == "mine"


def test_bad_seed_is_refused_before_out_exists(tmp_path, capsys):
    out = tmp_path / "o"
    rc, _, err = _tune(capsys, _cfg(tmp_path), out, "--solver", "ddrm", "--budget-trials", "1", "--seed", "-1")
    assert rc == 2
    check_error_line(err, ["--seed", "-1"])
    assert not out.exists()


def test_fifo_or_device_config_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)
    for cfg in (fifo, Path("/dev/null")):
        rc, _, err = _tune(capsys, cfg, tmp_path / "o", "--solver", "ddrm", "--budget-trials", "1")
        assert rc == 2
        line = check_error_line(err, [str(cfg), "not a regular file"])
        assert "not found" not in line and line.count(str(cfg)) == 1
    rc, _, err = _tune(capsys, tmp_path / "missing.toml", tmp_path / "o", "--solver", "ddrm")
    assert rc == 2
    check_error_line(err, ["missing.toml", "not found"])
    assert not (tmp_path / "o").exists()

