"""Whether two runs can be compared: both finished, same config (or a change allowed and listed),
the gated metric computed in both, rows that succeeded; and the machine each ran on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import tomllib
from invbench.bench.config import HASH_EXCLUDED
from invbench.bench.report.data import ROW_KEYS, RunData
from invbench.bench.report.stats import DIRECTIONS
from invbench.bench.store import lock_held

from .verdict import (
    COST_COLS,
    MACHINE_KEYS,
    CompareError,
    Thresholds,
)


def norm_rows(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for k in ROW_KEYS:
        if k not in df:
            raise CompareError(f"results table lacks column {k!r}")
    for k in ROW_KEYS:
        df[k] = (
            pd.to_numeric(df[k], errors="coerce").astype("Int64").astype(str)
            if k == "seed"
            else df[k].astype(str)
        )
    for c in COST_COLS:  # runs made before a column existed
        if c not in df:
            df[c] = None
    return df


def check_metric(run: RunData, metric: str, which: str) -> None:
    if metric not in run.results.columns:
        raise CompareError(f"metric {metric!r} is not a column of the {which} run's results")
    why = run.unavailable().get(metric)
    if why:
        raise CompareError(
            f"metric {metric!r} is {why} in the {which} run; choose another --metric"
        )


def _check_complete(run: RunData, which: str) -> None:
    """CompareError when ``run`` is still being written or holds fewer rows than its grid."""
    rows = len(run.results)
    try:
        grid: int | None = int(run.meta["grid_rows"])
    except (KeyError, ValueError):
        grid = None  # a run made before grid_rows was recorded: only the lock tells
    done = f"{rows} of {grid} rows" if grid is not None else f"{rows} rows so far"
    if lock_held(run.run_dir):
        raise CompareError(
            f"the {which} run {run.run_dir} is still being written (a live process holds its .lock; "
            f"{done}): compare it when it has finished"
        )
    if grid is not None and rows < grid:
        raise CompareError(
            f"the {which} run {run.run_dir} is incomplete: {done} (killed or stopped before the end); "
            "finish it with invbench run CONFIG --out RUN --resume, then compare"
        )


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
        d["solvers"] = [
            {k: v for k, v in s.items() if k != "resources"} if isinstance(s, dict) else s
            for s in d["solvers"]
        ]
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
    what = f"config_hash {base.meta['config_hash']} vs {new.meta['config_hash']}; " + (
        f"differing keys: {shown}" if diff else "no differing key found in the stored configs"
    )
    if not th.allow_config_change:
        raise CompareError(
            f"the runs have different configs ({what}); compare two runs of one config, or pass "
            "--allow-config-change to judge them anyway"
        )
    return [f"runs of different configs compared (--allow-config-change): {what}"]


def _ok_rows(run: RunData) -> pd.DataFrame:
    return (
        run.results[run.results["status"].astype(str) == "ok"]
        if "status" in run.results
        else run.results.iloc[:0]
    )


def _check_ok_rows(run: RunData, which: str) -> None:
    """CompareError when ``run`` has no ok row (nothing to judge), with its status counts."""
    if len(_ok_rows(run)):
        return
    res = run.results
    counts = (
        ", ".join(f"{s} {n}" for s, n in res["status"].astype(str).value_counts().items())
        if "status" in res and len(res)
        else "no rows"
    )
    msgs = [
        str(m).strip() for m in res.get("message", pd.Series(dtype=str)).dropna() if str(m).strip()
    ]
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
    hint = (
        f"choose another --metric (computed by both: {', '.join(both)})"
        if both
        else "choose another --metric"
    )
    who = (
        "computed by neither run" if len(lacking) == 2 else f"not computed by the {lacking[0]} run"
    )
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
    return {k: str(run.meta.get(k, "unrecorded")) for k in MACHINE_KEYS}
