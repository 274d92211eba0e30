"""``invbench tune``: a seeded Optuna (TPE) search of one solver's ``SEARCH_SPACE`` on the
validation split of an experiment's datasets, resumable from an SQLite file in the tune folder.

Only datasets with a validation/test distinction can be tuned on (``bundled`` crops and
``digits``); every dataset is rebuilt with ``split = "validation"`` and each evaluated image is
checked against the sha256 of the images of the test split before it is solved. Scores are the
mean of ``metric`` (PSNR in dB, pixel units [0, 1]) over tasks x validation images; the cost of a
trial is counted in network evaluations (NFE, the solver's own estimate per solve) or, under
``fe_cap``, in forward-equivalents (FE = NFE + VJP per solve, measured under
:class:`invbench.priors.CountingPrior`); every trial records the NFE and VJP it spent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from invbench.bench import config as config_mod
from invbench.bench import datasets as datasets_mod
from invbench.bench.problem import Problem, build_problem, derive_seed, solve_and_score
from invbench.bench.run import code_version, nfe_per_image

SPLIT_TYPES = ("bundled", "digits")
STUDY_NAME = "invbench-tune"


class TuneError(ValueError):
    """Bad tune input; ``str(e)`` is one line naming the field or file."""


TUNE_PART = "tune"
"""The data and solver parts of a tuning problem's seeds
(:func:`invbench.bench.problem.build_problem`): one draw per (task, dataset, image), whatever
the study's ``--seed``."""


@dataclass
class _Case:
    """One validation problem of the study and the prior it is solved with."""

    problem: Problem  # float64 on the CPU
    prior: object
    image_sha256: str


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


def _problems(exp, solver_cls, base_dir: str) -> tuple[list[_Case], dict]:
    from invbench import priors

    probs: list[_Case] = []
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
                    probs.append(_Case(pb, prior, h))
    if not probs:
        raise TuneError("no validation problems: the experiment pairs no prior with its datasets")
    return probs, manifests


def suggest_within_cap(
    trial, cls, base_preset: str, fixed: dict, nfe_cap: float | None, cost_of=None
) -> dict:
    """Draw the solver's ``SEARCH_SPACE`` for one trial. Under a cap, an integer parameter
    that changes the cost (VML-MAP's N and K) is drawn from its range cut at the largest value that
    keeps one solve within the cap, the parameters drawn after it at their lower bounds: the cap
    shapes the space instead of discarding most trials. Parameters are drawn in declaration order.
    A trial whose lower bounds already exceed the cap is drawn unchanged (and pruned by the
    caller). ``cost_of(kwargs)`` is the cost of one solve of the setting ``kwargs`` (the preset's
    values overridden); by default its NFE (``nfe_per_image``), under ``fe_cap`` its measured FE."""
    space = cls.SEARCH_SPACE
    names = list(space)
    params: dict = {}
    if cost_of is None:
        def cost_of(kw: dict) -> float:
            return nfe_per_image(cls.from_preset(base_preset, **kw))

    def cost(trial_params: dict) -> float:
        rest = {k: space[k].low for k in names if k not in trial_params and space[k].kind == "int"}
        return cost_of({**fixed, **rest, **trial_params})

    for k in names:
        p = space[k]
        if nfe_cap is None or p.kind != "int" or cost({**params, k: int(p.low)}) > nfe_cap:
            params[k] = p.suggest(trial, k)
            continue
        lo, hi = int(p.low), int(p.high)
        if cost({**params, k: hi}) > nfe_cap:  # largest value within the cap (cost grows with it)
            a, b = lo, hi
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if cost({**params, k: mid}) <= nfe_cap else (a, mid)
            hi = a
        params[k] = trial.suggest_int(k, lo, hi, log=p.log)
    return params


FE_CACHE_NAME = "fe_per_setting.json"
STEP_FIELDS = ("steps", "anneal_steps")
"""The integer parameter that sets a solver's cost when its search space has none: under
``fe_cap`` it is set to the largest value whose measured FE per solve fits the cap."""


def measure_counts(solver, case: _Case) -> tuple[float, float]:
    """(NFE, VJP) of one solve of ``case`` by ``solver``, counted by
    :class:`invbench.priors.CountingPrior`. A solve that diverges is extrapolated to the solver's
    NFE estimate at the VJP/NFE ratio counted until it stopped."""
    from invbench.priors import CountingPrior

    from invbench import solvers

    counting = CountingPrior(case.prior)
    solver.validate(counting)
    try:
        solve_and_score(solver, [case.problem], counting)
    except solvers.SolverDiverged:
        nfe = nfe_per_image(solver)
        return nfe, (counting.vjp / counting.nfe * nfe if counting.nfe else 0.0)
    return float(counting.nfe), float(counting.vjp)


class FeMeter:
    """Forward-equivalents (NFE + VJP) per solve of a solver's settings, measured by solving one
    validation problem under the counting prior. A setting's key leaves out the continuous
    parameters of the search space (they do not change the count), so one measurement serves
    every trial with the same integer and categorical values. The cache is kept in
    ``FE_CACHE_NAME`` of the tune folder once :meth:`attach` names it."""

    def __init__(self, cls, base_preset: str, case: _Case) -> None:
        self.cls, self.base_preset, self.case = cls, base_preset, case
        self.floats = {k for k, p in cls.SEARCH_SPACE.items() if p.kind == "float"}
        self.cache: dict[str, list[float]] = {}
        self.path: Path | None = None
        self.seconds = 0.0  # wall time spent measuring (solves outside the trials' scores)

    def load(self, path: Path) -> None:
        """Read what an earlier tune of the folder measured (nothing when absent or unreadable)."""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            old = json.loads(path.read_text())
            self.cache = {**{str(k): [float(x) for x in v] for k, v in old.items()}, **self.cache}

    def attach(self, path: Path) -> None:
        """Keep the cache in ``path`` from now on (merged with what it holds)."""
        self.load(path)
        self.path = path
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.cache, sort_keys=True, indent=1) + "\n")
            os.replace(tmp, self.path)

    def counts(self, kwargs: dict) -> tuple[float, float]:
        """(NFE, VJP) per solve of the setting ``kwargs``; ``(inf, 0)`` for an invalid one."""
        from invbench import solvers

        kw = {k: v for k, v in kwargs.items() if k not in self.floats}
        key = json.dumps(kw, sort_keys=True, default=str)
        if key not in self.cache:
            t0 = time.perf_counter()
            try:
                s = self.cls.from_preset(self.base_preset, **kw)
                self.cache[key] = list(measure_counts(s, self.case))
            except (solvers.SolverError, ValueError):
                return math.inf, 0.0
            finally:
                self.seconds += time.perf_counter() - t0
            self._save()
        nfe, vjp = self.cache[key]
        return nfe, vjp

    def fe(self, kwargs: dict) -> float:
        """Forward-equivalents per solve of the setting ``kwargs``."""
        return sum(self.counts(kwargs))


def step_field(cls, fixed: dict) -> str | None:
    """The step-count field the cap sets (:data:`STEP_FIELDS`), or None when the search space
    holds integer parameters (they are shaped instead) or explicit ``sigmas`` fix the levels."""
    import dataclasses

    if any(p.kind == "int" for p in cls.SEARCH_SPACE.values()) or fixed.get("sigmas"):
        return None
    names = {f.name for f in dataclasses.fields(cls.Params)}
    return next((f for f in STEP_FIELDS if f in names), None)


def fit_steps(cls, fixed: dict, fe_cap: float, meter: FeMeter, solver: str) -> dict:
    """``fixed`` with the solver's step count set to the largest whose measured FE per solve is
    within ``fe_cap`` (FE grows with it; at least one NFE per step, so it is at most the cap);
    :class:`TuneError` when no step count fits."""
    name = step_field(cls, fixed)
    if name is None:
        return dict(fixed)

    def fits(v: int) -> bool:
        return meter.fe({**fixed, name: v}) <= fe_cap

    lo = next((v for v in (1, 2, 3) if fits(v)), None)
    if lo is None:
        raise TuneError(
            f"--fe-cap {fe_cap:g}: no {name} of {solver} fits (the cheapest measured costs "
            f"{min(meter.fe({**fixed, name: v}) for v in (1, 2, 3)):g} forward-equivalents "
            "per solve)"
        )
    a, b = lo, max(lo, int(fe_cap))
    if fits(b):
        return {**fixed, name: b}
    while b - a > 1:
        mid = (a + b) // 2
        a, b = (mid, b) if fits(mid) else (a, mid)
    return {**fixed, name: a}


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
_STALE_NOTE = (
    "interrupted: its tune process ended before the trial finished; closed as FAIL by the next "
    "tune of this folder and not counted toward the budget"
)


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


def _check_cap(cls, base_preset: str, fixed: dict, nfe_cap: float | None, solver: str) -> None:
    """Refuse a cap below the cheapest setting of the search space (its integer parameters at their
    lower bounds, the rest as in the preset and overrides): every trial would be pruned."""
    if nfe_cap is None:
        return
    low = {k: p.low for k, p in cls.SEARCH_SPACE.items() if p.kind == "int"}
    cheapest = nfe_per_image(cls.from_preset(base_preset, **{**fixed, **low}))
    if cheapest > nfe_cap:
        raise TuneError(
            f"--nfe-cap {nfe_cap:g}: the cheapest setting of {solver}'s search space costs "
            f"{cheapest:g} "
            f"network evaluations per solve (with the config's overrides); nothing to try"
        )


@contextlib.contextmanager
def _tune_lock(out_dir: Path) -> Iterator[None]:
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


def _open_study(out_dir: Path, binding: dict, log):
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
        storage.set_trial_user_attr(trial_id, "note", _STALE_NOTE)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    if stale:
        log(
            f"tune: closed {len(stale)} trial(s) left running by an interrupted tune "
            f"(#{', #'.join(str(t.number) for t in stale)}: marked FAIL, not counted)"
        )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def _finished(study) -> list:
    """The COMPLETE and PRUNED trials: those that count toward the budget."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED]


def _spent(trials: list) -> float:
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


def _search(
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
        done = _finished(study)
        if budget_trials is not None and len(done) >= budget_trials:
            return
        if budget_nfe is not None:
            if _spent(done) >= budget_nfe:
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


@dataclass
class _Caps:
    """The per-solve cap of a study: in NFE (estimated) or in FE (measured by ``meter``)."""

    nfe: float | None = None
    fe: float | None = None
    meter: FeMeter | None = None

    @property
    def value(self) -> float | None:
        return self.fe if self.fe is not None else self.nfe

    @property
    def label(self) -> str | None:
        if self.fe is not None:
            return f"--fe-cap {self.fe:g}"
        return f"--nfe-cap {self.nfe:g}" if self.nfe is not None else None

    def cost_of(self):
        """The cost function :func:`suggest_within_cap` shapes the space with."""
        return self.meter.fe if self.fe is not None and self.meter is not None else None


def _load_experiment(config_path: str | Path, sets: list[str] | None):
    try:
        return config_mod.load(Path(config_path), sets or [])  # refuses a missing file, a folder
    except config_mod.ConfigError as e:
        raise TuneError(str(e)) from None


def _fe_setup(cls, base_preset: str, fixed: dict, fe_cap: float, probs: list[_Case],
              out_dir: Path, solver: str, log) -> tuple[dict, FeMeter]:
    """Under ``fe_cap``: the FE meter (on the first validation problem, reading the folder's
    cache) and ``fixed`` with the step count fitted to the cap; the cheapest setting of the
    search space must fit (:class:`TuneError` otherwise, before anything is written)."""
    meter = FeMeter(cls, base_preset, probs[0])
    meter.load(out_dir / FE_CACHE_NAME)
    fitted = fit_steps(cls, fixed, fe_cap, meter, solver)
    name = step_field(cls, fixed)
    if name is not None and fitted.get(name) != fixed.get(name):
        nfe, vjp = meter.counts(fitted)
        log(f"tune {solver}: --fe-cap {fe_cap:g} sets {name} = {fitted[name]} "
            f"({nfe:g} NFE + {vjp:g} VJP per solve, measured)")
    low = {k: p.low for k, p in cls.SEARCH_SPACE.items() if p.kind == "int"}
    cheapest = meter.fe({**fitted, **low})
    if cheapest > fe_cap:
        raise TuneError(
            f"--fe-cap {fe_cap:g}: the cheapest setting of {solver}'s search space costs "
            f"{cheapest:g} forward-equivalents (NFE + VJP) per solve, measured; nothing to try"
        )
    return fitted, meter


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
    _check_cap(cls, base_preset, fixed, nfe_cap, solver)
    probs, manifests = _problems(exp, cls, exp.base_dir)
    caps = _Caps(nfe=nfe_cap, fe=fe_cap)
    if fe_cap is not None:
        fixed, caps.meter = _fe_setup(cls, base_preset, fixed, fe_cap, probs, out_dir, solver, log)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or e
        raise TuneError(f"--out {out_dir}: cannot create the tune folder ({why})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    binding = {"solver": solver, "config_hash": exp.config_hash, "split": "validation",
               "metric": metric, "seed": seed, "nfe_cap": nfe_cap, "fe_cap": fe_cap}
    with _tune_lock(out_dir):
        study = _open_study(out_dir, binding, log)
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


def _solve_cases(s, cases: list[_Case], trial, fh) -> tuple[list[float], float, float]:
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


def _objective(cls, base_preset: str, fixed: dict, caps: _Caps, cases: list[_Case], log_path: Path):
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

    done = _finished(study)
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
            "nfe_spent": _spent(done),
            "fe_spent": sum(t.user_attrs.get("fe_trial", 0.0) for t in done),
            "nfe_per_solve": best.user_attrs.get("nfe_per_solve"),
            "measured_per_solve": {
                k: best.user_attrs.get(f"{k}_measured_per_solve") for k in ("nfe", "vjp", "fe")
            },
            "trials_diverged": sum("diverged" in t.user_attrs for t in done),
            "trials_interrupted": sum(
                t.user_attrs.get("note") == _STALE_NOTE for t in study.get_trials(deepcopy=False)
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
    probs: list[_Case],
    manifests: dict,
    exp,
    cpath: Path,
    *,
    budget_trials: int | None,
    budget_nfe: float | None,
    caps: _Caps,
    metric: str,
    seed: int,
    log,
) -> TuneResult:
    """Search up to the budget in the locked ``out_dir`` and write ``preset.toml``."""
    import optuna

    objective = _objective(cls, base_preset, fixed, caps, probs, out_dir / "evaluated_images.jsonl")
    t0 = time.perf_counter()
    _search(study, objective, seed, budget_trials, budget_nfe, caps.label, log)
    wall = time.perf_counter() - t0
    done = _finished(study)
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
        "config": str(cpath),
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
        dict(best.params), best.value, values, len(values), _spent(done), [], preset_path
    )


__all__ = [
    "FeMeter",
    "TuneError",
    "TuneResult",
    "fit_steps",
    "image_sha256",
    "manifest_sha256",
    "measure_counts",
    "split_spec",
    "test_split_hashes",
    "tune",
]
