"""The Optuna study of ``invbench tune``: its binding to what was tuned, the lock of the tune
folder, opening (or resuming) the study in ``study.sqlite3`` and closing the trials a killed tune
left running, the seeded TPE sampler, and the search loop with its budget stop."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .problem import derive_seed
from .tune_types import TuneError

STUDY_NAME = "invbench-tune"

MAX_IDLE_TRIALS = 20
"""Under ``--budget-nfe``, the search stops after this many trials in a row that spent no network
evaluation (each pruned by ``--nfe-cap`` before solving): the budget would never be reached."""

LOCK_NAME = ".lock"
BINDING = ("solver", "config_hash", "split", "metric", "seed", "nfe_cap", "fe_cap")
"""Study user attributes that bind a study to what was tuned; a rerun must match them all."""
_BINDING_NAMES = {
    "solver": "solver",
    "config_hash": "config hash",
    "split": "split",
    "metric": "--metric",
    "seed": "--seed",
    "nfe_cap": "--nfe-cap",
    "fe_cap": "--fe-cap",
}
_BINDING_ADDED = {"fe_cap": None}
"""Binding keys added after studies were first written, with the value an older study had (no FE
cap existed, so a study that records none was run without one)."""
_FINISHED = ("COMPLETE", "PRUNED")
STALE_NOTE = (
    "interrupted: its tune process ended before the trial finished; closed as FAIL by the next "
    "tune of this folder and not counted toward the budget"
)


@contextlib.contextmanager
def tune_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.lock`` (``flock``, non-blocking, released by the kernel when the process
    ends) for a whole tune; the holder's pid is written into the file for the refusal message."""
    try:
        # held open for the whole tune (the flock lives on it)
        f = open(out_dir / LOCK_NAME, "a+")  # noqa: SIM115
    except OSError as e:
        raise TuneError(f"--out {out_dir}: cannot open its lock file ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read(32).strip()
            by = f" by pid {pid}" if pid.isdigit() else ""
            raise TuneError(
                f"{out_dir}: another invbench tune is writing this tune folder (lock held{by}); "
                "wait for it to end or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


def open_study(out_dir: Path, binding: dict, log):
    """Load (or create) the study of ``out_dir`` under the lock: check its binding, close trials
    left RUNNING by a killed tune (FAIL, with a note) and return it."""
    import optuna

    path = out_dir / "study.sqlite3"
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    except Exception as e:  # noqa: BLE001 - an unreadable or foreign file is a bad --out
        raise TuneError(f"{path}: cannot open the tune study ({type(e).__name__}: {e})") from None
    try:
        study_id = storage.get_study_id_from_name(STUDY_NAME)
    except KeyError:
        study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], STUDY_NAME)
    attrs = storage.get_study_user_attrs(study_id)
    has_trials = bool(storage.get_all_trials(study_id, deepcopy=False))
    for key in BINDING:
        if not has_trials:  # an empty study (a tune killed at its start): nothing to keep
            storage.set_study_user_attr(study_id, key, binding[key])
        elif key not in attrs and key in _BINDING_ADDED:
            if binding[key] != _BINDING_ADDED[key]:
                raise TuneError(
                    f"{out_dir}: holds a tune study of {_BINDING_NAMES[key]} "
                    f"{_BINDING_ADDED[key]!r}, not {binding[key]!r}; rerun with the study's "
                    "settings or choose another --out"
                )
        elif key not in attrs:
            raise TuneError(
                f"{out_dir}: holds a tune study that records no {_BINDING_NAMES[key]} "
                "(written by an "
                "older invbench): it cannot be continued safely; choose another --out"
            )
        elif attrs[key] != binding[key]:
            raise TuneError(
                f"{out_dir}: holds a tune study of {_BINDING_NAMES[key]} {attrs[key]!r}, not "
                f"{binding[key]!r}; rerun with the study's settings or choose another --out"
            )
    stale = storage.get_all_trials(
        study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
    )
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "note", STALE_NOTE)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    if stale:
        log(
            f"tune: closed {len(stale)} trial(s) left running by an interrupted tune "
            f"(#{', #'.join(str(t.number) for t in stale)}: marked FAIL, not counted)"
        )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def finished(study) -> list:
    """The COMPLETE and PRUNED trials: those that count toward the budget."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED]


def spent(trials: list) -> float:
    return sum(t.user_attrs.get("nfe_trial", 0.0) for t in trials)


def _sampler(seed: int, n_finished: int):
    """TPE seeded from ``(seed, finished trials)``: each trial's draw is a function of the seed and
    the study so far, so a resumed study neither repeats its startup trials nor differs from an
    uninterrupted one (TPE's own startup count reads the stored trials)."""
    import optuna

    return optuna.samplers.TPESampler(seed=derive_seed("tune", "sampler", seed, n_finished) % 2**32)


def _idle_run(trials: list) -> int:
    """How many of the last finished trials in a row spent no network evaluation."""
    n = 0
    for t in reversed(trials):
        if t.user_attrs.get("nfe_trial", 0.0) > 0:
            break
        n += 1
    return n


def search(
    study,
    objective,
    seed: int,
    budget_trials: int | None,
    budget_nfe: float | None,
    cap_label: str | None,
    log,
) -> None:
    """Run trials one by one until the budget is reached (stale and failed trials not counted)."""
    while True:
        done = finished(study)
        if budget_trials is not None and len(done) >= budget_trials:
            return
        if budget_nfe is not None:
            if spent(done) >= budget_nfe:
                return
            if _idle_run(done) >= MAX_IDLE_TRIALS:
                why = f"each above {cap_label}" if cap_label else "no NFE per solve"
                msg = (
                    f"the last {MAX_IDLE_TRIALS} trials in a row spent no network evaluations "
                    f"({why}); "
                    "--budget-nfe cannot be reached"
                )
                if not any(t.state.name == "COMPLETE" for t in done):
                    raise TuneError(
                        f"no trial completed: {msg}; raise --nfe-cap or use --budget-trials"
                    )
                log(f"tune: stopped: {msg}")
                return
        study.sampler = _sampler(seed, len(done))
        study.optimize(objective, n_trials=1)


__all__ = [
    "BINDING",
    "LOCK_NAME",
    "MAX_IDLE_TRIALS",
    "STALE_NOTE",
    "STUDY_NAME",
    "finished",
    "open_study",
    "search",
    "spent",
    "tune_lock",
]
