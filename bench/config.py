"""Experiment files (TOML): schema, validation naming the key path, ``--set`` overrides, hash.

An experiment file declares datasets, priors, tasks, solvers and metrics; the grid of cells is
their product (see :mod:`invbench.bench.grid`). Every key is documented in ``docs/harness.md``. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` whose message names the
key path (e.g. ``solvers[2].preset_x``). Configs are data: nothing in them is evaluated or used to
import code; names are looked up in the registries of ``operators``, ``priors`` and ``solvers``.

Units: ``noise_sigma`` is in pixel units ([0, 1] images); ``sigma_y = 2 * noise_sigma`` in model
units (:mod:`invbench.operators.conventions`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

__all__ = [
    "ConfigError",
    "DatasetSpec",
    "ExecutionSpec",
    "Experiment",
    "MetricsSpec",
    "PriorSpec",
    "SolverSpec",
    "TaskSpec",
    "apply_sets",
    "load",
    "loads",
    "parse_set",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")
_PATHLIKE = re.compile(r"(weights|path|file|dir|inception|checkpoint)")
RESOURCE_KEYS = ("timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "partition", "account", "qos",
                 "constraint", "gres", "array_parallelism")
STRING_RESOURCE_KEYS = ("partition", "account", "qos", "constraint", "gres")
"""Resource keys whose values are strings (Slurm names: ``--partition``, ``--account``, ...);
the others are integers >= 0 (``array_parallelism`` >= 1: most tasks of a shard array running at once)."""
INT64_MAX = 2**63 - 1
NAME_MAX_BYTES = 200
"""Names (experiment, dataset, task, solver/prior labels) become folder and file names: at most
this many UTF-8 bytes, leaving room within the usual 255-byte limit of one path component."""
CONFIG_MAX_BYTES = 4 * 1024 * 1024
"""Largest experiment file read (bytes); a config is a few kB."""
MAX_WARMUP = 100
"""Most untimed warm-up solves per cell (``warmup``): a bound, so a typo cannot run for ever."""


class ConfigError(ValueError):
    """Invalid experiment file or override; ``str(e)`` is one line naming the key path."""


@dataclass(frozen=True)
class DatasetSpec:
    """``[[datasets]]``: ``name`` (unique), ``type`` and type-specific ``fields`` for
    ``invbench.bench.datasets.build``; ``limit`` keeps the first ``limit`` images (None: all)."""

    name: str
    type: str
    limit: int | None
    fields: dict

    def build_spec(self) -> dict:
        spec = {"name": self.name, "type": self.type, **copy.deepcopy(self.fields)}
        if self.limit is not None:
            spec["limit"] = self.limit
        return spec


@dataclass(frozen=True)
class PriorSpec:
    """``[[priors]]``: registry ``name``; ``label`` (store column ``prior``, default ``name``);
    ``checkpoint`` (absolute path, resolved against the config's folder); ``datasets`` it pairs
    with (None: every dataset whose image shape matches); ``options`` passed to ``priors.build``."""

    name: str
    label: str
    checkpoint: str | None
    datasets: tuple[str, ...] | None
    options: dict

    def build_kwargs(self) -> dict:
        kw = copy.deepcopy(self.options)
        if self.checkpoint is not None:
            kw["checkpoint"] = self.checkpoint
        return kw


@dataclass(frozen=True)
class TaskSpec:
    """``[[tasks]]``: ``name`` (unique, default ``operator``), ``operator`` preset,
    ``noise_sigma`` (pixel units, >= 0), ``params`` (operator preset overrides)."""

    name: str
    operator: str
    noise_sigma: float
    params: dict

    @property
    def sigma_y(self) -> float:
        """Model-space noise std (``2 * noise_sigma``, by ``operators.conventions``)."""
        from invbench.operators.conventions import noise_sigma_to_model

        return noise_sigma_to_model(self.noise_sigma)


@dataclass(frozen=True)
class SolverSpec:
    """``[[solvers]]``: registry ``name``, ``preset`` (a name in the solver's presets, or
    ``"per_task"`` when the solver class provides ``preset_for_task``), ``label`` (store column
    ``solver``; default ``name``), ``overrides`` (hyperparameters), ``task_presets`` (task name ->
    preset), ``tasks`` / ``priors`` (restrict to these names; None = all), ``resources``
    (submitit/Slurm resources for this solver's shards)."""

    name: str
    preset: str
    label: str
    overrides: dict
    task_presets: dict
    tasks: tuple[str, ...] | None
    priors: tuple[str, ...] | None
    resources: dict
    provenance: str = ""   # "tuned-here (...)" for a ``tuned:PATH`` preset; "" = from the preset name


def preset_provenance(preset: str, spec_provenance: str = "", fidelity: str = "") -> str:
    """The ``preset_provenance`` column: ``spec_provenance`` for a tuned preset file, else
    ``"paper"`` for the papers' released presets (``paper*``), ``"default"`` for the class
    defaults, ``"named preset <name>"`` for the other presets shipped with a solver. A solver
    that is not a port of released code (its ``Solver.FIDELITY``) has that said first:
    ``"reconstruction, no public code; named preset cpu"``."""
    if spec_provenance:
        base = spec_provenance
    elif preset.startswith("paper"):
        base = "paper"
    else:
        base = "default" if preset == "default" else f"named preset {preset}"
    return f"{fidelity}; {base}" if fidelity else base


def load_tuned(path: Path, solver: str, where: str) -> tuple[str, dict, str]:
    """(base preset, hyperparameters, provenance) of a preset file written by ``invbench tune``."""
    if not path.is_file():
        raise ConfigError(f"{where}: tuned preset file {path} not found")
    try:
        doc = tomllib.loads(path.read_text())["tuned"]
        base, params = str(doc["base_preset"]), dict(doc["params"])
        if doc["solver"] != solver:
            raise ConfigError(f"{where}: {path} was tuned for solver {doc['solver']!r}, not {solver!r}")
        b = doc.get("budget", {})
        budget = ", ".join(f"{k} {v:g}" for k, v in b.items())
        prov = f"tuned-here ({budget}; {doc['split']} split)"
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{where}: {path} is not a tuned preset file ({type(e).__name__}: {e})") from None
    return base, params, prov


@dataclass(frozen=True)
class MetricsSpec:
    """``[metrics]``: ``image`` per-image metric names, ``set`` per-cell set metrics, ``options``
    (every other key of the table) passed to ``invbench.bench.metrics.build``/``build_set``."""

    image: tuple[str, ...]
    set: tuple[str, ...]
    options: dict


@dataclass(frozen=True)
class ExecutionSpec:
    """``[execution]``: ``shards`` (grid shards for submitit), ``folder`` (submitit logs; default
    RUN_DIR/submitit), Slurm ``resources`` shared by all shards (``timeout_min``, ...)."""

    shards: int
    folder: str | None
    resources: dict


@dataclass(frozen=True)
class ReportSpec:
    """``[report]``: how ``invbench report`` presents the run (no effect on any result, so outside
    the config hash). ``reference`` a solver name whose paired difference every cell also shows;
    ``primary`` task -> ranking metric (default ``psnr``); ``images`` the image ids of the sample
    grids; ``zoom`` ``[x, y, size]`` the zoomed inset of every grid image, as fractions of the image
    side (top-left corner and side of the square region, all in [0, 1]); ``matched_nfe`` the budgets
    (network evaluations per image) of the "At matched cost" tables."""

    reference: str | None = None
    primary: dict = field(default_factory=dict)
    images: tuple[str, ...] | None = None
    zoom: tuple[float, float, float] | None = None
    matched_nfe: tuple[float, ...] | None = None

    def as_dict(self) -> dict:
        return {**({"reference": self.reference} if self.reference else {}),
                **({"primary": dict(self.primary)} if self.primary else {}),
                **({"images": list(self.images)} if self.images is not None else {}),
                **({"zoom": list(self.zoom)} if self.zoom is not None else {}),
                **({"matched_nfe": list(self.matched_nfe)} if self.matched_nfe is not None else {})}


def check_zoom(v: Any, path: str) -> tuple[float, float, float]:
    """``[x, y, size]`` of a zoomed inset, fractions of the image side; raises :class:`ConfigError`."""
    if (not isinstance(v, (list, tuple)) or len(v) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise ConfigError(f"{path}: expected [x, y, size], three numbers in [0, 1] (fractions of the image side)")
    x, y, size = (float(t) for t in v)
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < size <= 1 and x + size <= 1 + 1e-9 and y + size <= 1 + 1e-9):
        raise ConfigError(f"{path}: [x, y, size] = [{x}, {y}, {size}] must satisfy 0 <= x, y < 1, 0 < size, "
                          "x + size <= 1 and y + size <= 1 (fractions of the image side)")
    return x, y, size


def check_nfe_budgets(v: Any, path: str) -> tuple[float, ...]:
    """A non-empty array of positive numbers (network evaluations per image)."""
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in v)):
        raise ConfigError(f"{path}: expected a non-empty array of positive numbers (network evaluations per image)")
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    seeds: tuple[int, ...]
    batch_size: int
    device: str
    dtype: str
    save_npy: bool
    warmup: int
    data_seed: int | None
    datasets: tuple[DatasetSpec, ...]
    priors: tuple[PriorSpec, ...]
    tasks: tuple[TaskSpec, ...]
    solvers: tuple[SolverSpec, ...]
    metrics: MetricsSpec
    execution: ExecutionSpec
    protocol: str
    resolved: dict = field(repr=False)   # the normalised config (all defaults filled)
    base_dir: str = "."                   # folder relative paths are resolved against
    timing_repeats: int = 1               # timed solves per batch (1 stored + repeats for statistics)
    config_hash: str = ""
    report: ReportSpec = field(default_factory=ReportSpec)

    def toml_text(self) -> str:
        """The resolved config as TOML text (recorded in the store's meta)."""
        return to_toml(self.resolved)

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)


# --------------------------------------------------------------------------- parsing helpers


def _type_name(v: Any) -> str:
    return {bool: "bool", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(v), type(v).__name__
    )


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def _k(key: Any) -> str:
    """A key as it appears in a key path: bare when plain, else JSON-quoted (so control
    characters and newlines in a hostile key never reach a terminal unescaped)."""
    key = str(key)
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


class _Reader:
    """Reads one TOML table, checking types and tracking used keys for unknown-key errors."""

    def __init__(self, table: Any, path: str):
        if not isinstance(table, dict):
            raise ConfigError(f"{path or 'config'}: expected a table, got {_type_name(table)}")
        self.t = table
        self.path = path
        self.used: set[str] = set()

    def p(self, key: str) -> str:
        return f"{self.path}.{_k(key)}" if self.path else _k(key)

    def get(self, key: str, kind, default=..., check=None):
        self.used.add(key)
        if key not in self.t:
            if default is ...:
                raise ConfigError(f"{self.p(key)}: required key missing")
            return default
        v = self.t[key]
        v = _coerce(v, kind, self.p(key))
        if check is not None:
            msg = check(v)
            if msg:
                raise ConfigError(f"{self.p(key)}: {msg} (got {v!r})")
        return v

    def finish(self, allow_extra: bool = False) -> dict:
        extra = {k: v for k, v in self.t.items() if k not in self.used}
        if extra and not allow_extra:
            k = min(extra)
            raise ConfigError(f"{self.p(k)}: unknown key")
        return extra


def _coerce(v, kind, path):
    if kind == "str":
        if not isinstance(v, str):
            raise ConfigError(f"{path}: expected a string, got {_type_name(v)}")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{path}: expected true/false, got {_type_name(v)}")
        return v
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path}: expected an integer, got {_type_name(v)}")
        _int64(v, path)
        return v
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_type_name(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"{path}: must be finite (got {v})")
        return v
    if kind == "table":
        if not isinstance(v, dict):
            raise ConfigError(f"{path}: expected a table, got {_type_name(v)}")
        return v
    if kind == "list_str":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{path}: expected an array of strings")
        return tuple(v)
    if kind == "list_int":
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ConfigError(f"{path}: expected an array of integers")
        for i, x in enumerate(v):
            _int64(x, f"{path}[{i}]")
        return tuple(v)
    if kind == "list_table":
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise ConfigError(f"{path}: expected an array of tables ([[{path}]])")
        return v
    raise AssertionError(kind)


def _int64(v: int, path: str) -> None:
    """Integers are stored in SQLite (signed 64-bit) and seed generators: refuse larger ones."""
    if not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise ConfigError(f"{path}: integer {v} does not fit in a signed 64-bit integer (|v| < 2^63)")


def _name_check(v: str) -> str | None:
    if not _NAME_RE.match(v):
        return "names use letters, digits and _ . + - only"
    if len(v.encode()) > NAME_MAX_BYTES:
        return f"names are at most {NAME_MAX_BYTES} bytes (they become file names; got {len(v.encode())})"
    return None


def _plain_values(d: dict, path: str) -> dict:
    """Check a free-form table holds only TOML scalars/arrays/tables (no datetimes)."""
    for k, v in d.items():
        p = f"{path}.{_k(k)}"
        if isinstance(v, dict):
            _plain_values(v, p)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, dict):
                    _plain_values(x, f"{p}[{i}]")
                elif not isinstance(x, (str, int, float, bool, list)):
                    raise ConfigError(f"{p}[{i}]: unsupported value type {_type_name(x)}")
                elif isinstance(x, int) and not isinstance(x, bool):
                    _int64(x, f"{p}[{i}]")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{p}: must be finite (got {v})")
        elif isinstance(v, int) and not isinstance(v, bool):
            _int64(v, p)
        elif not isinstance(v, (str, int, float, bool)):
            raise ConfigError(f"{p}: unsupported value type {_type_name(v)}")
    return d


def _unique(names: list[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ConfigError(f"{path}[{i}].{what}: duplicate {what} {n!r}")
        seen.add(n)


# --------------------------------------------------------------------------- schema


def parse(raw: dict, base_dir: Path | str = ".") -> Experiment:
    """Validate a parsed TOML document and return the :class:`Experiment`.

    Only the schema is checked here (keys, types, ranges, cross references between sections);
    registry names and files are checked by :func:`invbench.bench.runner.prepare`.
    """
    base = Path(base_dir)
    r = _Reader(raw, "")
    name = r.get("name", "str", check=_name_check)
    description = r.get("description", "str", "")
    protocol = r.get("protocol", "str", "")
    seeds = r.get("seeds", "list_int", (0,), check=lambda v: None if v and all(s >= 0 for s in v) and len(set(v)) == len(v) else "a non-empty array of distinct integers >= 0")
    batch_size = r.get("batch_size", "int", 1, check=lambda v: None if v >= 1 else "must be >= 1")
    device = r.get("device", "str", "cpu", check=lambda v: None if _DEVICE_RE.match(v) else "must be cpu, cuda, cuda:N or mps")
    dtype = r.get("dtype", "str", "float32", check=lambda v: None if v in ("float32", "float64") else "must be float32 or float64")
    save_npy = r.get("save_npy", "bool", False)
    warmup = r.get("warmup", "int", 0, check=lambda v: None if 0 <= v <= MAX_WARMUP else
                   ("must be >= 0" if v < 0 else f"must be at most {MAX_WARMUP} (untimed solves per cell)"))
    timing_repeats = r.get("timing_repeats", "int", 1, check=lambda v: None if 1 <= v <= 100 else "must be in 1..100")
    data_seed = r.get("data_seed", "int", None, check=lambda v: None if v >= 0 else "must be >= 0")

    # datasets
    dsets = []
    for i, t in enumerate(r.get("datasets", "list_table")):
        dr = _Reader(t, f"datasets[{i}]")
        dname = dr.get("name", "str", check=_name_check)
        dtype_ = dr.get("type", "str")
        limit = dr.get("limit", "int", None, check=lambda v: None if v >= 1 else "must be >= 1")
        extra = _plain_values(dr.finish(allow_extra=True), dr.path)
        # relative paths in dataset fields are resolved against the config folder
        for key in ("root", "path", "manifest"):
            if isinstance(extra.get(key), str):
                extra[key] = str((base / extra[key]).resolve()) if not Path(extra[key]).is_absolute() else extra[key]
        dsets.append(DatasetSpec(dname, dtype_, limit, extra))
    if not dsets:
        raise ConfigError("datasets: at least one [[datasets]] entry is required")
    _unique([d.name for d in dsets], "datasets", "name")
    dnames = {d.name for d in dsets}

    # priors
    priors_ = []
    for i, t in enumerate(r.get("priors", "list_table")):
        pr = _Reader(t, f"priors[{i}]")
        pname = pr.get("name", "str")
        label = pr.get("label", "str", pname, check=_name_check)
        ckpt = pr.get("checkpoint", "str", None)
        if ckpt is not None:
            ckpt = str(Path(ckpt).expanduser() if Path(ckpt).expanduser().is_absolute() else (base / ckpt).resolve())
        pd = pr.get("datasets", "list_str", None)
        if pd is not None:
            for j, dn in enumerate(pd):
                if dn not in dnames:
                    raise ConfigError(f"priors[{i}].datasets[{j}]: unknown dataset {dn!r}; declared: {', '.join(sorted(dnames))}")
        opts = _plain_values(pr.get("options", "table", {}), pr.p("options"))
        pr.finish()
        priors_.append(PriorSpec(pname, label, ckpt, pd, opts))
    if not priors_:
        raise ConfigError("priors: at least one [[priors]] entry is required")
    _unique([p.label for p in priors_], "priors", "label")

    # tasks
    tasks = []
    for i, t in enumerate(r.get("tasks", "list_table")):
        tr = _Reader(t, f"tasks[{i}]")
        op = tr.get("operator", "str")
        tname = tr.get("name", "str", op, check=_name_check)
        ns = tr.get("noise_sigma", "float", check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1] (pixel units)")
        params = _plain_values(tr.get("params", "table", {}), tr.p("params"))
        tr.finish()
        tasks.append(TaskSpec(tname, op, ns, params))
    if not tasks:
        raise ConfigError("tasks: at least one [[tasks]] entry is required")
    _unique([t.name for t in tasks], "tasks", "name")
    tnames = {t.name for t in tasks}
    plabels = {p.label for p in priors_}

    # solvers
    sols = []
    for i, t in enumerate(r.get("solvers", "list_table")):
        sr = _Reader(t, f"solvers[{i}]")
        sname = sr.get("name", "str")
        preset = sr.get("preset", "str", "default")
        label = sr.get("label", "str", sname, check=_name_check)
        overrides = _plain_values(sr.get("overrides", "table", {}), sr.p("overrides"))
        tp = sr.get("task_presets", "table", {})
        for k, v in tp.items():
            if k not in tnames:
                raise ConfigError(f"solvers[{i}].task_presets.{_k(k)}: unknown task {k!r}; declared: {', '.join(sorted(tnames))}")
            if not isinstance(v, str):
                raise ConfigError(f"solvers[{i}].task_presets.{_k(k)}: expected a preset name (string)")
        st = sr.get("tasks", "list_str", None)
        for j, tn in enumerate(st or ()):
            if tn not in tnames:
                raise ConfigError(f"solvers[{i}].tasks[{j}]: unknown task {tn!r}; declared: {', '.join(sorted(tnames))}")
        sp = sr.get("priors", "list_str", None)
        for j, pn in enumerate(sp or ()):
            if pn not in plabels:
                raise ConfigError(f"solvers[{i}].priors[{j}]: unknown prior {pn!r}; declared: {', '.join(sorted(plabels))}")
        res = _resources(sr.get("resources", "table", {}), sr.p("resources"))
        sr.finish()
        prov = ""
        if preset.startswith("tuned:"):
            tpath = Path(base_dir) / Path(preset[len("tuned:"):]).expanduser()
            preset, tuned_params, prov = load_tuned(tpath, sname, sr.p("preset"))
            overrides = {**tuned_params, **overrides}
        sols.append(SolverSpec(sname, preset, label, overrides, dict(tp), st, sp, res, prov))
    if not sols:
        raise ConfigError("solvers: at least one [[solvers]] entry is required")
    _unique([s.label for s in sols], "solvers", "label")

    # metrics
    mr = _Reader(r.get("metrics", "table", {}), "metrics")
    image = mr.get("image", "list_str", ("psnr", "ssim", "mse", "consistency"))
    set_ = mr.get("set", "list_str", ())
    mopts = _plain_values(mr.finish(allow_extra=True), "metrics")
    # every other key is a per-metric option table, e.g. [metrics.lpips] net = "alex";
    # metric names and option names are checked by invbench.bench.metrics.build in runner.prepare
    for k, v in mopts.items():
        if not isinstance(v, dict):
            raise ConfigError(f"metrics.{_k(k)}: unknown key (metric options go in a table [metrics.<metric>])")
        for kk, vv in v.items():
            if isinstance(vv, str) and _PATHLIKE.search(kk) and not Path(vv).expanduser().is_absolute():
                v[kk] = str((base / vv).resolve())
    metrics = MetricsSpec(image, set_, mopts)

    # execution
    er = _Reader(r.get("execution", "table", {}), "execution")
    shards = er.get("shards", "int", 1, check=lambda v: None if v >= 1 else "must be >= 1")
    folder = er.get("folder", "str", None)
    eres = _resources(er.get("resources", "table", {}), "execution.resources")
    er.finish()
    execution = ExecutionSpec(shards, folder, eres)

    # report (presentation only)
    rr = _Reader(r.get("report", "table", {}), "report")
    ref = rr.get("reference", "str", None)
    snames = sorted({s.name for s in sols})
    if ref is not None and ref not in snames:
        raise ConfigError(f"report.reference: unknown solver {ref!r}; declared: {', '.join(snames)}")
    prim = rr.get("primary", "table", {})
    known_metrics = set(image) | set(set_)
    for k, v in prim.items():
        if k not in tnames:
            raise ConfigError(f"report.primary.{_k(k)}: unknown task {k!r}; declared: {', '.join(sorted(tnames))}")
        if not isinstance(v, str) or v not in known_metrics:
            raise ConfigError(f"report.primary.{_k(k)}: expected one of the configured metrics "
                              f"({', '.join(sorted(known_metrics))}), got {v!r}")
    rimages = rr.get("images", "list_str", None)
    zoom = check_zoom(rr.t["zoom"], rr.p("zoom")) if "zoom" in rr.t else None
    rr.used.add("zoom")
    mnfe = None
    if "matched_nfe" in rr.t:
        mnfe = check_nfe_budgets(rr.t["matched_nfe"], rr.p("matched_nfe"))
    rr.used.add("matched_nfe")
    rr.finish()
    report = ReportSpec(ref, dict(prim), rimages, zoom, mnfe)

    r.finish()
    resolved = {
        "name": name,
        "description": description,
        "protocol": protocol,
        "seeds": list(seeds),
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "save_npy": save_npy,
        "warmup": warmup,
        **({"data_seed": data_seed} if data_seed is not None else {}),
        **({"timing_repeats": timing_repeats} if timing_repeats != 1 else {}),
        "datasets": [{"name": d.name, "type": d.type, **({"limit": d.limit} if d.limit is not None else {}), **d.fields} for d in dsets],
        "priors": [
            {"name": p.name, "label": p.label, **({"checkpoint": p.checkpoint} if p.checkpoint else {}),
             **({"datasets": list(p.datasets)} if p.datasets is not None else {}), "options": p.options}
            for p in priors_
        ],
        "tasks": [{"name": t.name, "operator": t.operator, "noise_sigma": t.noise_sigma, "params": t.params} for t in tasks],
        "solvers": [
            {"name": s.name, "preset": s.preset, "label": s.label, "overrides": s.overrides, "task_presets": s.task_presets,
             **({"tasks": list(s.tasks)} if s.tasks is not None else {}),
             **({"priors": list(s.priors)} if s.priors is not None else {}), "resources": s.resources}
            for s in sols
        ],
        "metrics": {"image": list(image), "set": list(set_), **mopts},
        "execution": {"shards": shards, **({"folder": folder} if folder else {}), "resources": eres},
        **({"report": report.as_dict()} if report.as_dict() else {}),
    }
    exp = Experiment(
        name=name, description=description, seeds=tuple(seeds), batch_size=batch_size, device=device,
        dtype=dtype, save_npy=save_npy, warmup=warmup, data_seed=data_seed, datasets=tuple(dsets), priors=tuple(priors_),
        tasks=tuple(tasks), solvers=tuple(sols), metrics=metrics, execution=execution, protocol=protocol,
        resolved=resolved, base_dir=str(base.resolve()), timing_repeats=timing_repeats, report=report,
    )
    object.__setattr__(exp, "config_hash", config_hash(resolved))
    return exp


def _resources(d: dict, path: str) -> dict:
    for k, v in d.items():
        if k not in RESOURCE_KEYS:
            raise ConfigError(f"{path}.{_k(k)}: unknown key; valid: {', '.join(RESOURCE_KEYS)}")
        if k in STRING_RESOURCE_KEYS:
            if not isinstance(v, str) or not v or any(c.isspace() or not c.isprintable() for c in v):
                raise ConfigError(f"{path}.{k}: expected a non-empty string without spaces")
        elif isinstance(v, bool) or not isinstance(v, int) or v < int(k == "array_parallelism"):
            raise ConfigError(f"{path}.{k}: expected an integer >= {int(k == 'array_parallelism')}")
    return dict(d)


# Keys that do not change any result and are left out of the config hash: how the grid is
# executed, how it is reported and free-text description. ``batch_size`` is also left out: results are identical
# across batch sizes up to float round-off (tested to 1e-5), so a resume may change it.
HASH_EXCLUDED = ("description", "execution", "batch_size", "report")


def config_hash(resolved: dict) -> str:
    """sha256 (hex, first 16 chars) of the canonical JSON of the result-affecting config."""
    d = {k: v for k, v in resolved.items() if k not in HASH_EXCLUDED}
    d["solvers"] = [{k: v for k, v in s.items() if k != "resources"} for s in d["solvers"]]
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- --set overrides

_SEG_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)(?:\[(\d+)\])?$")


def parse_set(item: str) -> tuple[list[tuple[str, int | None]], Any]:
    """Parse ``KEY=VALUE``; KEY is a dotted path with optional indices (``solvers[1].overrides.steps``),
    VALUE a TOML value (``4``, ``0.1``, ``true``, ``"x"``, ``[0, 1]``) or else a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    key, val = item.split("=", 1)
    key = key.strip()
    segs = []
    for part in key.split("."):
        m = _SEG_RE.match(part)
        if not m:
            raise ConfigError(f"--set {item!r}: bad key path {key!r}")
        segs.append((m.group(1), int(m.group(2)) if m.group(2) is not None else None))
    try:
        value = tomllib.loads(f"v = {val.strip()}")["v"]
    except tomllib.TOMLDecodeError as e:
        if val.strip()[:1] in ('{', '[', '"', "'"):   # meant as a table / array / quoted string
            raise ConfigError(f"--set {item!r}: malformed TOML value ({e})") from None
        value = val.strip()
    return segs, value


def apply_sets(raw: dict, sets: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``KEY=VALUE`` override applied (keys may be new: the
    schema then rejects unknown ones with their path)."""
    out = copy.deepcopy(raw)
    for item in sets:
        segs, value = parse_set(item)
        cur: Any = out
        path = ""
        for n, (k, idx) in enumerate(segs):
            last = n == len(segs) - 1
            path = f"{path}.{k}" if path else k
            if not isinstance(cur, dict):
                raise ConfigError(f"--set {item!r}: {path} is not inside a table")
            if idx is None:
                if last:
                    cur[k] = value
                else:
                    cur = cur.setdefault(k, {})
            else:
                arr = cur.get(k)
                if not isinstance(arr, list) or idx >= len(arr):
                    raise ConfigError(f"--set {item!r}: {path}[{idx}] does not exist")
                path = f"{path}[{idx}]"
                if last:
                    arr[idx] = value
                else:
                    cur = arr[idx]
    return out


# --------------------------------------------------------------------------- entry points


def loads(text: str, sets: list[str] | None = None, base_dir: Path | str = ".", source: str = "config") -> Experiment:
    """Parse TOML ``text`` (with ``--set`` overrides) into a validated :class:`Experiment`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: malformed TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: malformed TOML: arrays/tables nested too deeply") from None
    try:
        return parse(apply_sets(raw, list(sets or [])), base_dir)
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply") from None


def load(path: str | Path, sets: list[str] | None = None) -> Experiment:
    """Read and validate the experiment file at ``path``; relative paths inside it are resolved
    against its folder."""
    p = Path(path)
    try:
        st = os.stat(p)   # follows symbolic links: the target must be a regular file
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
            raise ConfigError(f"{p}: cannot read config (it is {kind}, not a regular file)")
        if st.st_size > CONFIG_MAX_BYTES:
            raise ConfigError(f"{p}: cannot read config ({st.st_size} bytes; experiment files are at most {CONFIG_MAX_BYTES})")
        with open(p, "rb") as f:
            data = f.read(CONFIG_MAX_BYTES + 1)
        if len(data) > CONFIG_MAX_BYTES:
            raise ConfigError(f"{p}: cannot read config (larger than {CONFIG_MAX_BYTES} bytes)")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from None
    try:
        return loads(text, sets, p.parent, source=str(p))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None


# --------------------------------------------------------------------------- TOML writer


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _toml_key(k: str) -> str:
    return k if re.match(r"^[A-Za-z0-9_\-]+$", k) else json.dumps(k)


def to_toml(d: dict) -> str:
    """Serialise a resolved config (scalars, arrays, inline tables, arrays of tables)."""
    lines = []
    tables = []
    for k, v in d.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables.append((k, v, True))
        elif isinstance(v, dict):
            tables.append((k, v, False))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v, is_array in tables:
        items = v if is_array else [v]
        for item in items:
            lines.append("")
            lines.append(f"[[{k}]]" if is_array else f"[{k}]")
            for kk, vv in item.items():
                lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"
