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
from dataclasses import dataclass

import numpy as np
import pandas as pd
from invbench.bench.report.data import CELL_KEYS, ROW_KEYS, RunData, RunDirError, load_run
from invbench.bench.report.escape import terminal
from invbench.bench.report.stats import DIRECTIONS, direction

from .checks import check_comparable, check_metric, machine, norm_rows
from .cost import has_calibration, network_share, network_work, paired_units, timing_samples
from .output import format_markdown, format_table, summary_line, to_json
from .stats import (
    MIN_CI_UNITS,
    holm_tarone,
    paired_drop_test,
    paired_ratio_test,
)
from .verdict import (
    COST_COLS,
    COSTS,
    EXIT_BAD_INPUT,
    EXIT_NOT_GATED,
    EXIT_OK,
    EXIT_REGRESSION,
    FORMATS,
    MACHINE_KEYS,
    CellVerdict,
    CompareError,
    Comparison,
    Family,
    Thresholds,
    fmt,
    min_network_share,
)


def _side(g: pd.DataFrame, suffix: str) -> pd.DataFrame:
    return pd.DataFrame({c: g[f"{c}{suffix}"].to_numpy() for c in COST_COLS})


@dataclass
class _Pending:
    """A test of one cell waiting for the run-level decision."""

    cell: CellVerdict
    kind: str  # "quality" | "time"
    p: float
    min_p: float
    reason: str  # the regression text when rejected
    left_out: str  # the not-gated text when Tarone leaves it out


def _judge_quality(
    v: CellVerdict, both_ok: pd.DataFrame, th: Thresholds, d: int
) -> _Pending | None:
    """Quality of one cell: per image (seeds averaged) new − base; a one-sided paired t test of
    "worse by more than max_drop" when at least ``min_samples`` images pair."""
    mb = pd.to_numeric(both_ok[f"{th.metric}_b"], errors="coerce")
    mn = pd.to_numeric(both_ok[f"{th.metric}_n"], errors="coerce")
    fin = np.isfinite(mb.to_numpy(np.float64)) & np.isfinite(mn.to_numpy(np.float64))
    if not fin.any():
        v.not_gated.append(f"quality not gated: no image has a finite {th.metric} in both runs")
        return None
    img = both_ok["image_id"].to_numpy()[fin]
    per = (
        pd.DataFrame({"img": img, "d": (mn - mb).to_numpy(np.float64)[fin]})
        .groupby("img")["d"]
        .mean()
    )
    t = paired_drop_test(
        per.to_numpy(), max_drop=th.max_drop, direction=d, alpha=th.alpha, min_n=th.min_samples
    )
    v.n_metric, v.diff_mean, v.diff_low, v.diff_high = t.n, t.mean, t.ci_low, t.ci_high
    if t.n < th.min_samples:
        v.not_gated.append(
            f"quality not gated: {t.n} image(s) < {th.min_samples} (--min-samples); "
            f"mean {th.metric} difference {t.mean:+.3g}"
        )
        return None
    v.quality = t
    ci = f"{100 * (1 - th.alpha):g}% CI [{fmt(t.ci_low, '.3g')}, {fmt(t.ci_high, '.3g')}]"
    return _Pending(
        v,
        "quality",
        t.p_value,
        0.0,
        f"{th.metric} worse by more than {th.max_drop:g}: mean {t.mean:+.3g}, {ci}, n = {t.n} images, "
        f"p = {t.p_value:.2g}",
        "",
    )


def _judge_work(v: CellVerdict, rb: pd.DataFrame, rn: pd.DataFrame, th: Thresholds) -> None:
    """Network work: mean NFE / VJP per image, exact counts (no test)."""
    for name, (b, n) in (("NFE", v.nfe), ("VJP", v.vjp)):
        if math.isfinite(b) and math.isfinite(n) and (n > b * th.max_slowdown if b > 0 else n > 0):
            v.reasons.append(
                f"more network work: {name}/image {b:.4g} -> {n:.4g}"
                + (f" (x{n / b:.3g} > x{th.max_slowdown:g})" if b > 0 else "")
            )


def _time_basis(v: CellVerdict, rb: pd.DataFrame, th: Thresholds, cost: str) -> tuple[str, str]:
    """``(basis, why not gated)`` of a cell's time: ``why`` is empty when the time is gated."""
    if cost == "wall":
        return "wall", ""
    v.network_share = network_share(rb)
    if not math.isfinite(v.network_share):
        return "wall", (
            "time not gated: no network time (NFE = 0) to normalise by, and wall time moves with "
            "machine load (--cost wall judges it between runs on one quiet machine)"
        )
    floor = min_network_share(th.max_slowdown)
    if v.network_share < floor:
        return "normalised", (
            f"time not gated: the network is {100 * v.network_share:.0f}% of the solve time "
            f"(< {100 * floor:.0f}%), too cheap for solver time / network time to hold under "
            "machine load; judged on NFE/VJP only"
        )
    return "normalised", ""


def _judge_cost(
    v: CellVerdict, both_ok: pd.DataFrame, th: Thresholds, cost: str
) -> _Pending | None:
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
    point = f"{what} x{fmt(t.ratio, '.3g')}"
    if not why and t.n < th.min_samples:
        why = (
            f"time not gated: {t.n} paired timed call(s) < {th.min_samples} (--min-samples; timing_repeats "
            "repeat a call, they add no call)"
        )
    if why:
        v.not_gated.append(f"{why}; {point} not judged" if t.n else why)
        return None
    v.speed_gated = True
    if th.min_slowdown_s > 0 and not (v.new_median_s - v.base_median_s > th.min_slowdown_s):
        return None  # the optional absolute slack: a growth within it is never a regression
    ci = f"{100 * (1 - th.alpha):g}% CI [{fmt(t.ci_low, '.3g')}, {fmt(t.ci_high, '.3g')}]"
    return _Pending(
        v,
        "time",
        t.p_value,
        t.min_p,
        f"slower: {point} > x{th.max_slowdown:g}, {ci}, n = {t.n} paired calls, p = {t.p_value:.2g}",
        f"time not gated: {t.n} paired calls can never reach the run's significance level "
        f"(smallest p {t.min_p:.2g}); {point} not judged",
    )


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
            warnings.append(
                "a run carries no device calibration (made by an older version): cost judged on wall time"
            )
    elif cost == "normalised" and not calibrated:
        raise CompareError(
            "--cost normalised needs both runs to carry a device calibration (meta 'calibration'); "
            "rerun them with this version or use --cost wall"
        )
    if cost == "wall":
        mb, mn = machine(base), machine(new)
        diff = [k for k in MACHINE_KEYS if mb[k] != mn[k]]
        if diff:
            warnings.append(
                "wall-time cost between runs on different machines ("
                + "; ".join(f"{k}: {mb[k]!r} vs {mn[k]!r}" for k in diff)
                + "): timing differences may come from the machine, not the code"
            )
    return cost, warnings


def compare(base: RunData, new: RunData, th: Thresholds) -> Comparison:
    """Per-cell verdicts of ``new`` against ``base`` (see the module docstring for the rules)."""
    d = direction(th.metric)
    if d == 0:
        raise CompareError(
            f"metric {th.metric!r} has no declared direction; known: "
            f"{', '.join(m for m, v in DIRECTIONS.items() if v)}"
        )
    if th.cost not in COSTS:
        raise CompareError(f"--cost must be one of {', '.join(COSTS)}, got {th.cost!r}")
    check_metric(base, th.metric, "base")
    check_metric(new, th.metric, "new")
    warnings = check_comparable(base, new, th)
    cost, cost_warnings = resolve_cost(base, new, th.cost)
    warnings += cost_warnings
    b, n = norm_rows(base.results), norm_rows(new.results)
    if b.duplicated(list(ROW_KEYS)).any() or n.duplicated(list(ROW_KEYS)).any():
        raise CompareError(
            "a run has duplicate rows for one (solver, preset, task, dataset, prior, image_id, seed)"
        )
    m = b.merge(n, on=list(ROW_KEYS), how="left", suffixes=("_b", "_n"), indicator=True)
    out: list[CellVerdict] = []
    pending: list[_Pending] = []
    for key, g in m.groupby(list(CELL_KEYS), sort=True):
        v = CellVerdict(tuple(map(str, key)))
        paired = g[g["_merge"] == "both"]
        v.n_pairs = len(paired)
        base_ok = g["status_b"].astype(str) == "ok"
        v.missing = int((base_ok & (g["_merge"] == "left_only")).sum())
        changed = paired[
            (paired["status_b"].astype(str) == "ok") & (paired["status_n"].astype(str) != "ok")
        ]
        v.status_changes = {
            f"ok -> {s}": int(c) for s, c in changed["status_n"].astype(str).value_counts().items()
        }
        both_ok = paired[
            (paired["status_b"].astype(str) == "ok") & (paired["status_n"].astype(str) == "ok")
        ]
        if len(both_ok):
            pending += [
                x
                for x in (_judge_quality(v, both_ok, th, d), _judge_cost(v, both_ok, th, cost))
                if x
            ]
        if v.status_changes:
            v.reasons.append(
                "status " + ", ".join(f"{k} ({c})" for k, c in sorted(v.status_changes.items()))
            )
        if v.missing and not th.allow_missing:
            v.reasons.append(f"{v.missing} ok row(s) missing from the new run")
        out.append(v)
    if not any(v.n_pairs for v in out):
        raise CompareError(
            "no rows of the two runs pair on (solver, preset, task, dataset, prior, image_id, seed)"
        )
    family = _decide(pending, th.alpha)
    return Comparison(out, cost, warnings, {"base": machine(base), "new": machine(new)}, family)


def compare_runs(base: RunData, new: RunData, th: Thresholds) -> list[CellVerdict]:
    """The per-cell verdicts of :func:`compare`."""
    return compare(base, new, th).verdicts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invbench compare",
        description="Regression gate: compare NEW_RUN against BASE_RUN on paired rows. Exit 0 no regression, "
        "1 regression, 2 bad input, 3 a cell not gated (only with --fail-not-gated).",
    )
    p.add_argument("base", metavar="BASE_RUN", help="baseline run directory (holds results.sqlite)")
    p.add_argument("new", metavar="NEW_RUN", help="new run directory")
    _threshold_options(p)
    _output_options(p)
    return p


def _threshold_options(p: argparse.ArgumentParser) -> None:
    """What is judged and how strictly."""
    p.add_argument(
        "--metric", default="psnr", help="quality metric column to gate on (default psnr)"
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.1,
        help="allowed quality drop in metric units (default 0.1, e.g. dB for psnr)",
    )
    p.add_argument(
        "--max-slowdown",
        type=float,
        default=1.2,
        help="allowed cost ratio new/base: time (paired ratio) and NFE/VJP per image (default 1.2)",
    )
    p.add_argument(
        "--min-slowdown-s",
        type=float,
        default=0.0,
        help="optional absolute slack: a time regression also needs the median seconds per image to "
        "grow by more than this (default 0: none)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="family-wise error rate of the run's verdict (Holm over all quality and time tests); "
        "intervals are 1 - alpha (default 0.05)",
    )
    p.add_argument(
        "--cost",
        choices=COSTS,
        default="auto",
        help="cost basis: normalised (solver time / in-run network time, NFE/VJP), wall (seconds per "
        "image), auto = normalised when both runs carry a device calibration (default)",
    )
    p.add_argument(
        "--min-samples",
        type=int,
        default=MIN_CI_UNITS,
        help=f"fewest paired images (quality) or timed calls (time) a cell needs to be gated; below, "
        f"'not gated' and no interval (default {MIN_CI_UNITS})",
    )


def _output_options(p: argparse.ArgumentParser) -> None:
    """Output format, exit-code policy and what is allowed to differ."""
    p.add_argument(
        "--format", choices=FORMATS, default="text", help="output: text (default), markdown, json"
    )
    p.add_argument(
        "--fail-not-gated",
        "--fail-inconclusive",
        dest="fail_not_gated",
        action="store_true",
        help="exit 3 when nothing regressed but a cell is not gated (default: exit 0)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="do not count base rows absent from the new run as regressions",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="judge runs of different configs (refused by default); a warning lists the differing keys",
    )


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
        th = Thresholds(
            a.metric,
            a.max_drop,
            a.max_slowdown,
            a.min_slowdown_s,
            a.alpha,
            a.allow_missing,
            a.cost,
            a.min_samples,
            a.allow_config_change,
        )
        base, new = load_run(a.base), load_run(a.new)
        c = compare(base, new, th)
    except (RunDirError, CompareError) as e:
        print(f"invbench compare: error: {terminal(e)}", file=sys.stderr)
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
            print(f"invbench compare: warning: {terminal(w)}", file=sys.stderr)
        print(format_table(c, th))
        print("\n" + summary_line(c, th))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
