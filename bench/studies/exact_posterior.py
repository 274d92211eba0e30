"""Exact-posterior validation suite (docs/design.md §10, reports/validation/README.md): every solver against the
closed-form posterior of an analytic Gaussian-mixture prior.

A *problem set* is (prior, operator preset, sigma_y); a *problem* in it is a ground truth ``x0``
(model space [-1, 1]), an operator draw and a noise draw, ``y = A x0 + sigma_y n``. The exact
posterior ``p(x0 | y)`` (``prior.posterior``) gives the MAP (global, multi-start), its other local
modes, the posterior mean and exact posterior samples. Every solver runs through the public
interface ``solvers.build(name, preset, **overrides).solve(y, A, prior, sigma_y=, generator=)``
with one ``torch.Generator`` per problem (or per sample), in float64 on the CPU.

Problems come from the suite's one problem pipeline,
:func:`invbench.bench.problem.build_problem`: task = the operator preset (so one image has the same
operator and noise direction ``n`` at every ``sigma_y``), dataset = the prior's name, image = the
truth's id, ``data_part = solver_part = "validation"``. Problems ``j`` of one *operator group*
(``problems_per_operator`` of them for presets whose operator is random, all ``n_problems``
otherwise) name one ``operator_id`` (``"group<g>"``), so they share one operator draw, one batched
solver call and one exact posterior. Sample ``k`` of a sample set is the problem's solver draw
``"validation/sample<k>"`` (:meth:`invbench.bench.problem.Problem.with_solver_part`); the exact
reference samples are drawn from ``Problem.seed_for("reference", "validation")``.

Truths (:mod:`invbench.bench.studies.exact_posterior_truth`) are indexed by the problem id
``s = 1000 * PRIOR_INDEX[prior] + 100 * PRESET_INDEX[preset] + j`` (``j`` < 100, the problem's
index in its set): synthetic priors ``prior.sample(1, Generator(s))``; ``gmm-digits`` the test
image ``digits_split_indices("test")[(32 * PRESET_INDEX + j) % 197]``; ``gmm-patches`` an 8x8
grayscale crop of a held-out image (``prior.meta["heldout_images"]``) at a position drawn by
``numpy.random.default_rng(s)``. ``s`` < 10 000, disjoint from the VML-MAP validation range
900 000+.

Metrics (model units unless stated; ``d`` = pixels, RMS = ``||.|| / sqrt(d)``): see
:func:`point_metrics`, :func:`sample_metrics` and :func:`summarise`; the exact-posterior ones are
:func:`invbench.bench.metrics.posterior.posterior_metrics` and
:func:`invbench.bench.metrics.sliced_wasserstein.sliced_wasserstein`.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from invbench.bench.metrics.posterior import posterior_metrics
from invbench.bench.metrics.sliced_wasserstein import sliced_wasserstein
from invbench.operators.conventions import model_sigma_to_pixel, model_to_pixel
from invbench.priors import CountingPrior
from torch import Tensor

from invbench import priors, solvers

from ..config.spec import TaskSpec
from ..problem import Problem, build_problem, generator, solve_and_score
from .exact_posterior_truth import DT, PRIOR_INDEX, problem_seed, truth

#: presets whose operator depends on the generator (mask / box position)
RANDOM_PRESETS = frozenset({"inpaint_random", "inpaint_box"})

#: the seed parts of the study's draws (:func:`invbench.bench.problem.build_problem`)
PART = "validation"
SW_SEED = 0  # projection directions of the sliced Wasserstein distance

@dataclass(frozen=True)
class TableEntry:
    """One row family of the table: ``solvers.build(name, preset, **overrides)``.

    ``preset="task"`` picks the solver's per-task preset (DPS: ``DPS.preset_for_task``).
    ``sampler``: the solver draws posterior samples (sample-set metrics are computed).
    ``priors``: restrict to these priors (None: all).
    """

    label: str
    name: str
    preset: str = "default"
    overrides: tuple[tuple[str, object], ...] = ()
    sampler: bool = False
    priors: tuple[str, ...] | None = None

    def preset_for(self, task: str) -> str:
        if self.preset == "task":
            return solvers.get(self.name).preset_for_task(task)
        return self.preset

    def build(self, task: str) -> solvers.Solver:
        return solvers.build(self.name, self.preset_for(task), **dict(self.overrides))


# Rows with a choice of their own (VML-MAP's variants, DPS's per-task presets); every other
# registered solver gets a row from its class (``VALIDATION_PRESET``, ``DRAWS_SAMPLES``): see
# :func:`solver_entries`. The order here is the table's row order.
_LISTED: tuple[TableEntry, ...] = (
    TableEntry("vml_map/default", "vml_map", "default"),
    TableEntry("vml_map/plain", "vml_map", "plain"),
    TableEntry("vml_map/full", "vml_map", "full", priors=("gmm-synthetic-64", "gmm-digits")),
    TableEntry("dps", "dps", "task", sampler=True),
    TableEntry("ddrm", "ddrm", "default", sampler=True),
    TableEntry("pigdm", "pigdm", "default", sampler=True),
    TableEntry("diffpir", "diffpir", "default", sampler=True),
    TableEntry("reddiff", "reddiff", "default"),  # a point estimate: scored as a MAP finder
    TableEntry("daps", "daps", "cpu", sampler=True),  # reduced-step preset (time budget)
    TableEntry("oracle_map", "oracle_map"),
    TableEntry("oracle_mean", "oracle_mean"),
    TableEntry("oracle_sample", "oracle_sample", sampler=True),
)


def solver_entries() -> tuple[TableEntry, ...]:
    """The listed rows, then one per registered solver without a row (test-only ``_`` solvers
    excepted), built from the solver's own class attributes: a new solver needs no edit here."""
    listed = {e.name for e in _LISTED}
    extra = []
    for name in solvers.names():
        if name.startswith("_") or name in listed:
            continue
        cls = solvers.get(name)
        extra.append(TableEntry(name, name, cls.VALIDATION_PRESET, sampler=cls.DRAWS_SAMPLES))
    return _LISTED + tuple(extra)


SOLVERS: tuple[TableEntry, ...] = solver_entries()


@dataclass(frozen=True)
class Level:
    """A noise level and the part of the grid evaluated at it."""

    sigma_y: float
    priors: tuple[str, ...]
    presets: tuple[str, ...]
    solvers: tuple[str, ...]  # labels of SOLVERS
    sample_sets: bool = True  # run the sample-set metrics for samplers


@dataclass(frozen=True)
class SuiteConfig:
    levels: tuple[Level, ...]
    n_problems: int = 32
    problems_per_operator: int = 16  # for RANDOM_PRESETS; other presets: one operator per set
    n_sample_problems: int = 4  # problems per set that get sample sets (evenly spaced)
    #: per-prior override of n_sample_problems (time budget: DPS sample sets dominate at d = 256)
    sample_problems_by_prior: tuple[tuple[str, int], ...] = (("gmm-synthetic-256", 2),)
    n_samples: int = 64  # solver samples per sample-set problem
    n_reference: int = 1024  # exact posterior samples for the sliced Wasserstein reference
    sw_projections: int = 256
    mode_tol: float = 0.01  # RMS distance (model units) to count as "at" a mode
    solver_specs: tuple[TableEntry, ...] = SOLVERS


ALL_PRIORS = tuple(PRIOR_INDEX)
MAIN_PRESETS = ("inpaint_random", "inpaint_box", "sr4_avgpool", "deblur_uniform")


def default_config() -> SuiteConfig:
    """The committed table: sigma_y = 0.05 on the full grid; sigma_y = 1e-3 on the 64-d priors
    for the point estimators (no sample sets)."""
    labels = tuple(s.label for s in SOLVERS)
    return SuiteConfig(levels=(
        Level(0.05, ALL_PRIORS, MAIN_PRESETS, labels, sample_sets=True),
        Level(1e-3, ("gmm-synthetic-64", "gmm-digits"), MAIN_PRESETS,
              ("vml_map/default", "vml_map/plain", "dps", "ddrm", "pigdm", "oracle_map", "oracle_mean"),
              sample_sets=False),
    ))


# ----------------------------------------------------------------------------- problems


@dataclass
class Group:
    """Problems that share one operator draw (one batched solver call, one exact posterior)."""

    problems: list[Problem]
    js: list[int]
    seeds: list[int]  # problem ids s
    post: object
    modes: list = field(default_factory=list)

    @property
    def op(self):
        return self.problems[0].operator

    @property
    def op_seed(self) -> int:
        return self.problems[0].operator_seed

    @property
    def ids(self) -> list[str]:
        return [p.image_id for p in self.problems]

    @property
    def x0(self) -> Tensor:
        """Truths (B, C, H, W), model space."""
        return torch.cat([p.x_model for p in self.problems])

    @property
    def y(self) -> Tensor:
        return torch.cat([p.y for p in self.problems])


@dataclass
class ProblemSet:
    prior_name: str
    prior: object
    preset: str
    sigma_y: float
    groups: list[Group]


def build_problem_set(cfg: SuiteConfig, prior_name: str, prior, preset: str, sigma_y: float) -> ProblemSet:
    """The set's problems, built by :func:`invbench.bench.problem.build_problem` (module docstring)."""
    task = TaskSpec(preset, preset, model_sigma_to_pixel(sigma_y), {})
    per_op = cfg.problems_per_operator if preset in RANDOM_PRESETS else cfg.n_problems
    groups = []
    for g, start in enumerate(range(0, cfg.n_problems, per_op)):
        js = list(range(start, min(start + per_op, cfg.n_problems)))
        problems = []
        for j in js:
            x0, truth_id = truth(prior_name, prior, preset, j)
            problems.append(build_problem(task, prior_name, truth_id, model_to_pixel(x0), PART, PART,
                                          operator_id=f"group{g}", dtype=DT))
        grp = Group(problems, js, [problem_seed(prior_name, preset, j) for j in js], None)
        grp.post = prior.posterior(grp.op, grp.y, sigma_y)
        grp.modes = grp.post.modes()
        groups.append(grp)
    return ProblemSet(prior_name, prior, preset, sigma_y, groups)


# ----------------------------------------------------------------------------- metrics


def classify_modes(x: Tensor, modes, tol: float) -> tuple[str, float, int, int]:
    """``("global" | "local" | "elsewhere", RMS distance to the nearest mode, index of the nearest
    mode (0 = global MAP), number of modes)``.

    ``modes`` is one :class:`invbench.priors.gmm_posterior.Modes` (best first). "global": the nearest
    found mode is the global MAP and the RMS distance to it is <= ``tol``; "local": the nearest
    is another local maximum within ``tol``; otherwise "elsewhere".
    """
    pts = modes.points.reshape(modes.points.shape[0], -1).to(DT)
    dist = (pts - x.reshape(1, -1).to(DT)).norm(dim=1) / math.sqrt(pts.shape[1])
    k = int(dist.argmin())
    dmin = float(dist[k])
    if dmin > tol:
        return "elsewhere", dmin, k, pts.shape[0]
    return ("global" if k == 0 else "local"), dmin, k, pts.shape[0]


def point_metrics(x: Tensor, grp: Group, tol: float) -> list[dict]:
    """Per-problem metrics of point estimates ``x`` (B, C, H, W) model space:

    ``mse_px`` = mean((x_px - x0_px)^2) in pixel units [0, 1]^2; ``dist_to_map``,
    ``rel_dist_to_map``, ``logpost_gap``, ``err_post_mean`` from ``posterior_metrics``;
    ``mode`` / ``dist_to_nearest_mode`` / ``nearest_mode`` / ``n_modes`` from :func:`classify_modes`.
    """
    pm = posterior_metrics(model_to_pixel(x), grp.post)
    mse = ((model_to_pixel(x) - model_to_pixel(grp.x0)) ** 2).flatten(1).mean(1)
    rows = []
    for b in range(x.shape[0]):
        mode, dm, k, nm = classify_modes(x[b], grp.modes[b], tol)
        rows.append({"mse_px": float(mse[b]), **{c: float(v[b]) for c, v in pm.items()},
                     "mode": mode, "dist_to_nearest_mode": dm, "nearest_mode": k, "n_modes": nm})
    return rows


def sample_metrics(xs: Tensor, mu: Tensor, reference: Tensor, n_projections: int) -> dict:
    """For one problem: ``xs`` (n, C, H, W) solver samples, ``mu`` the exact posterior mean,
    ``reference`` (m, C, H, W) exact posterior samples. ``err_avg_post_mean`` = RMS distance of
    the n-sample average to ``mu``; ``sw`` = sliced W2 (model units) of ``xs`` vs ``reference``."""
    d = xs[0].numel()
    avg = xs.to(DT).mean(0)
    return {"err_avg_post_mean": float((avg - mu.to(DT)).norm() / math.sqrt(d)),
            "sw": sliced_wasserstein(xs, reference, n_projections, SW_SEED)}


# ----------------------------------------------------------------------------- running


def _nan_point() -> dict:
    nan = float("nan")
    return {"mse_px": nan, "dist_to_map": nan, "rel_dist_to_map": nan, "logpost_gap": nan,
            "err_post_mean": nan, "mode": "failed", "dist_to_nearest_mode": nan, "nearest_mode": -1, "n_modes": 0}


def run_point(spec: TableEntry, ps: ProblemSet, cfg: SuiteConfig) -> tuple[list[dict], dict]:
    """One solver run per problem (its own solver draw), one batched call per operator group;
    per-problem rows and cost."""
    rows, nfe, vjp, secs = [], None, None, 0.0
    for grp in ps.groups:
        cp = CountingPrior(ps.prior)
        solver = spec.build(ps.preset)
        t0 = time.perf_counter()
        status = "ok"
        try:
            x = solve_and_score(solver, grp.problems, cp).x_hat.to(DT)
            secs += time.perf_counter() - t0
            mets = point_metrics(x, grp, cfg.mode_tol)
        except (solvers.SolverDiverged, solvers.SolverSkip) as e:
            secs += time.perf_counter() - t0
            status = f"{type(e).__name__}: {e}"
            mets = [_nan_point() for _ in grp.seeds]
        nfe, vjp = cp.nfe, cp.vjp
        for j, s, pid, m in zip(grp.js, grp.seeds, grp.ids, mets):
            rows.append({"j": j, "seed": s, "truth_id": pid, "op_seed": grp.op_seed, "status": status, **m})
    return rows, {"nfe": nfe, "vjp": vjp, "seconds": secs}


def sample_problem_indices(cfg: SuiteConfig, prior_name: str) -> list[int]:
    """Evenly spaced problem indices that get sample sets."""
    k = min(dict(cfg.sample_problems_by_prior).get(prior_name, cfg.n_sample_problems), cfg.n_problems)
    return [int(i * cfg.n_problems / k) for i in range(k)] if k else []


def run_samples(spec: TableEntry, ps: ProblemSet, cfg: SuiteConfig) -> tuple[dict[int, dict], float]:
    """Sample sets for the problems of :func:`sample_problem_indices`: ``n_samples`` solver
    samples each (solver draws ``"validation/sample<k>"``), one batched call per operator group."""
    wanted = set(sample_problem_indices(cfg, ps.prior_name))
    out, secs = {}, 0.0
    n = cfg.n_samples
    for grp in ps.groups:
        loc = [i for i, j in enumerate(grp.js) if j in wanted]
        if not loc:
            continue
        draws = [grp.problems[i].with_solver_part(f"{PART}/sample{k}") for i in loc for k in range(n)]
        solver = spec.build(ps.preset)
        t0 = time.perf_counter()
        try:
            xs = solve_and_score(solver, draws, ps.prior).x_hat.to(DT)
        except (solvers.SolverDiverged, solvers.SolverSkip):
            xs = None
        secs += time.perf_counter() - t0
        mu = grp.post.mean()
        for a, i in enumerate(loc):
            if xs is None:
                out[grp.js[i]] = {"err_avg_post_mean": float("nan"), "sw": float("nan")}
                continue
            p = grp.problems[i]
            post_i = ps.prior.posterior(p.operator, p.y, ps.sigma_y)
            ref = post_i.sample(cfg.n_reference, generator=generator(p.seed_for("reference", PART)))[0]
            out[grp.js[i]] = sample_metrics(xs[a * n : (a + 1) * n], mu[i], ref, cfg.sw_projections)
    return out, secs


def _median(v: list[float]) -> float:
    a = np.asarray([x for x in v if not math.isnan(x)], dtype=np.float64)
    return float(np.median(a)) if a.size else float("nan")


def _mean(v: list[float]) -> float:
    a = np.asarray([x for x in v if not math.isnan(x)], dtype=np.float64)
    return float(a.mean()) if a.size else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Aggregate one (prior, preset, sigma_y, solver) cell over its problems.

    Means over problems of ``mse_px``, ``dist_to_map``, ``err_post_mean``; medians of
    ``dist_to_map``, ``rel_dist_to_map`` and ``logpost_gap``; mean ``logpost_gap``; fractions of
    problems classified global / local / elsewhere and of problems whose nearest found mode is the
    global MAP (any distance); the mean number of modes found; over the sample-set problems, the means of
    ``err_avg_post_mean`` and ``sw``.
    """
    def col(k):
        return [r[k] for r in rows]

    n = len(rows)
    sam = [r for r in rows if "sw" in r]
    out = {
        "n_problems": n,
        "n_failed": sum(r["status"] != "ok" for r in rows),
        "mse_px_mean": _mean(col("mse_px")),
        "dist_to_map_mean": _mean(col("dist_to_map")),
        "dist_to_map_median": _median(col("dist_to_map")),
        "rel_dist_to_map_median": _median(col("rel_dist_to_map")),
        "logpost_gap_median": _median(col("logpost_gap")),
        "logpost_gap_mean": _mean(col("logpost_gap")),
        "err_post_mean_mean": _mean(col("err_post_mean")),
        "frac_global": sum(r["mode"] == "global" for r in rows) / n,
        "frac_local": sum(r["mode"] == "local" for r in rows) / n,
        "frac_elsewhere": sum(r["mode"] == "elsewhere" for r in rows) / n,
        "frac_nearest_global": sum(r["nearest_mode"] == 0 for r in rows) / n,
        "n_modes_mean": _mean([float(r["n_modes"]) for r in rows]),
        "n_sample_problems": len(sam),
        "err_avg_post_mean_mean": _mean([r["err_avg_post_mean"] for r in sam]) if sam else float("nan"),
        "sw_mean": _mean([r["sw"] for r in sam]) if sam else float("nan"),
    }
    return out


def run_cell(spec: TableEntry, ps: ProblemSet, cfg: SuiteConfig, level: Level) -> tuple[list[dict], dict]:
    """Point run (+ sample sets for samplers); returns per-problem rows and the summary row."""
    rows, cost = run_point(spec, ps, cfg)
    n_samples = 0
    if spec.sampler and level.sample_sets and cfg.n_sample_problems > 0:
        sm, secs = run_samples(spec, ps, cfg)
        for r in rows:
            if r["j"] in sm:
                r.update(sm[r["j"]])
        cost["seconds_samples"] = secs
        n_samples = cfg.n_samples
    key = {"prior": ps.prior_name, "d": int(math.prod(ps.prior.image_shape)), "preset": ps.preset,
           "sigma_y": ps.sigma_y, "solver": spec.label, "solver_name": spec.name,
           "solver_preset": spec.preset_for(ps.preset)}
    for r in rows:
        r.update(key)
    summary = {**key, **summarise(rows), "n_samples": n_samples, "nfe": cost["nfe"], "vjp": cost["vjp"],
               "seconds_point": cost["seconds"], "seconds_samples": cost.get("seconds_samples", 0.0)}
    return rows, summary


def run_suite(cfg: SuiteConfig, progress: Callable[[str], None] = print,
              only: Callable[[str, str, float, str], bool] | None = None) -> tuple[list[dict], list[dict]]:
    """Run every (level, prior, preset, solver) cell; ``only(prior, preset, sigma_y, label)``
    filters cells. Returns (per-problem rows, summary rows)."""
    specs = {s.label: s for s in cfg.solver_specs}
    problem_rows, table = [], []
    t_start = time.perf_counter()
    cache: dict[str, object] = {}
    for level in cfg.levels:
        for prior_name in level.priors:
            if prior_name not in cache:
                cache[prior_name] = priors.build(prior_name)
            prior = cache[prior_name]
            for preset in level.presets:
                labels = [lab for lab in level.solvers
                          if (specs[lab].priors is None or prior_name in specs[lab].priors)
                          and (only is None or only(prior_name, preset, level.sigma_y, lab))]
                if not labels:
                    continue
                t0 = time.perf_counter()
                ps = build_problem_set(cfg, prior_name, prior, preset, level.sigma_y)
                progress(f"[{time.perf_counter() - t_start:7.1f}s] {prior_name} {preset} sigma_y={level.sigma_y:g}: "
                         f"posterior+modes {time.perf_counter() - t0:.1f}s")
                for lab in labels:
                    t1 = time.perf_counter()
                    rows, summ = run_cell(specs[lab], ps, cfg, level)
                    problem_rows += rows
                    table.append(summ)
                    progress(f"[{time.perf_counter() - t_start:7.1f}s]   {lab:16s} {time.perf_counter() - t1:6.1f}s  "
                             f"dist_to_map(med)={summ['dist_to_map_median']:.2e} global={summ['frac_global']:.2f} "
                             f"sw={summ['sw_mean']:.3g}")
    return problem_rows, table


# ----------------------------------------------------------------------------- outputs

TABLE_KEYS = ("prior", "d", "preset", "sigma_y", "solver", "solver_name", "solver_preset")
#: columns that depend on the machine's speed (not reproduced bit for bit)
TIMING_COLUMNS = ("seconds_point", "seconds_samples")
PROBLEM_COLUMNS = ("prior", "d", "preset", "sigma_y", "solver", "solver_name", "solver_preset", "j", "seed",
                   "truth_id", "op_seed", "status", "mse_px", "dist_to_map", "rel_dist_to_map", "logpost_gap",
                   "err_post_mean", "mode", "dist_to_nearest_mode", "nearest_mode", "n_modes", "err_avg_post_mean",
                   "sw")


def write_csv(path, rows: list[dict], columns: tuple[str, ...] | None = None) -> None:
    """CSV with full float precision (``repr``: float64 values round-trip exactly)."""
    cols = list(columns or rows[0].keys())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    data = buf.getvalue().encode()
    if str(path).endswith(".gz"):
        with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime=0: byte-identical reruns
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def read_csv(path) -> list[dict]:
    """Read a CSV written by :func:`write_csv` (values as strings)."""
    if str(path).endswith(".gz"):
        with gzip.open(path, "rt", newline="") as f:
            return list(csv.DictReader(f))
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pooled(problem_rows: list[dict], by: tuple[str, ...]) -> list[dict]:
    """Summaries (:func:`summarise`) over problem rows grouped by the ``by`` columns."""
    groups: dict[tuple, list[dict]] = {}
    for r in problem_rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    return [{**dict(zip(by, k)), **summarise(v)} for k, v in groups.items()]
