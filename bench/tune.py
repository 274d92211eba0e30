"""``invbench tune``: a seeded Optuna (TPE) search of one solver's ``SEARCH_SPACE`` on the
validation split of an experiment's datasets, resumable from an SQLite file in the tune folder.

Only datasets with a validation/test distinction can be tuned on (``bundled`` crops and
``digits``); every dataset is rebuilt with ``split = "validation"`` and each evaluated image is
checked against the sha256 of the images of the test split before it is solved. Scores are the
mean of ``metric`` (PSNR in dB, pixel units [0, 1]) over tasks x validation images; the cost of a
trial is counted in network evaluations (NFE, the solver's own estimate per solve) or, under
``fe_cap``, in forward-equivalents (FE = NFE + VJP per solve, measured under
:class:`invbench.priors.CountingPrior`); every trial records the NFE and VJP it spent.

This module holds the entry :func:`tune`, the validation problems, the objective and the preset
document; what a setting costs and how a cap shapes the search is :mod:`.tune_cost`, the Optuna
study (binding, lock, resuming, sampler, search loop) :mod:`.tune_study`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from invbench.bench import config as config_mod
from invbench.bench import datasets as datasets_mod
from invbench.bench.problem import build_problem, solve_and_score
from invbench.bench.run import code_version, nfe_per_image

from .tune_cost import (
    FE_CACHE_NAME,
    Caps,
    FeMeter,
    check_nfe_cap,
    fe_setup,
    fit_steps,
    measure_counts,
    suggest_within_cap,
)
from .tune_study import (
    MAX_IDLE_TRIALS,
    STALE_NOTE,
    STUDY_NAME,
    finished,
    open_study,
    search,
    spent,
    tune_lock,
)
from .tune_types import Case, TuneError

SPLIT_TYPES = ("bundled", "digits")

TUNE_PART = "tune"
"""The data and solver parts of a tuning problem's seeds
(:func:`invbench.bench.problem.build_problem`): one draw per (task, dataset, image), whatever
the study's ``--seed``."""


@dataclass
class TuneResult:
    best_params: dict
    best_value: float
    values: list[float]
    n_trials: int
    nfe_total: float
    evaluated: list[dict] = field(default_factory=list)
    preset_path: Path | None = None


def image_sha256(x: torch.Tensor) -> str:
    """sha256 of an image tensor's float64 bytes (pixel units)."""
    return hashlib.sha256(
        x.detach().to(torch.float64).contiguous().cpu().numpy().tobytes()
    ).hexdigest()


def split_spec(spec: dict, split: str) -> dict:
    """``spec`` rebuilt on ``split``; :class:`TuneError` for a dataset type without splits."""
    if spec.get("type") not in SPLIT_TYPES:
        raise TuneError(
            f"dataset {spec.get('name')!r}: type {spec.get('type')!r} has no validation split "
            f"(tune needs one of {', '.join(SPLIT_TYPES)})"
        )
    return {**spec, "split": split}


def test_split_hashes(spec: dict, base_dir: str) -> set[str]:
    """sha256 of every image of the dataset's test split (the images tuning must never see).
    For ``bundled`` crops, all crops of the test images at the spec's size and seed."""
    test = dict(split_spec(spec, "test"))
    test.pop("limit", None)
    ds = datasets_mod.build(test, base_dir)
    return {image_sha256(ds.get(i)) for i in range(len(ds))}


def manifest_sha256(source: dict) -> str:
    """sha256 of a dataset's source record (split, image names, rule): pins what was tuned on."""
    return hashlib.sha256(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()


def _problems(exp, solver_cls, base_dir: str) -> tuple[list[Case], dict]:
    from invbench import priors

    probs: list[Case] = []
    manifests: dict[str, str] = {}
    for dspec in exp.datasets:
        spec = split_spec(dspec.build_spec(), "validation")
        try:
            ds = datasets_mod.build(spec, base_dir)
        except datasets_mod.DatasetError as e:
            raise TuneError(f"dataset {dspec.name!r}: {e}") from None
        src = ds.source()
        if src.get("split") != "validation":
            raise TuneError(
                f"dataset {dspec.name!r}: built split {src.get('split')!r}, not 'validation'"
            )
        forbidden = test_split_hashes(dspec.build_spec(), base_dir)
        manifests[dspec.name] = manifest_sha256(src)
        pspecs = [p for p in exp.priors if p.datasets is None or dspec.name in p.datasets]
        for ps in pspecs:
            prior = priors.build(ps.name, **ps.build_kwargs())
            for t in exp.tasks:
                for i in range(len(ds)):
                    h = image_sha256(ds.get(i))
                    if h in forbidden:
                        raise TuneError(
                            f"dataset {dspec.name!r}: image {ds.ids[i]} is in the test split"
                        )
                    pb = build_problem(
                        t,
                        dspec.name,
                        ds.ids[i],
                        ds.get(i),
                        TUNE_PART,
                        TUNE_PART,
                        device="cpu",
                        dtype=torch.float64,
                    )
                    probs.append(Case(pb, prior, h))
    if not probs:
        raise TuneError("no validation problems: the experiment pairs no prior with its datasets")
    return probs, manifests


def _check_args(
    metric: str,
    budget_trials: int | None,
    budget_nfe: float | None,
    nfe_cap: float | None,
    fe_cap: float | None,
    seed: int,
) -> int | None:
    """Check the numeric and metric arguments; return the trial budget (20 when none is given)."""
    if metric != "psnr":
        raise TuneError(f"--metric: only 'psnr' is supported, got {metric!r}")
    if budget_trials is not None and budget_nfe is not None:
        raise TuneError("give only one of --budget-trials N or --budget-nfe M")
    if budget_trials is None and budget_nfe is None:
        budget_trials = 20
    if budget_trials is not None and budget_trials < 1:
        raise TuneError(f"--budget-trials must be >= 1, got {budget_trials}")
    if budget_nfe is not None and not (math.isfinite(budget_nfe) and budget_nfe > 0):
        raise TuneError(f"--budget-nfe must be a finite number > 0, got {budget_nfe}")
    if nfe_cap is not None and not nfe_cap > 0:
        raise TuneError(f"--nfe-cap must be > 0, got {nfe_cap}")
    if fe_cap is not None and not (math.isfinite(fe_cap) and fe_cap > 0):
        raise TuneError(f"--fe-cap must be a finite number > 0, got {fe_cap}")
    if nfe_cap is not None and fe_cap is not None:
        raise TuneError("give only one of --nfe-cap C or --fe-cap C")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise TuneError(f"--seed must be an integer >= 0 and < 2**63, got {seed}")
    return budget_trials


def _check_out(out_dir: Path) -> None:
    """``out_dir`` must be a folder or creatable as one: no file at it or at any of its parents."""
    p = out_dir
    while True:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "it is" if p == out_dir else f"{p} is"
                raise TuneError(
                    f"--out {out_dir}: cannot be a tune folder ({what} not a directory)"
                )
            return
        if p.parent == p:
            return
        p = p.parent


def _solver_class(solver: str):
    """The registered solver class to tune; :class:`TuneError` for an unknown one or one that
    declares nothing to search."""
    from invbench import solvers

    try:
        cls = solvers.get(solver)
    except solvers.SolverError as e:
        raise TuneError(f"--solver: {e}") from None
    if not cls.SEARCH_SPACE:
        raise TuneError(f"--solver: {solver!r} declares no SEARCH_SPACE (nothing to tune)")
    return cls


def _load_experiment(config_path: str | Path, sets: list[str] | None):
    try:
        return config_mod.load(Path(config_path), sets or [])  # refuses a missing file, a folder
    except config_mod.ConfigError as e:
        raise TuneError(str(e)) from None



def shown_config_path(path: Path) -> str:
    """The config's path as a preset file records it: relative to the source tree when inside it,
    else the file name (the content is pinned by ``config_hash``); never a machine's own folders."""
    root = Path(__file__).resolve().parents[1]
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def tune(
    config_path: str | Path,
    solver: str,
    *,
    budget_trials: int | None = None,
    budget_nfe: float | None = None,
    nfe_cap: float | None = None,
    fe_cap: float | None = None,
    metric: str = "psnr",
    out: str | Path | None = None,
    seed: int = 0,
    sets: list[str] | None = None,
    log=print,
) -> TuneResult:
    """Run (or resume) the search; write ``out/study.sqlite3``, ``out/evaluated_images.jsonl`` and
    ``out/preset.toml``. All inputs are checked before anything is written; the study is bound to
    the solver, config hash, split, metric, seed and caps, and locked while this call runs.
    ``fe_cap`` caps forward-equivalents per solve (NFE + VJP, measured; the step count is fitted
    to it), ``nfe_cap`` network evaluations (estimated); give at most one."""
    import optuna

    budget_trials = _check_args(metric, budget_trials, budget_nfe, nfe_cap, fe_cap, seed)
    cls = _solver_class(solver)
    exp = _load_experiment(config_path, sets)
    out_dir = Path(out) if out else Path("runs") / f"tune-{exp.name}-{solver}"
    _check_out(out_dir)
    spec = next((s for s in exp.solvers if s.name == solver), None)
    fixed = dict(spec.overrides) if spec else {}
    base_preset = spec.preset if spec and spec.preset in cls.PRESETS else "default"
    check_nfe_cap(cls, base_preset, fixed, nfe_cap, solver)
    probs, manifests = _problems(exp, cls, exp.base_dir)
    caps = Caps(nfe=nfe_cap, fe=fe_cap)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or e
        raise TuneError(f"--out {out_dir}: cannot create the tune folder ({why})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    binding = {"solver": solver, "config_hash": exp.config_hash, "split": "validation",
               "metric": metric, "seed": seed, "nfe_cap": nfe_cap, "fe_cap": fe_cap}
    with tune_lock(out_dir):   # before the FE fit: it reads and writes the folder's FE cache
        if fe_cap is not None:
            fixed, caps.meter = fe_setup(cls, base_preset, fixed, fe_cap, probs, out_dir, solver, log)
        study = open_study(out_dir, binding, log)
        if caps.meter is not None:
            caps.meter.attach(out_dir / FE_CACHE_NAME)
        return _run_study(
            study, out_dir, cls, solver, base_preset, fixed, probs, manifests, exp,
            Path(config_path),
            budget_trials=budget_trials,
            budget_nfe=budget_nfe,
            caps=caps,
            metric=metric,
            seed=seed,
            log=log,
        )


def _solve_cases(s, cases: list[Case], trial, fh) -> tuple[list[float], float, float]:
    """Solve each validation problem alone under a counting prior and log it; return the scores
    and the NFE and VJP spent. A diverging solve prunes the trial (the reason and what it spent
    kept as user attributes: TPE ranks it below every completed trial; it counts as a trial)."""
    import optuna
    from invbench.priors import CountingPrior

    from invbench import solvers

    scores: list[float] = []
    nfe = vjp = 0.0
    for c in cases:
        p = c.problem
        counting = CountingPrior(c.prior)
        s.validate(counting)
        try:
            scores += solve_and_score(s, [p], counting).psnr
        except solvers.SolverDiverged as e:
            _record_spent(trial, nfe + counting.nfe, vjp + counting.vjp, len(scores) + 1)
            trial.set_user_attr("diverged", f"{p.image_id}: {e}")
            raise optuna.TrialPruned(f"diverged on {p.image_id}: {e}") from None
        nfe, vjp = nfe + counting.nfe, vjp + counting.vjp
        row = {"trial": trial.number, "dataset": p.dataset, "image_id": p.image_id,
               "image_sha256": c.image_sha256, "task": p.task}
        fh.write(json.dumps(row) + "\n")
    return scores, nfe, vjp


def _record_spent(trial, nfe: float, vjp: float, solves: int) -> None:
    """What a trial spent, as counted: totals and per solve (``fe`` = NFE + VJP)."""
    trial.set_user_attr("nfe_trial", float(nfe))
    trial.set_user_attr("fe_trial", float(nfe + vjp))
    trial.set_user_attr("solves", solves)
    trial.set_user_attr("nfe_measured_per_solve", nfe / solves)
    trial.set_user_attr("vjp_measured_per_solve", vjp / solves)
    trial.set_user_attr("fe_measured_per_solve", (nfe + vjp) / solves)


def _objective(cls, base_preset: str, fixed: dict, caps: Caps, cases: list[Case], log_path: Path):
    """The study's objective: one trial's mean PSNR over the validation problems (each solved
    alone, by :func:`invbench.bench.problem.solve_and_score`); every evaluated image is logged.
    A setting above the cap is pruned before solving (its cost estimated: the solver's NFE, or
    the FE measured for its integer and categorical values); one whose measured FE per solve
    exceeds ``--fe-cap`` is pruned after (what it spent is kept)."""
    import optuna

    def objective(trial) -> float:
        probe0 = caps.meter.seconds if caps.meter is not None else 0.0
        params = suggest_within_cap(trial, cls, base_preset, fixed, caps.value, caps.cost_of())
        kwargs = {**fixed, **params}
        s = cls.from_preset(base_preset, **kwargs)
        nfe = nfe_per_image(s)
        trial.set_user_attr("nfe_per_solve", nfe)
        est = nfe if caps.fe is None else caps.meter.fe(kwargs)
        if caps.fe is not None:
            trial.set_user_attr("fe_per_solve_estimate", est)
            trial.set_user_attr("fe_probe_s", caps.meter.seconds - probe0)
        if caps.value is not None and est > caps.value:
            trial.set_user_attr("nfe_trial", 0.0)
            trial.set_user_attr("fe_trial", 0.0)
            raise optuna.TrialPruned(f"cost per solve {est:g} > {caps.label}")
        with log_path.open("a") as fh:
            scores, spent_nfe, spent_vjp = _solve_cases(s, cases, trial, fh)
        _record_spent(trial, spent_nfe, spent_vjp, len(cases))
        fe_solve = (spent_nfe + spent_vjp) / len(cases)
        if caps.fe is not None and fe_solve > caps.fe * (1 + 1e-9):
            raise optuna.TrialPruned(f"measured FE per solve {fe_solve:g} > {caps.label}")
        return statistics.fmean(scores)

    return objective


def _preset_doc(
    study,
    cls,
    solver: str,
    base_preset: str,
    fixed: dict,
    metric: str,
    seed: int,
    budget: dict,
    wall: float,
    provenance: dict,
) -> dict:
    """The ``preset.toml`` document of the study's best trial and how it was found."""
    import optuna

    done = finished(study)
    values = [t.value for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial
    return {
        "tuned": {
            "solver": solver,
            "base_preset": base_preset,
            "params": {**fixed, **best.params},
            "metric": metric,
            "best": best.value,
            "seed": seed,
            "scores": {
                "n": len(values),
                "min": min(values),
                "median": statistics.median(values),
                "max": max(values),
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            },
            "budget": {k: v for k, v in budget.items() if v is not None},
            "nfe_spent": spent(done),
            "fe_spent": sum(t.user_attrs.get("fe_trial", 0.0) for t in done),
            "nfe_per_solve": best.user_attrs.get("nfe_per_solve"),
            "measured_per_solve": {
                k: best.user_attrs.get(f"{k}_measured_per_solve") for k in ("nfe", "vjp", "fe")
            },
            "trials_diverged": sum("diverged" in t.user_attrs for t in done),
            "trials_interrupted": sum(
                t.user_attrs.get("note") == STALE_NOTE for t in study.get_trials(deepcopy=False)
            ),
            "wall_s_this_call": round(wall, 3),
            **provenance,
            "search_space": {k: p.as_dict() for k, p in cls.SEARCH_SPACE.items()},
            "sampler": f"optuna {optuna.__version__} TPESampler(seed derived from seed {seed} "
            "and the number "
            "of finished trials)",
        }
    }


def _run_study(
    study,
    out_dir: Path,
    cls,
    solver: str,
    base_preset: str,
    fixed: dict,
    probs: list[Case],
    manifests: dict,
    exp,
    cpath: Path,
    *,
    budget_trials: int | None,
    budget_nfe: float | None,
    caps: Caps,
    metric: str,
    seed: int,
    log,
) -> TuneResult:
    """Search up to the budget in the locked ``out_dir`` and write ``preset.toml``."""
    import optuna

    objective = _objective(cls, base_preset, fixed, caps, probs, out_dir / "evaluated_images.jsonl")
    t0 = time.perf_counter()
    search(study, objective, seed, budget_trials, budget_nfe, caps.label, log)
    wall = time.perf_counter() - t0
    done = finished(study)
    values = [t.value for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    if not values:
        raise TuneError("no trial completed (every trial exceeded its cap or diverged)")
    best = study.best_trial
    budget = {"trials": budget_trials, "nfe_total": budget_nfe, "nfe_cap_per_solve": caps.nfe,
              "fe_cap_per_solve": caps.fe}
    provenance = {
        "split": "validation",
        "manifest_sha256": manifests,
        "n_problems": len(probs),
        "config": shown_config_path(cpath),
        "config_hash": exp.config_hash,
        "code_version": code_version(),
    }
    doc = _preset_doc(
        study, cls, solver, base_preset, fixed, metric, seed, budget, wall, provenance
    )
    preset_path = out_dir / "preset.toml"
    tmp = preset_path.with_suffix(".toml.tmp")
    tmp.write_text(config_mod.to_toml(doc))
    os.replace(tmp, preset_path)
    log(
        f"tune {solver}: {len(values)} trials, best {metric} {best.value:.3f} with {best.params}; "
        f"wrote {preset_path}"
    )
    return TuneResult(
        dict(best.params), best.value, values, len(values), spent(done), [], preset_path
    )


__all__ = [
    "FE_CACHE_NAME",
    "MAX_IDLE_TRIALS",
    "STUDY_NAME",
    "FeMeter",
    "TuneError",
    "TuneResult",
    "fit_steps",
    "image_sha256",
    "manifest_sha256",
    "measure_counts",
    "split_spec",
    "suggest_within_cap",
    "test_split_hashes",
    "tune",
]
