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
* **speed** — over the pairs where both rows are ok: ``ratio = median(new seconds) /
  median(base seconds)``; the cell regresses when ``ratio > max_slowdown`` and the median grew
  by more than ``min_slowdown_s`` seconds (an absolute slack against timer jitter on tiny runs).
* **status** — a pair whose base row is ok and whose new row is not (skipped, diverged, oom,
  error) is a regression; so is a base ok row missing from the new run, unless
  ``--allow-missing``.

Exit codes: 0 no regression, 1 at least one regression, 2 bad input (missing run dir or store,
unknown/unavailable metric, bad thresholds, no pairs).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from invbench.bench.report.data import CELL_KEYS, ROW_KEYS, RunData, RunDirError, load_run
from invbench.bench.report.stats import DIRECTIONS, direction, mean_ci
from tabulate import tabulate


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
    time_ratio: float = math.nan
    base_median_s: float = math.nan
    new_median_s: float = math.nan
    status_changes: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Thresholds:
    metric: str = "psnr"
    max_drop: float = 0.1
    max_slowdown: float = 1.2
    min_slowdown_s: float = 0.05
    alpha: float = 0.05
    allow_missing: bool = False


def _norm(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for k in ROW_KEYS:
        if k not in df:
            raise CompareError(f"results table lacks column {k!r}")
    for k in ROW_KEYS:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype("Int64").astype(str) if k == "seed" else df[k].astype(str)
    return df


def _check_metric(run: RunData, metric: str, which: str) -> None:
    if metric not in run.results.columns:
        raise CompareError(f"metric {metric!r} is not a column of the {which} run's results")
    why = run.unavailable().get(metric)
    if why:
        raise CompareError(f"metric {metric!r} is {why} in the {which} run; choose another --metric")


def compare_runs(base: RunData, new: RunData, th: Thresholds) -> list[CellVerdict]:
    """Per-cell verdicts of ``new`` against ``base`` (see the module docstring for the rules)."""
    d = direction(th.metric)
    if d == 0:
        raise CompareError(f"metric {th.metric!r} has no declared direction; known: "
                           f"{', '.join(m for m, v in DIRECTIONS.items() if v)}")
    _check_metric(base, th.metric, "base")
    _check_metric(new, th.metric, "new")
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
                                 f"[{v.diff_low:.4g}, {v.diff_high:.4g}])")
        sb = pd.to_numeric(both_ok["seconds_b"], errors="coerce").to_numpy(np.float64)
        sn = pd.to_numeric(both_ok["seconds_n"], errors="coerce").to_numpy(np.float64)
        ft = np.isfinite(sb) & np.isfinite(sn)
        if ft.any():
            v.base_median_s, v.new_median_s = float(np.median(sb[ft])), float(np.median(sn[ft]))
            if v.base_median_s > 0:
                v.time_ratio = v.new_median_s / v.base_median_s
            elif v.new_median_s > 0:
                v.time_ratio = math.inf
            if v.time_ratio > th.max_slowdown and v.new_median_s - v.base_median_s > th.min_slowdown_s:
                v.reasons.append(f"slower: median s/image x{v.time_ratio:.3g} > x{th.max_slowdown:g}")
        if v.status_changes:
            v.reasons.append("status " + ", ".join(f"{k} ({c})" for k, c in sorted(v.status_changes.items())))
        if v.missing and not th.allow_missing:
            v.reasons.append(f"{v.missing} ok row(s) missing from the new run")
        out.append(v)
    if not any(v.n_pairs for v in out):
        raise CompareError("no rows of the two runs pair on (solver, preset, task, dataset, prior, image_id, seed)")
    return out


def _safe(s: object) -> str:
    """Terminal-safe text: control characters (escape sequences) replaced by '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(s))


def _f(x: float, spec: str = ".3f") -> str:
    return "—" if not math.isfinite(x) else format(x, spec)


def format_table(verdicts: list[CellVerdict], th: Thresholds) -> str:
    rows = []
    for v in verdicts:
        rows.append([*(_safe(k) for k in v.key), v.n_pairs,
                     f"{_f(v.diff_mean)} [{_f(v.diff_low)}, {_f(v.diff_high)}]" if v.n_metric else "—",
                     _f(v.time_ratio, ".2f"),
                     ", ".join(f"{k}: {c}" for k, c in v.status_changes.items()) or "—",
                     "REGRESSION: " + "; ".join(v.reasons) if v.reasons else "ok"])
    ci = f"{100 * (1 - th.alpha):g}% CI"
    heads = ["solver", "preset", "task", "dataset", "prior", "pairs", f"Δ{th.metric} new-base [{ci}]",
             "time ratio (median)", "status changes", "verdict"]
    return tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invbench compare",
        description="Regression gate: compare NEW_RUN against BASE_RUN on paired rows. "
                    "Exit 0 no regression, 1 regression, 2 bad input.")
    p.add_argument("base", metavar="BASE_RUN", help="baseline run directory (holds results.sqlite)")
    p.add_argument("new", metavar="NEW_RUN", help="new run directory")
    p.add_argument("--metric", default="psnr", help="quality metric column to gate on (default psnr)")
    p.add_argument("--max-drop", type=float, default=0.1,
                   help="allowed quality drop in metric units (default 0.1, e.g. dB for psnr)")
    p.add_argument("--max-slowdown", type=float, default=1.2,
                   help="allowed ratio of median seconds per image new/base (default 1.2)")
    p.add_argument("--min-slowdown-s", type=float, default=0.05,
                   help="a slowdown also needs the median to grow by more than this many seconds (default 0.05)")
    p.add_argument("--alpha", type=float, default=0.05, help="CI level is 1 - alpha (default 0.05)")
    p.add_argument("--allow-missing", action="store_true",
                   help="do not count base rows absent from the new run as regressions")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``invbench compare``; returns the exit code (0 pass, 1 regression, 2 bad input)."""
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
        th = Thresholds(a.metric, a.max_drop, a.max_slowdown, a.min_slowdown_s, a.alpha, a.allow_missing)
        base, new = load_run(a.base), load_run(a.new)
        verdicts = compare_runs(base, new, th)
    except (RunDirError, CompareError) as e:
        print(f"invbench compare: error: {_safe(e)}", file=sys.stderr)
        return 2
    print(format_table(verdicts, th))
    bad = [v for v in verdicts if v.regression]
    print(f"\n{len(bad)} of {len(verdicts)} cell(s) regressed (metric {th.metric}, max drop {th.max_drop:g}, "
          f"max slowdown x{th.max_slowdown:g}, alpha {th.alpha:g}).")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
