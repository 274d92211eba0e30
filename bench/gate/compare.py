"""``invbench compare BASE_RUN NEW_RUN``: the regression gate between two runs.

Rows are paired by (solver, preset, task, dataset, prior, image_id, seed). The verdict is one
decision about the run: every statistical test of every cell (below) enters one family, and
the run is flagged only where Holm's step-down procedure over that family rejects, so the
probability that a run with no change anywhere exits 1 (the run-level false-alarm rate) is at
most ``alpha`` (family-wise error rate; :func:`invbench.bench.gate.stats.holm_tarone`). A test whose
sample is too small to ever reach the run's level is left out of the family (Tarone) and its
cell reported "not gated". Per cell (solver × preset × task × dataset × prior):

* **quality** — per image (its seeds averaged first: the image is the unit) ``d_i = new − base``
  of ``--metric`` over the pairs where both rows are ok and finite; a one-sided paired t test of
  "worse by more than ``max_drop``" (mean below ``-max_drop`` for higher-is-better metrics,
  above ``+max_drop`` for lower-is-better ones). With fewer than ``min_samples`` images the
  quality is "not gated" and no interval is shown.
* **network work** (normalised cost) — mean NFE and mean VJP per image: exact counts, a
  regression when either grows by more than ``max_slowdown`` (no test needed, outside the family).
* **time** — a paired test on timed solver calls (:mod:`invbench.bench.gate.cost`): a call's
  ``timing_repeats`` are averaged first (geometric mean: back-to-back repeats are not independent
  samples), calls are paired across the runs by the rows they solved, and the exact one-sided
  Wilcoxon signed-rank test asks whether ``log(new/base)`` exceeds ``log max_slowdown``
  (:func:`invbench.bench.gate.stats.paired_ratio_test`; estimate: Hodges–Lehmann ratio). The cost is

  - ``normalised`` (default when both runs carry a device calibration): solver seconds ÷
    network seconds of the same call. Load slows both parts, so the ratio holds — but only where
    the network is most of the solve: a cell whose network share of the baseline's solve time is
    below :func:`min_network_share` (0.9 at ×1.2) is "time not gated" (a cheap network: load
    stretches the rest more than the network) and judged on NFE/VJP only; a cell without network
    time (the oracles) is "time not gated" as well (nothing to normalise by);
  - ``wall``: seconds per image, every cell; meaningful only between runs on one machine under
    the same load (a warning names differing device, CPU model, CPU capability or threads).

  With fewer than ``min_samples`` paired calls the time is "not gated". No absolute slack
  (``min_slowdown_s``, default 0) hides a short cell.
* **status** — a pair whose base row is ok and whose new row is not (skipped, diverged, oom,
  error) is a regression; so is a base ok row missing from the new run, unless
  ``--allow-missing``.

A cell is "regression" when anything above flags it, else "not gated" when its quality or time
could not be judged (the reason is printed, with the point estimate that was not judged), else
"ok". Intervals are printed only from ``min_samples`` units (time: from 6, the fewest with a 95 %
Walsh-average interval).

What cannot be judged is refused (exit 2, one line saying why) before any verdict:

* a run that is **incomplete** — its store holds fewer rows than its grid (meta ``grid_rows``:
  a killed or stopped run; finish it with ``invbench run ... --resume``) — or **still being
  written** (a live process holds its ``.lock``); the line names the run and its rows "k of N".
  Such runs are refused rather than judged on the cells both finished: a missing row is
  otherwise a regression, and a half-run baseline would pass anything;
* runs of **different configs** (their ``config_hash`` differs: another name, noise level,
  steps, ...): the line lists the differing keys of the stored configs (keys that are not part
  of the hash — description, execution, batch_size, report, solver resources — are left out).
  ``--allow-config-change`` judges them anyway and prints the same list as a warning;
* a run with **no ok row** (every row skipped or failed): the line gives its status counts;
* a ``--metric`` that a run did **not compute** (no ok row has a finite value of it), named.

Exit codes: 0 no regression, 1 at least one regression, 2 bad input (missing run dir or store,
unknown/unavailable metric, bad thresholds, no pairs, and the refusals above), 3 no regression
but at least one cell not gated, only with ``--fail-not-gated`` (alias ``--fail-inconclusive``;
otherwise such cells exit 0 and are listed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import tomllib
from invbench.bench.config import HASH_EXCLUDED
from invbench.bench.gate.cost import (
    has_calibration,
    network_share,
    network_work,
    paired_units,
    timing_samples,
)
from invbench.bench.gate.stats import (
    MIN_CI_UNITS,
    DropTest,
    RatioTest,
    holm_tarone,
    paired_drop_test,
    paired_ratio_test,
)
from invbench.bench.report.data import CELL_KEYS, ROW_KEYS, RunData, RunDirError, load_run
from invbench.bench.report.stats import DIRECTIONS, direction
from invbench.bench.store import lock_held
from tabulate import tabulate

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_NOT_GATED = 0, 1, 2, 3
EXIT_INCONCLUSIVE = EXIT_NOT_GATED   # the name of exit 3 before "not gated" replaced "inconclusive"
FORMATS = ("text", "markdown", "json")
COSTS = ("auto", "normalised", "wall")
_COST_COLS = ("seconds", "net_seconds", "timings", "nfe", "vjp")
_MACHINE_KEYS = ("device", "cpu_model", "cpu_capability", "gpu_name", "torch_threads")
LOAD_SKEW = 3.0
"""Bound on how much more machine load can stretch a solve's time outside the network than its
time inside it (the busy-loop pair of a cheap analytic network measured ×2.9); sets
:func:`min_network_share`."""


def min_network_share(max_slowdown: float) -> float:
    """Fewest network share of a cell's solve time for which load moves solver time ÷ network
    time by less than ``max_slowdown`` even when it stretches the rest :data:`LOAD_SKEW` times
    more: with share f the ratio moves by ``f + LOAD_SKEW·(1 − f)`` at most, so
    ``f ≥ 1 − (max_slowdown − 1)/(LOAD_SKEW − 1)`` (0.9 at ×1.2)."""
    return min(1.0, max(0.0, 1.0 - (max_slowdown - 1.0) / (LOAD_SKEW - 1.0)))


class CompareError(ValueError):
    """Bad input to compare (exit code 2)."""


@dataclass
class CellVerdict:
    key: tuple[str, ...]
    n_pairs: int = 0
    n_metric: int = 0                     # images with a paired metric value (seeds averaged)
    diff_mean: float = math.nan
    diff_low: float = math.nan            # interval of the mean difference (NaN below --min-samples)
    diff_high: float = math.nan
    quality: DropTest | None = None       # the quality test, when gated
    time_ratio: float = math.nan          # Hodges–Lehmann ratio new/base of the judged cost
    base_median_s: float = math.nan       # median seconds per image (wall), for reference
    new_median_s: float = math.nan
    speed: RatioTest | None = None        # the time test on the judged basis (also when not gated)
    speed_basis: str = ""                 # "normalised" | "wall"
    speed_gated: bool = False
    network_share: float = math.nan       # base run: network seconds / solve seconds (median call)
    p_adjusted: dict[str, float] = field(default_factory=dict)   # "quality" / "time": Holm-adjusted p
    nfe: tuple[float, float] = (math.nan, math.nan)   # mean NFE per image (base, new)
    vjp: tuple[float, float] = (math.nan, math.nan)
    status_changes: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    reasons: list[str] = field(default_factory=list)
    not_gated: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.reasons)

    @property
    def verdict(self) -> str:
        return "regression" if self.reasons else "not gated" if self.not_gated else "ok"

    @property
    def inconclusive(self) -> list[str]:
        """The former name of :attr:`not_gated`."""
        return self.not_gated


@dataclass(frozen=True)
class Thresholds:
    metric: str = "psnr"
    max_drop: float = 0.1
    max_slowdown: float = 1.2
    min_slowdown_s: float = 0.0
    alpha: float = 0.05
    allow_missing: bool = False
    cost: str = "auto"
    min_samples: int = MIN_CI_UNITS
    allow_config_change: bool = False


@dataclass
class Family:
    """The run's tests: how many of each kind entered Holm's procedure and how many were left
    out because their sample could never reach the run-level significance (Tarone)."""

    quality: int = 0
    time: int = 0
    left_out: int = 0

    @property
    def size(self) -> int:
        return self.quality + self.time


@dataclass
class Comparison:
    """Verdicts plus what they were judged on (``cost`` resolved from ``auto``), warnings and the
    family of tests."""

    verdicts: list[CellVerdict]
    cost: str
    warnings: list[str]
    machines: dict[str, dict[str, str]]
    family: Family = field(default_factory=Family)


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for k in ROW_KEYS:
        if k not in df:
            raise CompareError(f"results table lacks column {k!r}")
    for k in ROW_KEYS:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype("Int64").astype(str) if k == "seed" else df[k].astype(str)
    for c in _COST_COLS:   # runs made before a column existed
        if c not in df:
            df[c] = None
    return df


def _check_metric(run: RunData, metric: str, which: str) -> None:
    if metric not in run.results.columns:
        raise CompareError(f"metric {metric!r} is not a column of the {which} run's results")
    why = run.unavailable().get(metric)
    if why:
        raise CompareError(f"metric {metric!r} is {why} in the {which} run; choose another --metric")


def _check_complete(run: RunData, which: str) -> None:
    """CompareError when ``run`` is still being written or holds fewer rows than its grid."""
    rows = len(run.results)
    try:
        grid: int | None = int(run.meta["grid_rows"])
    except (KeyError, ValueError):
        grid = None   # a run made before grid_rows was recorded: only the lock tells
    done = f"{rows} of {grid} rows" if grid is not None else f"{rows} rows so far"
    if lock_held(run.run_dir):
        raise CompareError(f"the {which} run {run.run_dir} is still being written (a live process holds its .lock; "
                           f"{done}): compare it when it has finished")
    if grid is not None and rows < grid:
        raise CompareError(f"the {which} run {run.run_dir} is incomplete: {done} (killed or stopped before the end); "
                           "finish it with invbench run CONFIG --out RUN --resume, then compare")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"tasks[0].noise_sigma": 0.05, ...}``: the leaves of a config (lists of scalars are leaves)."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and any(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def _relevant(config_text: str) -> dict[str, Any]:
    """Leaves of a stored config that enter its hash (see ``invbench.bench.config.config_hash``)."""
    try:
        d = tomllib.loads(config_text)
    except (tomllib.TOMLDecodeError, TypeError):
        return {}
    d = {k: v for k, v in d.items() if k not in HASH_EXCLUDED}
    if isinstance(d.get("solvers"), list):
        d["solvers"] = [{k: v for k, v in s.items() if k != "resources"} if isinstance(s, dict) else s
                        for s in d["solvers"]]
    return _flat(d)


_ABSENT = object()


def _val(v: Any) -> str:
    """A config value as shown in a list of changes (strings quoted, long values cut)."""
    text = "absent" if v is _ABSENT else repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def config_changes(base: dict[str, str], new: dict[str, str]) -> list[str] | None:
    """``None`` when the runs' config hashes are equal (or either is unrecorded), else the
    differing keys of their stored configs as ``"key (base -> new)"``."""
    hb, hn = base.get("config_hash"), new.get("config_hash")
    if not hb or not hn or hb == hn:
        return None
    cb, cn = _relevant(base.get("config", "")), _relevant(new.get("config", ""))
    keys = [k for k in sorted(set(cb) | set(cn)) if cb.get(k, _ABSENT) != cn.get(k, _ABSENT)]
    return [f"{k} ({_val(cb.get(k, _ABSENT))} -> {_val(cn.get(k, _ABSENT))})" for k in keys]


def _check_config(base: RunData, new: RunData, th: Thresholds) -> list[str]:
    """CompareError for runs of different configs unless ``th.allow_config_change`` (then one
    warning naming the differing keys)."""
    diff = config_changes(base.meta, new.meta)
    if diff is None:
        return []
    shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
    what = (f"config_hash {base.meta['config_hash']} vs {new.meta['config_hash']}; "
            + (f"differing keys: {shown}" if diff else "no differing key found in the stored configs"))
    if not th.allow_config_change:
        raise CompareError(f"the runs have different configs ({what}); compare two runs of one config, or pass "
                           "--allow-config-change to judge them anyway")
    return [f"runs of different configs compared (--allow-config-change): {what}"]


def _ok_rows(run: RunData) -> pd.DataFrame:
    return run.results[run.results["status"].astype(str) == "ok"] if "status" in run.results else run.results.iloc[:0]


def _check_ok_rows(run: RunData, which: str) -> None:
    """CompareError when ``run`` has no ok row (nothing to judge), with its status counts."""
    if len(_ok_rows(run)):
        return
    res = run.results
    counts = ", ".join(f"{s} {n}" for s, n in res["status"].astype(str).value_counts().items()) \
        if "status" in res and len(res) else "no rows"
    msgs = [str(m).strip() for m in res.get("message", pd.Series(dtype=str)).dropna() if str(m).strip()]
    example = f"; e.g. {msgs[0].splitlines()[0][:120]!r}" if msgs else ""
    raise CompareError(f"the {which} run has no ok rows ({counts}{example}): nothing to judge")


def _computed(run: RunData, metric: str) -> bool:
    """True when an ok row of ``run`` has a finite value of ``metric``."""
    ok = _ok_rows(run)
    if metric not in ok:
        return False
    return bool(np.isfinite(pd.to_numeric(ok[metric], errors="coerce").to_numpy(np.float64)).any())


def _check_computed(base: RunData, new: RunData, metric: str) -> None:
    """CompareError naming ``metric`` when a run did not compute it (no ok row has a value)."""
    lacking = [w for w, r in (("base", base), ("new", new)) if not _computed(r, metric)]
    if not lacking:
        return
    both = [m for m, d in DIRECTIONS.items() if d and _computed(base, m) and _computed(new, m)]
    hint = f"choose another --metric (computed by both: {', '.join(both)})" if both else "choose another --metric"
    who = "computed by neither run" if len(lacking) == 2 else f"not computed by the {lacking[0]} run"
    raise CompareError(f"metric {metric!r} was {who} (no ok row has a value); {hint}")


def check_comparable(base: RunData, new: RunData, th: Thresholds) -> list[str]:
    """The refusals of the module docstring (CompareError, in this order: incomplete or running
    run, different configs, no ok rows, metric not computed); returns warnings."""
    _check_complete(base, "base")
    _check_complete(new, "new")
    warnings = _check_config(base, new, th)
    _check_ok_rows(base, "base")
    _check_ok_rows(new, "new")
    _check_computed(base, new, th.metric)
    return warnings


def machine(run: RunData) -> dict[str, str]:
    """What the run's timings depend on, from its meta (missing keys: "unrecorded")."""
    return {k: str(run.meta.get(k, "unrecorded")) for k in _MACHINE_KEYS}


def _side(g: pd.DataFrame, suffix: str) -> pd.DataFrame:
    return pd.DataFrame({c: g[f"{c}{suffix}"].to_numpy() for c in _COST_COLS})


@dataclass
class _Pending:
    """A test of one cell waiting for the run-level decision."""

    cell: CellVerdict
    kind: str            # "quality" | "time"
    p: float
    min_p: float
    reason: str          # the regression text when rejected
    left_out: str        # the not-gated text when Tarone leaves it out


def _judge_quality(v: CellVerdict, both_ok: pd.DataFrame, th: Thresholds, d: int) -> _Pending | None:
    """Quality of one cell: per image (seeds averaged) new − base; a one-sided paired t test of
    "worse by more than max_drop" when at least ``min_samples`` images pair."""
    mb = pd.to_numeric(both_ok[f"{th.metric}_b"], errors="coerce")
    mn = pd.to_numeric(both_ok[f"{th.metric}_n"], errors="coerce")
    fin = np.isfinite(mb.to_numpy(np.float64)) & np.isfinite(mn.to_numpy(np.float64))
    if not fin.any():
        v.not_gated.append(f"quality not gated: no image has a finite {th.metric} in both runs")
        return None
    img = both_ok["image_id"].to_numpy()[fin]
    per = pd.DataFrame({"img": img, "d": (mn - mb).to_numpy(np.float64)[fin]}).groupby("img")["d"].mean()
    t = paired_drop_test(per.to_numpy(), max_drop=th.max_drop, direction=d, alpha=th.alpha, min_n=th.min_samples)
    v.n_metric, v.diff_mean, v.diff_low, v.diff_high = t.n, t.mean, t.ci_low, t.ci_high
    if t.n < th.min_samples:
        v.not_gated.append(f"quality not gated: {t.n} image(s) < {th.min_samples} (--min-samples); "
                           f"mean {th.metric} difference {t.mean:+.3g}")
        return None
    v.quality = t
    ci = f"{100 * (1 - th.alpha):g}% CI [{_f(t.ci_low, '.3g')}, {_f(t.ci_high, '.3g')}]"
    return _Pending(v, "quality", t.p_value, 0.0,
                    f"{th.metric} worse by more than {th.max_drop:g}: mean {t.mean:+.3g}, {ci}, n = {t.n} images, "
                    f"p = {t.p_value:.2g}", "")


def _judge_work(v: CellVerdict, rb: pd.DataFrame, rn: pd.DataFrame, th: Thresholds) -> None:
    """Network work: mean NFE / VJP per image, exact counts (no test)."""
    for name, (b, n) in (("NFE", v.nfe), ("VJP", v.vjp)):
        if math.isfinite(b) and math.isfinite(n) and (n > b * th.max_slowdown if b > 0 else n > 0):
            v.reasons.append(f"more network work: {name}/image {b:.4g} -> {n:.4g}"
                             + (f" (x{n / b:.3g} > x{th.max_slowdown:g})" if b > 0 else ""))


def _time_basis(v: CellVerdict, rb: pd.DataFrame, th: Thresholds, cost: str) -> tuple[str, str]:
    """``(basis, why not gated)`` of a cell's time: ``why`` is empty when the time is gated."""
    if cost == "wall":
        return "wall", ""
    v.network_share = network_share(rb)
    if not math.isfinite(v.network_share):
        return "wall", ("time not gated: no network time (NFE = 0) to normalise by, and wall time moves with "
                        "machine load (--cost wall judges it between runs on one quiet machine)")
    floor = min_network_share(th.max_slowdown)
    if v.network_share < floor:
        return "normalised", (f"time not gated: the network is {100 * v.network_share:.0f}% of the solve time "
                              f"(< {100 * floor:.0f}%), too cheap for solver time / network time to hold under "
                              "machine load; judged on NFE/VJP only")
    return "normalised", ""


def _judge_cost(v: CellVerdict, both_ok: pd.DataFrame, th: Thresholds, cost: str) -> _Pending | None:
    """Cost of one cell: exact network work (normalised cost) and the paired time test."""
    rb, rn = _side(both_ok, "_b"), _side(both_ok, "_n")
    wb, wn = timing_samples(rb, "wall"), timing_samples(rn, "wall")
    if wb.size:
        v.base_median_s = float(np.median(wb))
    if wn.size:
        v.new_median_s = float(np.median(wn))
    v.nfe = (network_work(rb)[0], network_work(rn)[0])
    v.vjp = (network_work(rb)[1], network_work(rn)[1])
    if cost == "normalised":
        _judge_work(v, rb, rn, th)
    basis, why = _time_basis(v, rb, th, cost)
    ub, un = paired_units(rb, rn, basis)
    t = paired_ratio_test(ub, un, max_ratio=th.max_slowdown, alpha=th.alpha, min_n=th.min_samples)
    v.speed, v.speed_basis, v.time_ratio = t, basis, t.ratio
    what = "solver time / network time" if basis == "normalised" else "seconds/image"
    point = f"{what} x{_f(t.ratio, '.3g')}"
    if not why and t.n < th.min_samples:
        why = (f"time not gated: {t.n} paired timed call(s) < {th.min_samples} (--min-samples; timing_repeats "
               "repeat a call, they add no call)")
    if why:
        v.not_gated.append(f"{why}; {point} not judged" if t.n else why)
        return None
    v.speed_gated = True
    if th.min_slowdown_s > 0 and not (v.new_median_s - v.base_median_s > th.min_slowdown_s):
        return None   # the optional absolute slack: a growth within it is never a regression
    ci = f"{100 * (1 - th.alpha):g}% CI [{_f(t.ci_low, '.3g')}, {_f(t.ci_high, '.3g')}]"
    return _Pending(v, "time", t.p_value, t.min_p,
                    f"slower: {point} > x{th.max_slowdown:g}, {ci}, n = {t.n} paired calls, p = {t.p_value:.2g}",
                    f"time not gated: {t.n} paired calls can never reach the run's significance level "
                    f"(smallest p {t.min_p:.2g}); {point} not judged")


def _decide(pending: list[_Pending], alpha: float) -> Family:
    """The run-level decision: Holm over the family (Tarone's choice), reasons and notes set."""
    adj, testable, _ = holm_tarone([x.p for x in pending], [x.min_p for x in pending], alpha)
    fam = Family()
    for x, a, ok in zip(pending, adj, testable, strict=True):
        if not ok:
            fam.left_out += 1
            if x.kind == "time":
                x.cell.speed_gated = False
            x.cell.not_gated.append(x.left_out)
            continue
        setattr(fam, x.kind, getattr(fam, x.kind) + 1)
        x.cell.p_adjusted[x.kind] = a
        if a <= alpha:
            x.cell.reasons.append(f"{x.reason}, Holm-adjusted p = {a:.2g}")
    return fam


def resolve_cost(base: RunData, new: RunData, cost: str) -> tuple[str, list[str]]:
    """The cost basis actually used and the warnings that go with it."""
    warnings: list[str] = []
    calibrated = has_calibration(base.meta) and has_calibration(new.meta)
    if cost == "auto":
        cost = "normalised" if calibrated else "wall"
        if not calibrated:
            warnings.append("a run carries no device calibration (made by an older version): cost judged on wall time")
    elif cost == "normalised" and not calibrated:
        raise CompareError("--cost normalised needs both runs to carry a device calibration (meta 'calibration'); "
                           "rerun them with this version or use --cost wall")
    if cost == "wall":
        mb, mn = machine(base), machine(new)
        diff = [k for k in _MACHINE_KEYS if mb[k] != mn[k]]
        if diff:
            warnings.append("wall-time cost between runs on different machines ("
                            + "; ".join(f"{k}: {mb[k]!r} vs {mn[k]!r}" for k in diff)
                            + "): timing differences may come from the machine, not the code")
    return cost, warnings


def compare(base: RunData, new: RunData, th: Thresholds) -> Comparison:
    """Per-cell verdicts of ``new`` against ``base`` (see the module docstring for the rules)."""
    d = direction(th.metric)
    if d == 0:
        raise CompareError(f"metric {th.metric!r} has no declared direction; known: "
                           f"{', '.join(m for m, v in DIRECTIONS.items() if v)}")
    if th.cost not in COSTS:
        raise CompareError(f"--cost must be one of {', '.join(COSTS)}, got {th.cost!r}")
    _check_metric(base, th.metric, "base")
    _check_metric(new, th.metric, "new")
    warnings = check_comparable(base, new, th)
    cost, cost_warnings = resolve_cost(base, new, th.cost)
    warnings += cost_warnings
    b, n = _norm(base.results), _norm(new.results)
    if b.duplicated(list(ROW_KEYS)).any() or n.duplicated(list(ROW_KEYS)).any():
        raise CompareError("a run has duplicate rows for one (solver, preset, task, dataset, prior, image_id, seed)")
    m = b.merge(n, on=list(ROW_KEYS), how="left", suffixes=("_b", "_n"), indicator=True)
    out: list[CellVerdict] = []
    pending: list[_Pending] = []
    for key, g in m.groupby(list(CELL_KEYS), sort=True):
        v = CellVerdict(tuple(map(str, key)))
        paired = g[g["_merge"] == "both"]
        v.n_pairs = len(paired)
        base_ok = g["status_b"].astype(str) == "ok"
        v.missing = int((base_ok & (g["_merge"] == "left_only")).sum())
        changed = paired[(paired["status_b"].astype(str) == "ok") & (paired["status_n"].astype(str) != "ok")]
        v.status_changes = {f"ok -> {s}": int(c) for s, c in changed["status_n"].astype(str).value_counts().items()}
        both_ok = paired[(paired["status_b"].astype(str) == "ok") & (paired["status_n"].astype(str) == "ok")]
        if len(both_ok):
            pending += [x for x in (_judge_quality(v, both_ok, th, d), _judge_cost(v, both_ok, th, cost)) if x]
        if v.status_changes:
            v.reasons.append("status " + ", ".join(f"{k} ({c})" for k, c in sorted(v.status_changes.items())))
        if v.missing and not th.allow_missing:
            v.reasons.append(f"{v.missing} ok row(s) missing from the new run")
        out.append(v)
    if not any(v.n_pairs for v in out):
        raise CompareError("no rows of the two runs pair on (solver, preset, task, dataset, prior, image_id, seed)")
    family = _decide(pending, th.alpha)
    return Comparison(out, cost, warnings, {"base": machine(base), "new": machine(new)}, family)


def compare_runs(base: RunData, new: RunData, th: Thresholds) -> list[CellVerdict]:
    """The per-cell verdicts of :func:`compare`."""
    return compare(base, new, th).verdicts


def _safe(s: object) -> str:
    """Terminal-safe text: control characters (escape sequences) replaced by '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(s))


def _md(s: object) -> str:
    """Markdown-table-safe text (pipes and markup characters escaped)."""
    out = _safe(s)
    for ch in "\\`*_[]<>|#!~":
        out = out.replace(ch, "\\" + ch)
    return out


def _f(x: float, spec: str = ".3f") -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, spec)


def _interval(lo: float, hi: float, spec: str) -> str:
    """`` [lo, hi]`` or nothing (below the minimum n no interval is shown)."""
    return f" [{_f(lo, spec)}, {_f(hi, spec)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def _quality_cell(v: CellVerdict) -> str:
    if not v.n_metric:
        return "—"
    gate = "" if v.quality is not None else " not gated"
    return f"{_f(v.diff_mean)}{_interval(v.diff_low, v.diff_high, '.3f')} n={v.n_metric}{gate}"


def _speed_cell(v: CellVerdict) -> str:
    t = v.speed
    if t is None or not math.isfinite(t.ratio):
        return "—"
    gate = "" if v.speed_gated else " not gated"
    return f"x{t.ratio:.2f}{_interval(t.ci_low, t.ci_high, '.2f')} n={t.n}{gate}"


def _work_cell(v: CellVerdict) -> str:
    b, n = v.nfe
    if not (math.isfinite(b) and math.isfinite(n)):
        return "—"
    vb, vn = v.vjp
    return f"{b:.4g}/{_f(vb, '.4g')} -> {n:.4g}/{_f(vn, '.4g')}"


def _verdict_text(v: CellVerdict) -> str:
    if v.reasons:
        return "REGRESSION: " + "; ".join(v.reasons) + ("; " + "; ".join(v.not_gated) if v.not_gated else "")
    if v.not_gated:
        return "; ".join(v.not_gated)
    return "ok"


def _family_text(c: Comparison, th: Thresholds) -> str:
    f = c.family
    left = f", {f.left_out} left out that could never reach it (Tarone)" if f.left_out else ""
    return (f"Run-level error control: family-wise error rate {th.alpha:g} by Holm over {f.size} test(s) "
            f"({f.quality} quality, {f.time} time){left}.")


def _summary(c: Comparison, th: Thresholds) -> str:
    bad = [v for v in c.verdicts if v.regression]
    ng = [v for v in c.verdicts if v.verdict == "not gated"]
    return (f"{len(bad)} of {len(c.verdicts)} cell(s) regressed, {len(ng)} not gated (metric {th.metric}, "
            f"max drop {th.max_drop:g}, max slowdown x{th.max_slowdown:g}, alpha {th.alpha:g}, cost {c.cost}, "
            f"min samples {th.min_samples}). {_family_text(c, th)}")


def _heads(c: Comparison, th: Thresholds) -> list[str]:
    ci = f"{100 * (1 - th.alpha):g}% CI"
    what = "solver/network time" if c.cost == "normalised" else "s/image"
    return ["solver", "preset", "task", "dataset", "prior", "pairs", f"Δ{th.metric} new-base [{ci}] images",
            f"{what} ratio [{ci}] calls", "NFE/VJP per image", "status changes", "verdict"]


def _rows(c: Comparison, esc) -> list[list[str]]:
    rows = []
    for v in c.verdicts:
        rows.append([*(esc(k) for k in v.key), str(v.n_pairs), _quality_cell(v),
                     _speed_cell(v) + ("" if v.speed_basis in ("", c.cost) else f" ({v.speed_basis})"),
                     _work_cell(v),
                     ", ".join(f"{k}: {n}" for k, n in v.status_changes.items()) or "—",
                     esc(_verdict_text(v))])
    return rows


def format_table(verdicts: list[CellVerdict] | Comparison, th: Thresholds) -> str:
    """Plain-text table of the verdicts (one row per cell)."""
    c = verdicts if isinstance(verdicts, Comparison) else Comparison(verdicts, th.cost, [], {})
    return tabulate(_rows(c, _safe), headers=_heads(c, th), tablefmt="simple", disable_numparse=True)


def format_markdown(c: Comparison, th: Thresholds) -> str:
    """A pull-request comment: summary first, then flagged / not gated cells, then all cells."""
    bad = [v for v in c.verdicts if v.verdict != "ok"]
    head = "regression" if any(v.regression for v in c.verdicts) else "no regression"
    lines = [f"### invbench compare: {head}", "", _summary(c, th), ""]
    lines += [f"> **warning:** {_md(w)}" for w in c.warnings]
    if c.warnings:
        lines.append("")
    if c.machines:
        lines += ["| run | " + " | ".join(_MACHINE_KEYS) + " |", "|---" * (len(_MACHINE_KEYS) + 1) + "|"]
        for side, mach in c.machines.items():
            lines.append(f"| {side} | " + " | ".join(_md(mach[k]) for k in _MACHINE_KEYS) + " |")
        lines.append("")
    if bad:
        lines += ["**Cells not ok**", ""]
        lines += [f"- {_md(' / '.join(v.key))}: {_md(_verdict_text(v))}" for v in bad]
        lines.append("")
    lines += ["<details><summary>All cells</summary>", "",
              tabulate(_rows(c, _md), headers=_heads(c, th), tablefmt="github", disable_numparse=True),
              "", "</details>"]
    return "\n".join(lines)


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def to_json(c: Comparison, th: Thresholds, code: int) -> dict[str, Any]:
    """Machine-readable verdicts (non-finite numbers -> null)."""
    cells = []
    for v in c.verdicts:
        t, q = v.speed, v.quality
        cells.append({
            **dict(zip(CELL_KEYS, v.key, strict=True)), "verdict": v.verdict, "pairs": v.n_pairs,
            "quality": {"metric": th.metric, "n": v.n_metric, "diff_mean": _num(v.diff_mean),
                        "ci": [_num(v.diff_low), _num(v.diff_high)], "gated": q is not None,
                        "p_value": _num(q.p_value) if q else None, "p_adjusted": _num(v.p_adjusted.get("quality"))},
            "speed": None if t is None else {
                "basis": v.speed_basis, "gated": v.speed_gated, "ratio": _num(t.ratio),
                "ci": [_num(t.ci_low), _num(t.ci_high)], "p_value": _num(t.p_value),
                "p_adjusted": _num(v.p_adjusted.get("time")), "n": t.n, "network_share": _num(v.network_share)},
            "seconds_per_image_median": [_num(v.base_median_s), _num(v.new_median_s)],
            "nfe_per_image": [_num(v.nfe[0]), _num(v.nfe[1])], "vjp_per_image": [_num(v.vjp[0]), _num(v.vjp[1])],
            "status_changes": v.status_changes, "missing": v.missing,
            "reasons": v.reasons, "not_gated": v.not_gated,
        })
    f = c.family
    return {"exit_code": code, "cost": c.cost, "warnings": c.warnings, "machines": c.machines,
            "thresholds": {"metric": th.metric, "max_drop": th.max_drop, "max_slowdown": th.max_slowdown,
                           "min_slowdown_s": th.min_slowdown_s, "alpha": th.alpha, "min_samples": th.min_samples,
                           "allow_missing": th.allow_missing, "allow_config_change": th.allow_config_change,
                           "min_network_share": min_network_share(th.max_slowdown)},
            "family": {"method": "Holm (family-wise error rate), Tarone's exclusion", "alpha": th.alpha,
                       "tests": f.size, "quality": f.quality, "time": f.time, "left_out": f.left_out},
            "regressed": sum(v.regression for v in c.verdicts),
            "not_gated": sum(v.verdict == "not gated" for v in c.verdicts),
            "cells": cells}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invbench compare",
        description="Regression gate: compare NEW_RUN against BASE_RUN on paired rows. Exit 0 no regression, "
                    "1 regression, 2 bad input, 3 a cell not gated (only with --fail-not-gated).")
    p.add_argument("base", metavar="BASE_RUN", help="baseline run directory (holds results.sqlite)")
    p.add_argument("new", metavar="NEW_RUN", help="new run directory")
    p.add_argument("--metric", default="psnr", help="quality metric column to gate on (default psnr)")
    p.add_argument("--max-drop", type=float, default=0.1,
                   help="allowed quality drop in metric units (default 0.1, e.g. dB for psnr)")
    p.add_argument("--max-slowdown", type=float, default=1.2,
                   help="allowed cost ratio new/base: time (paired ratio) and NFE/VJP per image (default 1.2)")
    p.add_argument("--min-slowdown-s", type=float, default=0.0,
                   help="optional absolute slack: a time regression also needs the median seconds per image to "
                        "grow by more than this (default 0: none)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise error rate of the run's verdict (Holm over all quality and time tests); "
                        "intervals are 1 - alpha (default 0.05)")
    p.add_argument("--cost", choices=COSTS, default="auto",
                   help="cost basis: normalised (solver time / in-run network time, NFE/VJP), wall (seconds per "
                        "image), auto = normalised when both runs carry a device calibration (default)")
    p.add_argument("--min-samples", type=int, default=MIN_CI_UNITS,
                   help=f"fewest paired images (quality) or timed calls (time) a cell needs to be gated; below, "
                        f"'not gated' and no interval (default {MIN_CI_UNITS})")
    p.add_argument("--format", choices=FORMATS, default="text", help="output: text (default), markdown, json")
    p.add_argument("--fail-not-gated", "--fail-inconclusive", dest="fail_not_gated", action="store_true",
                   help="exit 3 when nothing regressed but a cell is not gated (default: exit 0)")
    p.add_argument("--allow-missing", action="store_true",
                   help="do not count base rows absent from the new run as regressions")
    p.add_argument("--allow-config-change", action="store_true",
                   help="judge runs of different configs (refused by default); a warning lists the differing keys")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invbench compare``; returns the exit code (0 pass, 1 regression, 2 bad
    input, 3 a cell not gated with ``--fail-not-gated``)."""
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or usage error (2)
        return int(e.code or 0)
    try:
        if not a.max_drop >= 0 or not math.isfinite(a.max_drop):
            raise CompareError(f"--max-drop must be a finite number >= 0, got {a.max_drop}")
        if not a.max_slowdown > 0 or not math.isfinite(a.max_slowdown):
            raise CompareError(f"--max-slowdown must be a finite number > 0, got {a.max_slowdown}")
        if not a.min_slowdown_s >= 0:
            raise CompareError(f"--min-slowdown-s must be >= 0, got {a.min_slowdown_s}")
        if not 0 < a.alpha < 1:
            raise CompareError(f"--alpha must be in (0, 1), got {a.alpha}")
        if a.min_samples < 2:
            raise CompareError(f"--min-samples must be >= 2, got {a.min_samples}")
        th = Thresholds(a.metric, a.max_drop, a.max_slowdown, a.min_slowdown_s, a.alpha, a.allow_missing,
                        a.cost, a.min_samples, a.allow_config_change)
        base, new = load_run(a.base), load_run(a.new)
        c = compare(base, new, th)
    except (RunDirError, CompareError) as e:
        print(f"invbench compare: error: {_safe(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bad = any(v.regression for v in c.verdicts)
    ng = any(v.verdict == "not gated" for v in c.verdicts)
    code = EXIT_REGRESSION if bad else EXIT_NOT_GATED if ng and a.fail_not_gated else EXIT_OK
    if a.format == "json":
        print(json.dumps(to_json(c, th, code), indent=1))
    elif a.format == "markdown":
        print(format_markdown(c, th))
    else:
        for w in c.warnings:
            print(f"invbench compare: warning: {_safe(w)}", file=sys.stderr)
        print(format_table(c, th))
        print("\n" + _summary(c, th))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
