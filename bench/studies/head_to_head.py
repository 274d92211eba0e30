"""The head-to-head study's own report: every run of the study read together (docs/head-to-head.md).

The study has one run per (prior, task): the solvers at their released presets (labels = the
solver id) and at the presets tuned per budget (labels ``<solver>-fe<B>``), on the same test crops
and seeds. This module splits each run into its *arms* (``released``, ``fe20``, ...), builds each
arm's leaderboard with the report's own machinery (:func:`invbench.bench.report.summary.build_leaderboards`:
the one-vs-best marks and intervals of :mod:`invbench.bench.report.verdicts`), and adds what only
the whole study can say:

* the main table per prior and arm (:mod:`invbench.bench.report.main_table`: Markdown and LaTeX);
* tuned − released per solver and task: paired Student-t interval on image means (seeds averaged
  per image), Bonferroni over the solvers of one (prior, task) column;
* cost: forward-equivalents per solve (FE = NFE + VJP, counted in every row) and seconds per image,
  normalised by the seconds per network evaluation of DDRM (which spends nothing else) in the
  same run, so that runs on differently loaded machines compare;
* rankings across priors: per task Kendall's τ between the tuned means under the learned prior
  and under its exact twin; per prior Friedman over the (task, image) blocks with Wilcoxon
  signed-rank tests against the solver of best average rank (Holm).

:mod:`.head_to_head_figures` draws the study's figures; :func:`write` writes everything.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats as st

from ..report.cd import ranking_blocks
from ..report.data import RunData, load_run
from ..report.names import solver_name, task_names_of_run
from ..report.stats import MeanCI
from ..report.summary import CellSummary, Leaderboard, build_leaderboards
from ..report.verdicts import (
    ALPHA,
    OverallRanking,
    friedman_blocks,
    image_means,
    is_oracle,
    paired_interval,
)

__all__ = [
    "ARM_RELEASED",
    "Study",
    "arm_of",
    "arm_run",
    "cross_prior",
    "deltas",
    "load_study",
    "study_of",
]

ARM_RELEASED = "released"
_TUNED = re.compile(r"^(?P<solver>.+)-fe(?P<budget>\d+)$")
NORMALISER = "ddrm"
"""The solver whose seconds per network evaluation normalise time: it spends only NFE."""


def arm_of(label: str) -> str:
    """``"oracle"``, ``"fe<B>"`` for a tuned label ``<solver>-fe<B>``, else ``"released"``."""
    if is_oracle(label):
        return "oracle"
    m = _TUNED.match(label)
    return f"fe{m['budget']}" if m else ARM_RELEASED


def solver_of(label: str) -> str:
    """The solver id of a row label (``dps-fe20`` -> ``dps``)."""
    m = _TUNED.match(label)
    return m["solver"] if m and not is_oracle(label) else label


def arm_run(run: RunData, arm: str) -> RunData:
    """``run`` restricted to one arm's rows (labels renamed to the solver id) plus the oracles."""

    def keep(df: pd.DataFrame) -> pd.DataFrame:
        if not len(df) or "solver" not in df:
            return df
        labels = df["solver"].astype(str)
        arms = labels.map(arm_of)
        out = df[(arms == arm) | (arms == "oracle")].copy()
        out["solver"] = out["solver"].astype(str).map(solver_of)
        return out

    return dataclasses.replace(
        run, results=keep(run.results), set_metrics=keep(run.set_metrics), completeness=None
    )


@dataclass
class Study:
    """Every run of the study, by (prior, task), and each arm's leaderboard."""

    runs: dict[tuple[str, str], RunData]
    priors: list[str]
    tasks: list[str]
    arms: list[str]  # "released" first, then the budgets
    boards: dict[tuple[str, str, str], Leaderboard]  # (prior, task, arm) -> the arm's board
    task_names: dict[str, str]

    def board(self, prior: str, task: str, arm: str) -> Leaderboard | None:
        return self.boards.get((prior, task, arm))

    def cell(self, prior: str, task: str, arm: str, solver: str) -> CellSummary | None:
        b = self.board(prior, task, arm)
        return None if b is None else next((c for c in b.cells if c.solver == solver), None)

    def solvers(self) -> list[str]:
        """Solver ids of any arm, in the order of the package's display names."""
        found = {c.solver for b in self.boards.values() for c in b.cells if not is_oracle(c.solver)}
        return sorted(found, key=lambda s: solver_name(s).lower())


def _budget_key(arm: str) -> tuple[int, int]:
    return (0, 0) if arm == ARM_RELEASED else (1, int(arm[2:]))


def load_study(run_dirs: dict[tuple[str, str], Path], primary: str = "psnr") -> Study:
    """Read each run's rows (``{(prior, task): rows folder}``) and build each arm's board."""
    return study_of({k: load_run(d) for k, d in run_dirs.items()}, primary)


def study_of(runs: dict[tuple[str, str], RunData], primary: str = "psnr") -> Study:
    """The study of runs already read, ``{(prior, task): run}``: each arm's board."""
    priors = list(dict.fromkeys(p for p, _ in runs))
    tasks = list(dict.fromkeys(t for _, t in runs))
    arms: set[str] = set()
    boards: dict[tuple[str, str, str], Leaderboard] = {}
    names: dict[str, str] = {}
    for (prior, task), run in runs.items():
        labels = run.results["solver"].astype(str) if len(run.results) else pd.Series(dtype=str)
        found = {arm_of(s) for s in labels} - {"oracle"}
        arms |= found
        names.update(task_names_of_run(run.meta.get("config")))
        for arm in found:
            bs = build_leaderboards(
                arm_run(run, arm), {t: primary for t in run.results["task"].unique()}
            )
            if len(bs) != 1:
                raise ValueError(
                    f"run {prior}/{task}: expected one (dataset, task) board, found {len(bs)}"
                )
            boards[(prior, task, arm)] = bs[0]
    return Study(runs, priors, tasks, sorted(arms, key=_budget_key), boards, names)


@dataclass(frozen=True)
class Delta:
    """Tuned − released of one solver on one (prior, task): the paired interval on image means."""

    prior: str
    task: str
    arm: str
    solver: str
    ci: MeanCI | None
    level: float
    m: int  # comparisons in the family (solvers with both arms in this column)

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` where the interval excludes 0, else ``no difference shown``."""
        if self.ci is None or not math.isfinite(self.ci.half_width):
            return "not comparable"
        if self.ci.low > 0:
            return "better"
        if self.ci.high < 0:
            return "worse"
        return "no difference shown"


def _arm_means(run: RunData, label: str, metric: str) -> pd.Series:
    rows = run.results[run.results["solver"].astype(str) == label]
    return image_means(rows, metric)


def deltas(study: Study, arm: str, metric: str = "psnr", alpha: float = ALPHA) -> list[Delta]:
    """Tuned (``arm``) − released per solver, prior and task; the family of one (prior, task) is
    its solvers with both arms, so each interval is at level ``1 − α/m`` (Bonferroni)."""
    out = []
    for (prior, task), run in study.runs.items():
        labels = set(run.results["solver"].astype(str))
        pairs = [
            (s, f"{s}-{arm}") for s in study.solvers() if s in labels and f"{s}-{arm}" in labels
        ]
        m = len(pairs)
        level = 1 - alpha / max(m, 1)
        for released, tuned in pairs:
            ci = paired_interval(
                _arm_means(run, tuned, metric), _arm_means(run, released, metric), level
            )
            out.append(Delta(prior, task, arm, released, ci, level, m))
    return out


@dataclass(frozen=True)
class CrossPrior:
    """One task's tuned ranking under the learned prior and under its exact twin."""

    task: str
    solvers: list[str]
    means: dict[str, tuple[float, float]]  # solver -> (learned, exact)
    tau: float
    p: float
    top: dict[str, list[str]]  # prior -> best and tied solvers


def top_solvers(b: Leaderboard | None) -> list[str]:
    """The board's best solver first, then those tied with it (its marks)."""
    if b is None:
        return []
    return [c.solver for c in b.cells if c.is_best or c.tied_with_best]


def cross_prior(
    study: Study, arm: str, learned: str, exact: str, metric: str = "psnr"
) -> list[CrossPrior]:
    """Per task: Kendall's τ (scipy, τ-b, exact two-sided p) between the solvers' mean ``metric``
    under ``learned`` and under ``exact``, and each prior's best-and-tied set."""
    out = []
    for task in study.tasks:
        means = {}
        for s in study.solvers():
            a, b = study.cell(learned, task, arm, s), study.cell(exact, task, arm, s)
            if a is not None and b is not None and metric in a.metrics and metric in b.metrics:
                means[s] = (a.metrics[metric].mean, b.metrics[metric].mean)
        if len(means) < 3:
            continue
        x, y = zip(*means.values())
        res = st.kendalltau(x, y)
        top = {p: top_solvers(study.board(p, task, arm)) for p in (learned, exact)}
        out.append(
            CrossPrior(task, list(means), means, float(res.statistic), float(res.pvalue), top)
        )
    return out


def overall(study: Study, prior: str, arm: str) -> OverallRanking | None:
    """Friedman over every (task, image) block of ``prior`` and ``arm`` (the report's procedure)."""
    boards = [b for t in study.tasks if (b := study.board(prior, t, arm)) is not None]
    blocks = ranking_blocks(boards)
    return friedman_blocks(blocks) if blocks else None


def seconds_per_nfe(study: Study, prior: str, task: str, arm: str) -> float:
    """Seconds per network evaluation of :data:`NORMALISER` in this run and arm (NaN if absent)."""
    c = study.cell(prior, task, arm, NORMALISER)
    if c is None or not (c.nfe > 0) or not math.isfinite(c.seconds.mean):
        return math.nan
    return c.seconds.mean / c.nfe


def half_widths(study: Study, prior: str, arm: str, level: float | None = None) -> list[float]:
    """Δ-best half-widths of the non-best solver cells: as printed (Bonferroni-adjusted) when
    ``level`` is None, else the paired t interval on the same image means at ``level``."""
    out = []
    for t in study.tasks:
        b = study.board(prior, t, arm)
        best = next((c for c in b.cells if c.is_best), None) if b else None
        for c in b.cells if b else []:
            if is_oracle(c.solver) or c.is_best or c.delta_best is None:
                continue
            if level is None:
                out.append(float(c.delta_best.half_width))
            elif best is not None and (
                ci := paired_interval(b.image_means[c.key], b.image_means[best.key], level)
            ):
                out.append(float(ci.half_width))
    return out


def rows_frame(study: Study) -> pd.DataFrame:
    """Every row of every run with its prior key, arm and solver id (the study's data file)."""
    frames = []
    for (prior, task), run in study.runs.items():
        df = run.results.copy()
        df.insert(0, "study_task", task)
        df.insert(0, "study_prior", prior)
        df.insert(2, "arm", df["solver"].astype(str).map(arm_of))
        df.insert(3, "solver_id", df["solver"].astype(str).map(solver_of))
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def study_from_rows(
    rows: pd.DataFrame, configs: dict[tuple[str, str], str], primary: str = "psnr"
) -> Study:
    """The study rebuilt from its published rows (:func:`rows_frame`, e.g. ``rows.csv.gz``) and each
    run's config text, ``{(prior, task): run.toml}``: what lets a reader recompute every table."""
    runs = {}
    for (prior, task), df in rows.groupby(["study_prior", "study_task"], sort=False):
        res = df.drop(columns=["study_prior", "study_task", "arm", "solver_id"]).reset_index(
            drop=True
        )
        for col in ("solver", "preset", "task", "dataset", "prior", "image_id", "status"):
            res[col] = res[col].astype(str)
        meta = {"config": configs.get((str(prior), str(task)), "")}
        runs[(str(prior), str(task))] = RunData(
            Path("."), res, pd.DataFrame(), meta, pd.DataFrame()
        )
    return study_of(runs, primary)


def by_group(
    study: Study, arm: str, groups: dict[str, str], primary: str = "psnr"
) -> dict[tuple[str, str, str], list[str]]:
    """``{(prior, task, group): best and tied solvers}`` with the test images split by ``groups``
    (image id -> group, e.g. the held-out image a crop was cut from): each group's own board, the
    same marks (one-vs-best, Bonferroni) on its images only. A ranking that holds in every group
    does not rest on one source image."""
    out = {}
    for (prior, task), run in study.runs.items():
        sub = arm_run(run, arm)
        ids = sub.results["image_id"].astype(str).map(groups)
        for g in sorted(set(groups.values())):
            part = dataclasses.replace(sub, results=sub.results[ids == g])
            if not len(part.results):
                continue
            (b,) = build_leaderboards(
                part, {task: primary for task in part.results["task"].unique()}
            )
            out[(prior, task, g)] = top_solvers(b)
    return out
