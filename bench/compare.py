"""``invbench compare BASE_RUN NEW_RUN``: the regression gate between two runs.

Rows are paired by (solver, preset, task, dataset, prior, image_id, seed). For every cell
(solver × preset × task × dataset × prior) of the base run:

* **quality** — over the pairs where both rows are ok and the metric is finite, let
  ``d_i = new_i - base_i`` and ``[lo, hi]`` the two-sided (1 - alpha) Student-t CI of mean(d)
  (n - 1 degrees of freedom). For a higher-is-better metric (psnr, ssim) the cell regresses when
  ``hi < -max_drop``; for a lower-is-better metric (lpips, mse, dist_to_map, ...) when
  ``lo > +max_drop``. That is: the whole CI lies beyond the allowed drop, so a flag means the
  drop is larger than ``max_drop`` (metric units, e.g. dB) at confidence 1 - alpha/2
  (one-sided). With a single pair there is no CI and the point difference is used.
* **cost** (``--cost``) — judged on the pairs where both rows are ok:

  - ``normalised`` (default when both runs carry a device calibration, i.e. were made by a
    version that records one): *network work* — mean NFE and mean VJP per image; the cell
    regresses when either grows by more than ``max_slowdown`` (counts are exact, no test
    needed); and *time outside the network* — per timed call, solve seconds ÷ seconds inside
    the network of that same solve (:mod:`invbench.bench.gate_cost`), tested by
    :func:`invbench.bench.gate_stats.ratio_test` against ``max_slowdown``. Both parts of the ratio slow
    down together when another process loads the machine, so a loaded machine does not read as
    a regression, while extra work in the solver loop does. Cells without network time (NFE =
    0: the oracles) are judged on wall time as below.
  - ``wall``: seconds per image of each timed call, :func:`invbench.bench.gate_stats.ratio_test` with
    the absolute slack ``min_slowdown_s``. Meaningful only between runs on the same machine
    under the same load; a warning is printed when the runs' device, CPU model, CPU capability
    or thread count differ.

  The speed test flags a cell only when the ratio of medians exceeds ``max_slowdown`` **and** a
  one-sided Mann–Whitney U test is significant at ``alpha``; with fewer than ``min_samples``
  timing samples per run such a slowdown is reported "inconclusive (n = k)", never a
  regression. Samples are timed calls, so a run gets more of them from ``timing_repeats`` or
  from per-image operators (one call per image).
* **status** — a pair whose base row is ok and whose new row is not (skipped, diverged, oom,
  error) is a regression; so is a base ok row missing from the new run, unless
  ``--allow-missing``.

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
but at least one inconclusive cell, only with ``--fail-inconclusive`` (otherwise inconclusive
cells exit 0 and are listed).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomllib
from invbench.bench.config import _HASH_EXCLUDED
from invbench.bench.gate_cost import has_calibration, network_work, timing_samples
from invbench.bench.gate_stats import RatioTest, ratio_test
from invbench.bench.report.data import CELL_KEYS, ROW_KEYS, RunData, RunDirError, load_run
from invbench.bench.report.stats import DIRECTIONS, direction, mean_ci
from tabulate import tabulate

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE = 0, 1, 2, 3
FORMATS = ("text", "markdown", "json")
COSTS = ("auto", "normalised", "wall")
_COST_COLS = ("seconds", "net_seconds", "timings", "nfe", "vjp")
_MACHINE_KEYS = ("device", "cpu_model", "cpu_capability", "gpu_name", "torch_threads")


class CompareError(ValueError):
    """Bad input to compare (exit code 2)."""


@dataclass
class CellVerdict:
    key: tuple[str, ...]
    n_pairs: int = 0
    n_metric: int = 0
    diff_mean: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    time_ratio: float = math.nan          # ratio of medians of the judged timing samples
    base_median_s: float = math.nan       # median seconds per image (wall), for reference
    new_median_s: float = math.nan
    speed: RatioTest | None = None        # the speed test on the judged basis
    speed_basis: str = ""                 # "normalised" | "wall"
    nfe: tuple[float, float] = (math.nan, math.nan)   # mean NFE per image (base, new)
    vjp: tuple[float, float] = (math.nan, math.nan)
    status_changes: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    reasons: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.reasons)

    @property
    def verdict(self) -> str:
        return "regression" if self.reasons else "inconclusive" if self.inconclusive else "ok"


@dataclass(frozen=True)
class Thresholds:
    metric: str = "psnr"
    max_drop: float = 0.1
    max_slowdown: float = 1.2
    min_slowdown_s: float = 0.05
    alpha: float = 0.05
    allow_missing: bool = False
    cost: str = "auto"
    min_samples: int = 5
    allow_config_change: bool = False


@dataclass
class Comparison:
    """Verdicts plus what they were judged on (``cost`` resolved from ``auto``) and warnings."""

    verdicts: list[CellVerdict]
    cost: str
    warnings: list[str]
    machines: dict[str, dict[str, str]]


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


def _lock_held(run_dir: Path) -> bool:
    """True when a live process holds ``run_dir/.lock`` (a run writing it). Opens the file
    read-only and keeps no lock; no lock file: False."""
    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)   # releases the probe lock


def _check_complete(run: RunData, which: str) -> None:
    """CompareError when ``run`` is still being written or holds fewer rows than its grid."""
    rows = len(run.results)
    try:
        grid: int | None = int(run.meta["grid_rows"])
    except (KeyError, ValueError):
        grid = None   # a run made before grid_rows was recorded: only the lock tells
    done = f"{rows} of {grid} rows" if grid is not None else f"{rows} rows so far"
    if _lock_held(run.run_dir):
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
    d = {k: v for k, v in d.items() if k not in _HASH_EXCLUDED}
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


def _judge_cost(v: CellVerdict, both_ok: pd.DataFrame, th: Thresholds, cost: str) -> None:
    rb, rn = _side(both_ok, "_b"), _side(both_ok, "_n")
    wb, wn = timing_samples(rb, "wall"), timing_samples(rn, "wall")
    if wb.size:
        v.base_median_s = float(np.median(wb))
    if wn.size:
        v.new_median_s = float(np.median(wn))
    v.nfe = (network_work(rb)[0], network_work(rn)[0])
    v.vjp = (network_work(rb)[1], network_work(rn)[1])
    basis = "wall"
    if cost == "normalised":
        for name, (b, n) in (("NFE", v.nfe), ("VJP", v.vjp)):
            if math.isfinite(b) and math.isfinite(n) and (n > b * th.max_slowdown if b > 0 else n > 0):
                v.reasons.append(f"more network work: {name}/image {b:.4g} -> {n:.4g}"
                                 + (f" (x{n / b:.3g} > x{th.max_slowdown:g})" if b > 0 else ""))
        nb, nn = timing_samples(rb, "normalised"), timing_samples(rn, "normalised")
        if nb.size and nn.size:
            basis = "normalised"
    if basis == "normalised":
        t = ratio_test(nb, nn, max_ratio=th.max_slowdown, alpha=th.alpha, min_n=th.min_samples)
        what = "solver time / network time"
    else:
        t = ratio_test(wb, wn, max_ratio=th.max_slowdown, alpha=th.alpha, min_n=th.min_samples,
                       min_abs=th.min_slowdown_s)
        what = "seconds/image" if cost == "wall" else "seconds/image (no network time)"
    v.speed, v.speed_basis, v.time_ratio = t, basis, t.ratio
    detail = f"{what} x{t.ratio:.3g}, {100 * (1 - th.alpha):g}% CI [{_f(t.ci_low, '.3g')}, {_f(t.ci_high, '.3g')}]"
    if t.verdict == "regression":
        v.reasons.append(f"slower: {detail}, n = {t.n_base}/{t.n_new}, p = {t.p_value:.2g} (> x{th.max_slowdown:g})")
    elif t.verdict == "inconclusive":
        v.inconclusive.append(f"inconclusive (n = {t.n}): {detail} > x{th.max_slowdown:g} "
                              f"but fewer than {th.min_samples} timing samples")


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
    for key, g in m.groupby(list(CELL_KEYS), sort=True):
        v = CellVerdict(tuple(map(str, key)))
        paired = g[g["_merge"] == "both"]
        v.n_pairs = len(paired)
        base_ok = g["status_b"].astype(str) == "ok"
        v.missing = int((base_ok & (g["_merge"] == "left_only")).sum())
        changed = paired[(paired["status_b"].astype(str) == "ok") & (paired["status_n"].astype(str) != "ok")]
        v.status_changes = {f"ok -> {s}": int(c) for s, c in changed["status_n"].astype(str).value_counts().items()}
        both_ok = paired[(paired["status_b"].astype(str) == "ok") & (paired["status_n"].astype(str) == "ok")]
        mb = pd.to_numeric(both_ok[f"{th.metric}_b"], errors="coerce").to_numpy(np.float64)
        mn = pd.to_numeric(both_ok[f"{th.metric}_n"], errors="coerce").to_numpy(np.float64)
        fin = np.isfinite(mb) & np.isfinite(mn)
        diffs = mn[fin] - mb[fin]
        v.n_metric = int(diffs.size)
        if diffs.size:
            ci = mean_ci(diffs, th.alpha)
            hw = ci.half_width if math.isfinite(ci.half_width) else 0.0  # n == 1: point estimate
            v.diff_mean, v.diff_low, v.diff_high = ci.mean, ci.mean - hw, ci.mean + hw
            if (d > 0 and v.diff_high < -th.max_drop) or (d < 0 and v.diff_low > th.max_drop):
                ci_txt = "point difference, n=1" if diffs.size == 1 else f"{100 * (1 - th.alpha):g}% CI"
                v.reasons.append(f"{th.metric} worse by more than {th.max_drop:g} ({ci_txt} "
                                 f"[{v.diff_low:.4g}, {v.diff_high:.4g}], n = {diffs.size})")
        if len(both_ok):
            _judge_cost(v, both_ok, th, cost)
        if v.status_changes:
            v.reasons.append("status " + ", ".join(f"{k} ({c})" for k, c in sorted(v.status_changes.items())))
        if v.missing and not th.allow_missing:
            v.reasons.append(f"{v.missing} ok row(s) missing from the new run")
        out.append(v)
    if not any(v.n_pairs for v in out):
        raise CompareError("no rows of the two runs pair on (solver, preset, task, dataset, prior, image_id, seed)")
    return Comparison(out, cost, warnings, {"base": machine(base), "new": machine(new)})


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


def _speed_cell(v: CellVerdict) -> str:
    t = v.speed
    if t is None or not math.isfinite(t.ratio):
        return "—"
    return f"x{t.ratio:.2f} [{_f(t.ci_low, '.2f')}, {_f(t.ci_high, '.2f')}] n={t.n_base}/{t.n_new}"


def _work_cell(v: CellVerdict) -> str:
    b, n = v.nfe
    if not (math.isfinite(b) and math.isfinite(n)):
        return "—"
    vb, vn = v.vjp
    return f"{b:.4g}/{_f(vb, '.4g')} -> {n:.4g}/{_f(vn, '.4g')}"


def _verdict_text(v: CellVerdict) -> str:
    if v.reasons:
        return "REGRESSION: " + "; ".join(v.reasons)
    if v.inconclusive:
        return "; ".join(v.inconclusive)
    return "ok"


def _summary(c: Comparison, th: Thresholds) -> str:
    bad = [v for v in c.verdicts if v.regression]
    inc = [v for v in c.verdicts if v.verdict == "inconclusive"]
    return (f"{len(bad)} of {len(c.verdicts)} cell(s) regressed, {len(inc)} inconclusive (metric {th.metric}, "
            f"max drop {th.max_drop:g}, max slowdown x{th.max_slowdown:g}, alpha {th.alpha:g}, cost {c.cost}, "
            f"min samples {th.min_samples}).")


def _heads(c: Comparison, th: Thresholds) -> list[str]:
    ci = f"{100 * (1 - th.alpha):g}% CI"
    what = "solver/network time" if c.cost == "normalised" else "s/image"
    return ["solver", "preset", "task", "dataset", "prior", "pairs", f"Δ{th.metric} new-base [{ci}]",
            f"{what} ratio [{ci}] n", "NFE/VJP per image", "status changes", "verdict"]


def _rows(c: Comparison, esc) -> list[list[str]]:
    rows = []
    for v in c.verdicts:
        rows.append([*(esc(k) for k in v.key), str(v.n_pairs),
                     f"{_f(v.diff_mean)} [{_f(v.diff_low)}, {_f(v.diff_high)}]" if v.n_metric else "—",
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
    """A pull-request comment: summary first, then flagged/inconclusive cells, then all cells."""
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
        t = v.speed
        cells.append({
            **dict(zip(CELL_KEYS, v.key, strict=True)), "verdict": v.verdict, "pairs": v.n_pairs,
            "quality": {"metric": th.metric, "n": v.n_metric, "diff_mean": _num(v.diff_mean),
                        "ci": [_num(v.diff_low), _num(v.diff_high)]},
            "speed": None if t is None else {
                "basis": v.speed_basis, "ratio": _num(t.ratio), "ci": [_num(t.ci_low), _num(t.ci_high)],
                "p_value": _num(t.p_value), "n_base": t.n_base, "n_new": t.n_new, "verdict": t.verdict,
                "median_base": _num(t.median_base), "median_new": _num(t.median_new)},
            "seconds_per_image_median": [_num(v.base_median_s), _num(v.new_median_s)],
            "nfe_per_image": [_num(v.nfe[0]), _num(v.nfe[1])], "vjp_per_image": [_num(v.vjp[0]), _num(v.vjp[1])],
            "status_changes": v.status_changes, "missing": v.missing,
            "reasons": v.reasons, "inconclusive": v.inconclusive,
        })
    return {"exit_code": code, "cost": c.cost, "warnings": c.warnings, "machines": c.machines,
            "thresholds": {"metric": th.metric, "max_drop": th.max_drop, "max_slowdown": th.max_slowdown,
                           "min_slowdown_s": th.min_slowdown_s, "alpha": th.alpha, "min_samples": th.min_samples,
                           "allow_missing": th.allow_missing, "allow_config_change": th.allow_config_change},
            "regressed": sum(v.regression for v in c.verdicts),
            "inconclusive": sum(v.verdict == "inconclusive" for v in c.verdicts),
            "cells": cells}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invbench compare",
        description="Regression gate: compare NEW_RUN against BASE_RUN on paired rows. Exit 0 no regression, "
                    "1 regression, 2 bad input, 3 inconclusive (only with --fail-inconclusive).")
    p.add_argument("base", metavar="BASE_RUN", help="baseline run directory (holds results.sqlite)")
    p.add_argument("new", metavar="NEW_RUN", help="new run directory")
    p.add_argument("--metric", default="psnr", help="quality metric column to gate on (default psnr)")
    p.add_argument("--max-drop", type=float, default=0.1,
                   help="allowed quality drop in metric units (default 0.1, e.g. dB for psnr)")
    p.add_argument("--max-slowdown", type=float, default=1.2,
                   help="allowed cost ratio new/base: time (ratio of medians) and NFE/VJP per image (default 1.2)")
    p.add_argument("--min-slowdown-s", type=float, default=0.05,
                   help="wall-time slowdowns also need the median to grow by more than this many seconds (default 0.05)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="CI level is 1 - alpha; significance level of the speed test (default 0.05)")
    p.add_argument("--cost", choices=COSTS, default="auto",
                   help="cost basis: normalised (solver time / in-run network time, NFE/VJP), wall (seconds per "
                        "image), auto = normalised when both runs carry a device calibration (default)")
    p.add_argument("--min-samples", type=int, default=5,
                   help="timing samples per run below which a slowdown is 'inconclusive' (default 5)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output: text (default), markdown, json")
    p.add_argument("--fail-inconclusive", action="store_true",
                   help="exit 3 when nothing regressed but a cell is inconclusive (default: exit 0)")
    p.add_argument("--allow-missing", action="store_true",
                   help="do not count base rows absent from the new run as regressions")
    p.add_argument("--allow-config-change", action="store_true",
                   help="judge runs of different configs (refused by default); a warning lists the differing keys")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invbench compare``; returns the exit code (0 pass, 1 regression, 2 bad
    input, 3 inconclusive with ``--fail-inconclusive``)."""
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
        if a.min_samples < 1:
            raise CompareError(f"--min-samples must be >= 1, got {a.min_samples}")
        th = Thresholds(a.metric, a.max_drop, a.max_slowdown, a.min_slowdown_s, a.alpha, a.allow_missing,
                        a.cost, a.min_samples, a.allow_config_change)
        base, new = load_run(a.base), load_run(a.new)
        c = compare(base, new, th)
    except (RunDirError, CompareError) as e:
        print(f"invbench compare: error: {_safe(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bad = any(v.regression for v in c.verdicts)
    inc = any(v.verdict == "inconclusive" for v in c.verdicts)
    code = EXIT_REGRESSION if bad else EXIT_INCONCLUSIVE if inc and a.fail_inconclusive else EXIT_OK
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
