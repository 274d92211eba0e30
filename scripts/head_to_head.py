"""The head-to-head study (docs/head-to-head.md): every solver tuned per task, prior and budget in
forward-equivalents (FE = NFE + VJP per solve) on validation crops, then run on held-out test crops
next to its released preset, under ``small-cpu`` and its exact twin ``gmm-crops32``.

Usage: python scripts/head_to_head.py PHASE [--work DIR] [options]

Phases (each skips what is done and resumes what a killed call left):

* ``tune``: ``invbench.bench.tune.tune`` for every solver x task x prior x budget (FE cap per
  solve), ``--trials`` TPE trials each, the same ``--seed``, on ``--val-crops`` validation crops;
  each study in its own folder ``WORK/tune/<prior>/<task>/fe<B>/<solver>/``.
* ``presets``: collects each ``preset.toml`` with its provenance (study, budget, trials,
  validation score) into ``WORK/presets/`` (``presets.json``, ``presets.md``, a copy of each file).
* ``run``: checks by sha256 that no test crop was evaluated in any tuning study, then runs the
  config's released presets and the tuned ones on the test crops (the config's seeds), one run
  per prior and task in ``WORK/run/<prior>/<task>/`` (``invbench run --resume``).
* ``report``: ``invbench report`` of each run into ``WORK/report/<prior>/<task>/``.
* ``plan``: measures the wall time per FE of each solver on this machine (``--plan-trials``
  trials on 2 validation crops; a short test-split run) and projects the whole study's CPU time
  into ``WORK/plan/plan.json`` and ``plan.md``. Run it with ``OMP_NUM_THREADS=1``.
* ``all``: tune, presets, run, report.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "head-to-head"
TASKS = ("inpaint_random-50", "sr4_avgpool", "deblur_uniform", "denoise")
PRIORS = {"small-cpu": "", "gmm-crops32": "-gmm"}  # prior -> config file suffix
SOLVERS = ("dps", "ddrm", "pigdm", "diffpir", "reddiff", "daps", "lmaps", "vml_map")
BUDGETS = (20, 100)
PHASES = ("tune", "presets", "run", "report", "plan", "all")


@dataclass(frozen=True)
class Study:
    """What to do: the grid of the study and where it lives."""

    work: Path
    tasks: tuple[str, ...]
    priors: tuple[str, ...]
    solvers: tuple[str, ...]
    budgets: tuple[int, ...]
    trials: int
    val_crops: int
    seed: int
    run_sets: tuple[str, ...] = ()
    """``--set`` of the test-split runs (fewer crops or seeds for a smoke run; none by default)."""
    publish: Path | None = None
    """Where ``report`` writes the study's own report (tables, figures, rows, tuning record)."""

    def config(self, prior: str, task: str) -> Path:
        return CONFIGS / f"{task}{PRIORS[prior]}.toml"

    def tune_dir(self, prior: str, task: str, budget: int, solver: str) -> Path:
        return self.work / "tune" / prior / task / f"fe{budget}" / solver

    def cells(self):
        """Every (prior, task, budget, solver) of the tuning grid."""
        for prior in self.priors:
            for task in self.tasks:
                for budget in self.budgets:
                    for solver in self.solvers:
                        yield prior, task, budget, solver


def log(msg: str) -> None:
    print(f"[head-to-head {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def finished_trials(out: Path) -> int:
    """COMPLETE + PRUNED trials of the study in ``out`` (0 when there is none)."""
    db = out / "study.sqlite3"
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
        ).fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def tune_sets(st: Study) -> list[str]:
    """The ``--set`` of every tune: the validation crops (the tune rebuilds the split itself)."""
    return [f"datasets[0].n={st.val_crops}"]


def phase_tune(st: Study) -> None:
    """Tune every cell not yet at its trial budget (a killed study resumes where it stopped)."""
    from invbench.bench import tune

    cells = list(st.cells())
    for k, (prior, task, budget, solver) in enumerate(cells, 1):
        out = st.tune_dir(prior, task, budget, solver)
        if finished_trials(out) >= st.trials and (out / "preset.toml").exists():
            continue
        log(f"tune {k}/{len(cells)}: {solver} on {task} under {prior}, {budget} FE per solve")
        t0 = time.perf_counter()
        try:
            tune.tune(
                st.config(prior, task),
                solver,
                budget_trials=st.trials,
                fe_cap=float(budget),
                out=out,
                seed=st.seed,
                sets=tune_sets(st),
                log=log,
            )
        except tune.TuneError as e:  # no step count fits the cap, or another worker holds it
            log(f"tune {solver} on {task} under {prior} at {budget} FE: not run: {e}")
            continue
        wall = time.perf_counter() - t0
        log(f"tune {solver}: {wall:.0f} s this call")
        record_wall(
            st, phase="tune", prior=prior, task=task, budget=budget, solver=solver, seconds=wall
        )


def preset_record(st: Study, prior: str, task: str, budget: int, solver: str) -> dict | None:
    """One tuned preset and its provenance, or None when its study has not finished."""
    import tomllib

    out = st.tune_dir(prior, task, budget, solver)
    path = out / "preset.toml"
    if not path.exists():
        return None
    doc = tomllib.loads(path.read_text())["tuned"]
    return {
        "prior": prior,
        "task": task,
        "budget_fe": budget,
        "solver": solver,
        "study": str((out / "study.sqlite3").relative_to(st.work)),
        "preset": str(path.relative_to(st.work)),
        "trials": finished_trials(out),
        "trials_diverged": doc.get("trials_diverged"),
        "validation_psnr": doc["best"],
        "params": doc["params"],
        "measured_per_solve": doc.get("measured_per_solve"),
        "n_problems": doc.get("n_problems"),
        "config_hash": doc.get("config_hash"),
        "code_version": doc.get("code_version"),
        "seed": doc.get("seed"),
    }


def phase_presets(st: Study) -> list[dict]:
    """Collect every finished preset (a copy under ``WORK/presets/``) and its provenance."""
    dest = st.work / "presets"
    dest.mkdir(parents=True, exist_ok=True)
    records = [r for c in st.cells() if (r := preset_record(st, *c)) is not None]
    for r in records:
        to = dest / r["prior"] / r["task"] / f"{r['solver']}-fe{r['budget_fe']}.toml"
        to.parent.mkdir(parents=True, exist_ok=True)
        copy_preset(st.work / r["preset"], to)
        r["copy"] = str(to.relative_to(st.work))
    (dest / "presets.json").write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    head = (
        "| prior | task | budget [FE/solve] | solver | trials (diverged) | validation PSNR "
        "[dB] | NFE + VJP per solve | params | study |"
    )
    lines = [head, "|---|---|---:|---|---:|---:|---|---|---|"]
    for r in records:
        m = r["measured_per_solve"] or {}
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(r["params"].items())
        )
        lines.append(
            f"| {r['prior']} | {r['task']} | {r['budget_fe']} | {r['solver']} | "
            f"{r['trials']} ({r['trials_diverged']}) | {r['validation_psnr']:.2f} | "
            f"{m.get('nfe', 0):g} + {m.get('vjp', 0):g} | {params} | {r['study']} |"
        )
    (dest / "presets.md").write_text("\n".join(lines) + "\n")
    log(f"presets: {len(records)} of {len(list(st.cells()))} collected into {dest}")
    return records


def evaluated_hashes(st: Study, prior: str, task: str) -> set[str]:
    """sha256 of every image any tuning study of ``prior`` and ``task`` evaluated."""
    seen: set[str] = set()
    for path in (st.work / "tune" / prior / task).glob("fe*/*/evaluated_images.jsonl"):
        seen |= {json.loads(line)["image_sha256"] for line in path.read_text().splitlines()}
    return seen


def copy_preset(src: Path, dst: Path) -> None:
    """Copy a tuned preset file, its ``config`` recorded relative to the source tree (a preset
    written before the tuner did so carries the absolute path of the machine that tuned it)."""
    import re

    from invbench.bench.tune import shown_config_path

    text = re.sub(
        r'^config = "([^"]*)"$',
        lambda m: f'config = "{shown_config_path(Path(m[1]))}"',
        src.read_text(),
        flags=re.MULTILINE,
    )
    dst.write_text(text)


def copy_any(src: str, dst: str) -> None:
    """``copytree``'s copy: preset files through :func:`copy_preset`, the rest as they are."""
    if src.endswith(".toml"):
        copy_preset(Path(src), Path(dst))
    else:
        shutil.copyfile(src, dst)


def record_wall(st: Study, **rec) -> None:
    """Append one call's wall time to ``WORK/walls.jsonl`` (the study's measured cost)."""
    rec.update(when=time.strftime("%Y-%m-%dT%H:%M:%S"), load1=os.getloadavg()[0])
    with open(st.work / "walls.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def check_split(st: Study, prior: str, task: str) -> tuple[int, int]:
    """Refuse a run whose test crops include an image seen in tuning (by sha256); return the
    number of test crops checked and of distinct images the tuning studies evaluated."""
    from invbench.bench import config, datasets, tune

    exp = config.load(st.config(prior, task), list(st.run_sets))
    spec = exp.datasets[0].build_spec()
    ds = datasets.build(spec, exp.base_dir)
    test = {tune.image_sha256(ds.get(i)) for i in range(len(ds))}
    seen = evaluated_hashes(st, prior, task)
    leaked = test & seen
    if leaked:
        raise SystemExit(f"{prior}/{task}: {len(leaked)} test crop(s) were evaluated in tuning")
    return len(test), len(seen)


def run_config(st: Study, prior: str, task: str) -> Path:
    """The run's config: the task's config (released presets) plus each finished tuned preset."""
    base = st.config(prior, task).read_text()
    out = st.work / "run" / prior / task / "run.toml"
    extra = []
    for budget in st.budgets:
        for solver in st.solvers:
            path = st.tune_dir(prior, task, budget, solver) / "preset.toml"
            if path.exists():
                extra.append(
                    f'\n[[solvers]]\nname = "{solver}"\nlabel = "{solver}-fe{budget}"\n'
                    f'preset = "tuned:{os.path.relpath(path, out.parent)}"\n'
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    text = base.replace('name = "h2h-', 'name = "h2h-run-', 1) + "".join(extra)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out


def phase_run(st: Study) -> None:
    """One test-split run per prior and task (``--resume`` continues a killed one)."""
    from invbench.bench import cli

    for prior in st.priors:
        for task in st.tasks:
            n, seen = check_split(st, prior, task)
            cfg = run_config(st, prior, task)
            (cfg.parent / "split_check.json").write_text(
                json.dumps(
                    {
                        "prior": prior,
                        "task": task,
                        "test_crops": n,
                        "tuning_images": seen,
                        "shared": 0,
                    }
                )
                + "\n"
            )
            rows = cfg.parent / "rows"
            args = ["run", str(cfg), "--out", str(rows), "--no-progress"]
            args += [a for kv in st.run_sets for a in ("--set", kv)]
            if (rows / "results.sqlite").exists():
                args.append("--resume")
            log(f"run {prior}/{task}: {n} test crops checked against tuning; {' '.join(args)}")
            t0 = time.perf_counter()
            if cli.main(args) != 0:
                raise SystemExit(f"run {prior}/{task} failed")
            wall = time.perf_counter() - t0
            log(f"run {prior}/{task}: {wall:.0f} s")
            record_wall(st, phase="run", prior=prior, task=task, seconds=wall)


def phase_report(st: Study) -> None:
    """``invbench report`` of each finished run (skipped when newer than its rows)."""
    from invbench.bench import cli

    for prior in st.priors:
        for task in st.tasks:
            rows = st.work / "run" / prior / task / "rows"
            store = rows / "results.sqlite"
            out = st.work / "report" / prior / task
            if not store.exists():
                log(f"report {prior}/{task}: no run yet")
                continue
            stamp = out / ".rows-mtime"
            if stamp.exists() and stamp.read_text() == str(store.stat().st_mtime_ns):
                continue
            if cli.main(["report", str(rows), "--out", str(out)]) != 0:
                raise SystemExit(f"report {prior}/{task} failed")
            stamp.write_text(str(store.stat().st_mtime_ns))
    phase_publish(st)


RELEASED_NOTES = {
    (
        "reddiff",
        "deblur_uniform",
    ): "starts from A⁺y, which amplifies the noise up to about 500× on 32×32 crops "
    "(2-D singular values down to 2e-3 survive the 3e-2 threshold on the 1-D "
    "factors); 50 Adam steps at lr 0.1 cannot undo that start.",
    (
        "daps",
        "denoise",
    ): "the released likelihood width τ = 0.01 is far below √2·σ_y = 0.28, so the Langevin "
    "steps pull the estimate onto the noisy measurement.",
    ("pigdm", "sr4_avgpool"): (
        "the released η = 0 (deterministic DDIM): on 16 test crops η = 1 gains 2.4 dB, starting "
        "from noise instead of A⁺y 0.03 dB (checks/pigdm-sr4.toml)."
    ),
    ("pigdm", "deblur_uniform"): (
        "no single cause: on 16 test crops, starting from noise instead of A⁺y gains 1.9 dB and "
        "η = 1 instead of 0 gains 2.7 dB (checks/pigdm-deblur.toml)."
    ),
}
"""Why a released setting fails on a task it was not released for (docs/solvers-baselines.md)."""

LEARNED, EXACT = "small-cpu", "gmm-crops32"


def crop_groups(st: Study) -> dict[str, str]:
    """Test image id -> the held-out image its crop was cut from (the runs' bundled crops)."""
    from invbench.bench import bundled, config

    spec = config.load(st.config(LEARNED, st.tasks[0]), list(st.run_sets)).datasets[0].build_spec()
    n, size, seed, split = (
        spec["n"],
        spec.get("size", 32),
        spec.get("seed", 0),
        spec.get("split", "all"),
    )
    return {
        f"crop{i:04d}": name
        for i, (name, *_) in enumerate(bundled.heldout_crop_sources(n, size, seed, split))
    }


def phase_publish(st: Study) -> None:
    """The study's own report into ``st.publish``: tables, LaTeX, figures, the rows of every run,
    each per-run leaderboard, and the tuning record (presets, Optuna studies, evaluated images)."""
    from invbench.bench.studies import head_to_head as h2h
    from invbench.bench.studies import head_to_head_figures as figs
    from invbench.bench.studies import head_to_head_tables as tables

    runs = {
        (p, t): st.work / "run" / p / t / "rows"
        for p in st.priors
        for t in st.tasks
        if (st.work / "run" / p / t / "rows" / "results.sqlite").exists()
    }
    if not runs or st.publish is None:
        log("publish: nothing to publish" if not runs else "publish: no --publish folder")
        return
    study = h2h.load_study(runs)
    arm = f"fe{min(st.budgets)}"
    out = st.publish
    out.mkdir(parents=True, exist_ok=True)
    notes = {k: v for k, v in RELEASED_NOTES.items() if k[1] in st.tasks}
    groups = crop_groups(st)
    (out / "tables.md").write_text(
        tables.tables_markdown(study, arm, LEARNED, EXACT, notes, groups)
    )
    for name, text in tables.latex_tables(study, study.arms).items():
        (out / name).write_text(text)
    # row_id (the sha256 of the row's key) is left out: it is most of the file and derivable
    h2h.rows_frame(study).drop(columns=["row_id"]).to_csv(out / "rows.csv.gz", index=False)
    problems = figs.draw_all(study, arm, LEARNED, EXACT, out / "figures")
    for p in problems:
        log(f"publish: figure check: {p}")
    for prior, task in runs:
        src, dst = st.work / "report" / prior / task, out / "per-run" / prior / task
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("leaderboard.csv", "main.md", "main.tex"):
            if (src / name).exists():
                shutil.copyfile(src / name, dst / name)
        for name in ("run.toml", "split_check.json"):
            if (st.work / "run" / prior / task / name).exists():
                shutil.copyfile(st.work / "run" / prior / task / name, dst / name)
    for cell in st.cells():
        src = st.tune_dir(*cell)
        dst = out / "tune" / src.relative_to(st.work / "tune")
        for name in (
            "preset.toml",
            "study.sqlite3",
            "evaluated_images.jsonl",
            "fe_per_setting.json",
        ):
            if (src / name).exists():  # the Optuna study and the image log gzipped
                dst.mkdir(parents=True, exist_ok=True)
                if name.endswith((".sqlite3", ".jsonl")):
                    (dst / f"{name}.gz").write_bytes(
                        gzip.compress((src / name).read_bytes(), mtime=0)
                    )
                elif name == "preset.toml":
                    copy_preset(src / name, dst / name)
                else:
                    shutil.copyfile(src / name, dst / name)
    if (st.work / "walls.jsonl").exists():
        shutil.copyfile(st.work / "walls.jsonl", out / "walls.jsonl")
    if (st.work / "presets").exists():
        shutil.copytree(
            st.work / "presets", out / "presets", dirs_exist_ok=True, copy_function=copy_any
        )
    log(
        f"publish: {len(runs)} runs into {out}"
        + (f"; {len(problems)} figure problem(s)" if problems else "")
    )


PLAN_CAP = 20
SHRINK = {
    "as designed": {},
    "8 trials (not 24)": {"trials": 8},
    "8 validation crops (not 16)": {"val_crops": 8},
    "budget 20 FE only (not 20 and 100)": {"budgets": (20,)},
    "tuned on small-cpu only (the twin runs those presets)": {"tune_priors": ("small-cpu",)},
    "32 test crops x 1 seed (not 64 x 2)": {"crops": 32, "seeds": 1},
    "12 trials, 8 validation crops, tuned on small-cpu only": {
        "trials": 12,
        "val_crops": 8,
        "tune_priors": ("small-cpu",),
    },
    "8 trials, 8 validation crops, budget 20 only, tuned on small-cpu only": {
        "trials": 8,
        "val_crops": 8,
        "budgets": (20,),
        "tune_priors": ("small-cpu",),
    },
}
"""What could shrink to fit a CPU budget; each is projected from the same measurements."""


def shrink_table(st: Study, tune_m: dict, run_m: dict) -> dict[str, float]:
    """Projected CPU hours (one thread) of each :data:`SHRINK` variant of the study."""
    import dataclasses

    out = {}
    for name, v in SHRINK.items():
        grid = {k: v[k] for k in ("trials", "val_crops", "budgets") if k in v}
        rest = {k: v[k] for k in ("crops", "seeds", "tune_priors") if k in v}
        proj = project(dataclasses.replace(st, **grid), tune_m, run_m, **rest)
        out[name] = proj["total_s"] / 3600.0
    return out


"""The FE cap of the plan's measuring tunes (the study's smaller budget)."""


def trial_walls(out: Path) -> tuple[float, float]:
    """(seconds, FE) summed over the study's trials that solved something; the seconds leave out
    the FE meter's measuring solves inside a trial (user attribute ``fe_probe_s``)."""
    import optuna

    storage = f"sqlite:///{out / 'study.sqlite3'}"
    study = optuna.load_study(study_name="invbench-tune", storage=storage)
    secs = fe = 0.0
    for t in study.get_trials(deepcopy=False):
        spent = float(t.user_attrs.get("fe_trial", 0.0))
        if spent > 0 and t.datetime_complete is not None:
            span = (t.datetime_complete - t.datetime_start).total_seconds()
            secs += span - float(t.user_attrs.get("fe_probe_s", 0.0))
            fe += spent
    return secs, fe


def measure_tune(st: Study, prior: str, task: str, solver: str, trials: int) -> dict:
    """Wall per FE of ``trials`` fresh tuning trials on 2 validation crops at ``PLAN_CAP``, and
    the call's overhead outside the trials (the FE fit's measuring solves, building problems)."""
    from invbench.bench import tune

    out = st.work / "plan" / "tune" / prior / task / solver
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    tune.tune(
        st.config(prior, task),
        solver,
        budget_trials=trials,
        fe_cap=float(PLAN_CAP),
        out=out,
        seed=st.seed,
        sets=["datasets[0].n=2"],
        log=lambda m: None,
    )
    call = time.perf_counter() - t0
    secs, fe = trial_walls(out)
    return {
        "s_per_fe": secs / fe if fe else None,
        "trial_s": secs,
        "fe": fe,
        "overhead_s": max(call - secs, 0.0),
    }


def measure_run(st: Study, prior: str, task: str) -> dict:
    """Per label of a short test-split run (2 crops, seed 0, released presets): wall per FE,
    FE per solve (NFE + VJP, as stored) and seconds per solve."""
    from invbench.bench import cli

    out = st.work / "plan" / "run" / prior / task
    shutil.rmtree(out, ignore_errors=True)
    args = [
        "run",
        str(st.config(prior, task)),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "datasets[0].n=2",
        "--set",
        "seeds=[0]",
    ]
    if cli.main(args) != 0:
        raise SystemExit(f"plan: the measuring run {prior}/{task} failed")
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute(
        "SELECT solver, SUM(seconds), SUM(nfe + vjp), COUNT(*) FROM results "
        "WHERE status = 'ok' GROUP BY solver"
    ).fetchall()
    con.close()
    return {
        s: {"s_per_fe": sec / fe if fe else None, "fe_per_solve": fe / n, "s_per_solve": sec / n}
        for s, sec, fe, n in rows
    }


def project(
    st: Study,
    tune_m: dict,
    run_m: dict,
    crops: int = 64,
    seeds: int = 2,
    tune_priors: tuple[str, ...] | None = None,
) -> dict:
    """Projected single-thread CPU seconds of the whole study from the measurements: tuning
    (trials x validation crops x budget x s/FE, plus the call's overhead scaled by the budget)
    and test runs (seeds x test crops x [released FE + the budgets] x s/FE, oracles per solve).
    ``tune_priors``: the priors tuned on (None: all; the others run those priors' presets)."""
    tune_s: dict[str, float] = {}
    run_s: dict[str, float] = {}
    for prior, task, budget, solver in st.cells():
        if tune_priors is not None and prior not in tune_priors:
            continue
        m = tune_m[f"{prior}/{task}/{solver}"]
        w = m["s_per_fe"] or 0.0
        s = st.trials * st.val_crops * budget * w + m["overhead_s"] * budget / PLAN_CAP
        tune_s[prior] = tune_s.get(prior, 0.0) + s
    for prior in st.priors:
        for task in st.tasks:
            for label, m in run_m[f"{prior}/{task}"].items():
                if m["s_per_fe"] is None:  # the oracles: no network evaluation
                    per_image = m["s_per_solve"]
                else:  # released + one tuned preset per budget
                    tuned = sum(st.budgets) if label in st.solvers else 0
                    per_image = (m["fe_per_solve"] + tuned) * m["s_per_fe"]
                run_s[prior] = run_s.get(prior, 0.0) + seeds * crops * per_image
    total = sum(tune_s.values()) + sum(run_s.values())
    return {
        "tune_s": tune_s,
        "run_s": run_s,
        "total_s": total,
        "seeds": seeds,
        "test_crops": crops,
        "trials": st.trials,
        "val_crops": st.val_crops,
        "budgets": list(st.budgets),
    }


def measure_all(st: Study, trials: int) -> dict:
    """The plan's measurements (one thread): a short run and ``trials`` tuning trials per cell."""
    import torch

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    tune_m: dict[str, dict] = {}
    run_m: dict[str, dict] = {}
    t0 = time.perf_counter()
    for prior in st.priors:
        for task in st.tasks:
            run_m[f"{prior}/{task}"] = measure_run(st, prior, task)
            for solver in st.solvers:
                tune_m[f"{prior}/{task}/{solver}"] = measure_tune(st, prior, task, solver, trials)
                log(f"plan {prior}/{task}/{solver}: {tune_m[f'{prior}/{task}/{solver}']}")
    return {
        "tune": tune_m,
        "run": run_m,
        "plan_trials": trials,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "cpu": platform_cpu(),
        "wall_s": time.perf_counter() - t0,
        "date": time.strftime("%Y-%m-%d"),
    }


def phase_plan(st: Study, trials: int, md_out: Path | None, reuse: bool = False) -> dict:
    """Measure (one thread; with ``reuse``, read the last measurements of ``plan.json``) and
    project the study; write ``WORK/plan/plan.json`` and ``plan.md`` (and ``md_out``)."""
    path = st.work / "plan" / "plan.json"
    m = json.loads(path.read_text())["measured"] if reuse else measure_all(st, trials)
    proj = project(st, m["tune"], m["run"])
    proj["shrink_cpu_hours"] = shrink_table(st, m["tune"], m["run"])
    doc = {"measured": m, "projection": proj}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    text = plan_markdown(st, doc)
    (st.work / "plan" / "plan.md").write_text(text)
    if md_out is not None:
        md_out.write_text(text)
    print(text)
    return doc


def platform_cpu() -> str:
    """The CPU model name and the number of CPUs."""
    from invbench.bench.cost import cpu_model

    return f"{cpu_model()} ({os.cpu_count()} CPUs)"


def plan_markdown(st: Study, doc: dict) -> str:
    """The plan as a markdown fragment: per-solver s/FE, the projection, what would fit 2 h."""
    m, p = doc["measured"], doc["projection"]
    where = (
        f"Measured {m['date']} on {m['cpu']}, OMP_NUM_THREADS={m['omp_num_threads']}, "
        f"torch threads {m['torch_threads']}, load average "
        f"{m['loadavg_start'][0]:.2f} at the start and {m['loadavg_end'][0]:.2f} at the end; "
        f"measuring took {m['wall_s']:.0f} s."
    )
    lines = [
        where,
        "",
        "| prior | task | solver | tune ms/FE | run ms/FE | released FE/solve |",
        "|---|---|---|---:|---:|---:|",
    ]
    for key, t in m["tune"].items():
        prior, task, solver = key.split("/")
        r = m["run"][f"{prior}/{task}"].get(solver, {})
        tw = f"{1e3 * t['s_per_fe']:.2f}" if t["s_per_fe"] else "–"
        rw = f"{1e3 * r['s_per_fe']:.2f}" if r.get("s_per_fe") else "–"
        lines.append(
            f"| {prior} | {task} | {solver} | {tw} | {rw} | {r.get('fe_per_solve', 0):g} |"
        )
    h = 3600.0
    lines += ["", "| part | prior | CPU hours (one thread) |", "|---|---|---:|"]
    for part in ("tune_s", "run_s"):
        for prior, s in p[part].items():
            lines.append(f"| {part[:-2]} | {prior} | {s / h:.2f} |")
    lines.append(f"| **total** | | **{p['total_s'] / h:.2f}** |")
    lines += [
        "",
        "| variant | CPU hours (one thread) | wall on 2 cores, 2 workers [h] |",
        "|---|---:|---:|",
    ]
    for name, hours in p.get("shrink_cpu_hours", {}).items():
        lines.append(f"| {name} | {hours:.2f} | {hours / 2:.2f} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> tuple[str, Study, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=PHASES)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "head-to-head")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    p.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    p.add_argument("--trials", type=int, default=24, help="TPE trials per study (default 24)")
    p.add_argument("--val-crops", type=int, default=16, help="validation crops (default 16)")
    p.add_argument("--seed", type=int, default=0, help="TPE seed of every study (default 0)")
    p.add_argument(
        "--test-crops",
        type=int,
        default=None,
        help="run: test crops (default: the config's 64; fewer for a smoke run)",
    )
    p.add_argument("--seeds", default=None, help="run: seeds as TOML, e.g. [0] (default [0, 1])")
    p.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="report: the study's own report folder (default WORK/publish; the committed "
        "one is reports/head-to-head)",
    )
    p.add_argument("--plan-trials", type=int, default=2, help="plan: trials per solver")
    p.add_argument(
        "--plan-reuse",
        action="store_true",
        help="plan: project again from the measurements in WORK/plan/plan.json",
    )
    p.add_argument("--plan-out", type=Path, default=None, help="plan: also write this markdown")
    a = p.parse_args(argv)
    run_sets = ([f"datasets[0].n={a.test_crops}"] if a.test_crops else []) + (
        [f"seeds={a.seeds}"] if a.seeds else []
    )
    st = Study(
        a.work.resolve(),
        tuple(a.tasks),
        tuple(a.priors),
        tuple(a.solvers),
        tuple(a.budgets),
        a.trials,
        a.val_crops,
        a.seed,
        tuple(run_sets),
        (a.publish or a.work / "publish").resolve(),
    )
    return a.phase, st, a


def main(argv: list[str] | None = None) -> int:
    phase, st, args = parse(sys.argv[1:] if argv is None else argv)
    st.work.mkdir(parents=True, exist_ok=True)
    if phase == "plan":
        phase_plan(st, args.plan_trials, args.plan_out, args.plan_reuse)
        return 0
    steps = {
        "tune": [phase_tune],
        "presets": [phase_presets],
        "run": [phase_run],
        "report": [phase_report],
        "all": [phase_tune, phase_presets, phase_run, phase_report],
    }
    for fn in steps[phase]:
        fn(st)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
