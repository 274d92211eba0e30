"""The gate's verdicts as a terminal table, a pull-request comment (Markdown) and JSON. Every
user-controlled string goes through :mod:`invbench.bench.report.escape`."""

from __future__ import annotations

import math
from typing import Any

from invbench.bench.report.data import CELL_KEYS
from invbench.bench.report.escape import markdown, terminal
from tabulate import tabulate

from .verdict import (
    MACHINE_KEYS,
    CellVerdict,
    Comparison,
    Thresholds,
    fmt,
    min_network_share,
)


def _md(s: object) -> str:
    """One Markdown table cell: printable on one line, Markdown specials escaped."""
    return markdown(terminal(s))


def _interval(lo: float, hi: float, spec: str) -> str:
    """`` [lo, hi]`` or nothing (below the minimum n no interval is shown)."""
    return f" [{fmt(lo, spec)}, {fmt(hi, spec)}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def _quality_cell(v: CellVerdict) -> str:
    if not v.n_metric:
        return "—"
    gate = "" if v.quality is not None else " not gated"
    return f"{fmt(v.diff_mean)}{_interval(v.diff_low, v.diff_high, '.3f')} n={v.n_metric}{gate}"


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
    return f"{b:.4g}/{fmt(vb, '.4g')} -> {n:.4g}/{fmt(vn, '.4g')}"


def _verdict_text(v: CellVerdict) -> str:
    if v.reasons:
        return (
            "REGRESSION: "
            + "; ".join(v.reasons)
            + ("; " + "; ".join(v.not_gated) if v.not_gated else "")
        )
    if v.not_gated:
        return "; ".join(v.not_gated)
    return "ok"


def _family_text(c: Comparison, th: Thresholds) -> str:
    f = c.family
    left = f", {f.left_out} left out that could never reach it (Tarone)" if f.left_out else ""
    return (
        f"Run-level error control: family-wise error rate {th.alpha:g} by Holm over {f.size} test(s) "
        f"({f.quality} quality, {f.time} time){left}."
    )


def summary_line(c: Comparison, th: Thresholds) -> str:
    bad = [v for v in c.verdicts if v.regression]
    ng = [v for v in c.verdicts if v.verdict == "not gated"]
    return (
        f"{len(bad)} of {len(c.verdicts)} cell(s) regressed, {len(ng)} not gated (metric {th.metric}, "
        f"max drop {th.max_drop:g}, max slowdown x{th.max_slowdown:g}, alpha {th.alpha:g}, cost {c.cost}, "
        f"min samples {th.min_samples}). {_family_text(c, th)}"
    )


def _heads(c: Comparison, th: Thresholds) -> list[str]:
    ci = f"{100 * (1 - th.alpha):g}% CI"
    what = "solver/network time" if c.cost == "normalised" else "s/image"
    return [
        "solver",
        "preset",
        "task",
        "dataset",
        "prior",
        "pairs",
        f"Δ{th.metric} new-base [{ci}] images",
        f"{what} ratio [{ci}] calls",
        "NFE/VJP per image",
        "status changes",
        "verdict",
    ]


def _rows(c: Comparison, esc) -> list[list[str]]:
    rows = []
    for v in c.verdicts:
        rows.append(
            [
                *(esc(k) for k in v.key),
                str(v.n_pairs),
                _quality_cell(v),
                _speed_cell(v) + ("" if v.speed_basis in ("", c.cost) else f" ({v.speed_basis})"),
                _work_cell(v),
                ", ".join(f"{k}: {n}" for k, n in v.status_changes.items()) or "—",
                esc(_verdict_text(v)),
            ]
        )
    return rows


def format_table(verdicts: list[CellVerdict] | Comparison, th: Thresholds) -> str:
    """Plain-text table of the verdicts (one row per cell)."""
    c = verdicts if isinstance(verdicts, Comparison) else Comparison(verdicts, th.cost, [], {})
    return tabulate(
        _rows(c, terminal), headers=_heads(c, th), tablefmt="simple", disable_numparse=True
    )


def format_markdown(c: Comparison, th: Thresholds) -> str:
    """A pull-request comment: summary first, then flagged / not gated cells, then all cells."""
    bad = [v for v in c.verdicts if v.verdict != "ok"]
    head = "regression" if any(v.regression for v in c.verdicts) else "no regression"
    lines = [f"### invbench compare: {head}", "", summary_line(c, th), ""]
    lines += [f"> **warning:** {_md(w)}" for w in c.warnings]
    if c.warnings:
        lines.append("")
    if c.machines:
        lines += [
            "| run | " + " | ".join(MACHINE_KEYS) + " |",
            "|---" * (len(MACHINE_KEYS) + 1) + "|",
        ]
        for side, mach in c.machines.items():
            lines.append(f"| {side} | " + " | ".join(_md(mach[k]) for k in MACHINE_KEYS) + " |")
        lines.append("")
    if bad:
        lines += ["**Cells not ok**", ""]
        lines += [f"- {_md(' / '.join(v.key))}: {_md(_verdict_text(v))}" for v in bad]
        lines.append("")
    lines += [
        "<details><summary>All cells</summary>",
        "",
        tabulate(_rows(c, _md), headers=_heads(c, th), tablefmt="github", disable_numparse=True),
        "",
        "</details>",
    ]
    return "\n".join(lines)


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _cell_json(v: CellVerdict, th: Thresholds) -> dict[str, Any]:
    """One cell of :func:`to_json`."""
    t, q = v.speed, v.quality
    return {
        **dict(zip(CELL_KEYS, v.key, strict=True)),
        "verdict": v.verdict,
        "pairs": v.n_pairs,
        "quality": {
            "metric": th.metric,
            "n": v.n_metric,
            "diff_mean": _num(v.diff_mean),
            "ci": [_num(v.diff_low), _num(v.diff_high)],
            "gated": q is not None,
            "p_value": _num(q.p_value) if q else None,
            "p_adjusted": _num(v.p_adjusted.get("quality")),
        },
        "speed": None
        if t is None
        else {
            "basis": v.speed_basis,
            "gated": v.speed_gated,
            "ratio": _num(t.ratio),
            "ci": [_num(t.ci_low), _num(t.ci_high)],
            "p_value": _num(t.p_value),
            "p_adjusted": _num(v.p_adjusted.get("time")),
            "n": t.n,
            "network_share": _num(v.network_share),
        },
        "seconds_per_image_median": [_num(v.base_median_s), _num(v.new_median_s)],
        "nfe_per_image": [_num(v.nfe[0]), _num(v.nfe[1])],
        "vjp_per_image": [_num(v.vjp[0]), _num(v.vjp[1])],
        "status_changes": v.status_changes,
        "missing": v.missing,
        "reasons": v.reasons,
        "not_gated": v.not_gated,
    }


def to_json(c: Comparison, th: Thresholds, code: int) -> dict[str, Any]:
    """Machine-readable verdicts (non-finite numbers -> null)."""
    cells = [_cell_json(v, th) for v in c.verdicts]
    f = c.family
    return {
        "exit_code": code,
        "cost": c.cost,
        "warnings": c.warnings,
        "machines": c.machines,
        "thresholds": {
            "metric": th.metric,
            "max_drop": th.max_drop,
            "max_slowdown": th.max_slowdown,
            "min_slowdown_s": th.min_slowdown_s,
            "alpha": th.alpha,
            "min_samples": th.min_samples,
            "allow_missing": th.allow_missing,
            "allow_config_change": th.allow_config_change,
            "min_network_share": min_network_share(th.max_slowdown),
        },
        "family": {
            "method": "Holm (family-wise error rate), Tarone's exclusion",
            "alpha": th.alpha,
            "tests": f.size,
            "quality": f.quality,
            "time": f.time,
            "left_out": f.left_out,
        },
        "regressed": sum(v.regression for v in c.verdicts),
        "not_gated": sum(v.verdict == "not gated" for v in c.verdicts),
        "cells": cells,
    }
