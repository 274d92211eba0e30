"""The schema of an experiment file: one parser per section, cross references between sections,
the resolved config (every default filled) and its hash.

Only the schema is checked here (keys, types, ranges, cross references between sections);
registry names and files are checked when the run is prepared.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .reader import _k, _name_check, _plain_values, _Reader, _unique
from .spec import (
    _DEVICE_RE,
    _PATHLIKE,
    MAX_WARMUP,
    RESOURCE_KEYS,
    STRING_RESOURCE_KEYS,
    ConfigError,
    DatasetSpec,
    ExecutionSpec,
    Experiment,
    MetricsSpec,
    PriorSpec,
    ReportSpec,
    SolverSpec,
    TaskSpec,
    check_nfe_budgets,
    check_zoom,
    load_tuned,
)

# Keys that do not change any result and are left out of the config hash: how the grid is
# executed, how it is reported and free-text description. ``batch_size`` is also left out:
# results are identical across batch sizes up to float round-off (tested to 1e-5), so a resume
# may change it.
HASH_EXCLUDED = ("description", "execution", "batch_size", "report")


def _declared(names: set[str]) -> str:
    return ", ".join(sorted(names))


def _scalars(r: _Reader) -> dict:
    """The top-level scalar keys, defaults filled."""

    def seeds_ok(v):
        if v and all(s >= 0 for s in v) and len(set(v)) == len(v):
            return None
        return "a non-empty array of distinct integers >= 0"

    def warmup_ok(v):
        if 0 <= v <= MAX_WARMUP:
            return None
        return (
            "must be >= 0" if v < 0 else f"must be at most {MAX_WARMUP} (untimed solves per cell)"
        )

    return {
        "name": r.get("name", "str", check=_name_check),
        "description": r.get("description", "str", ""),
        "protocol": r.get("protocol", "str", ""),
        "seeds": r.get("seeds", "list_int", (0,), check=seeds_ok),
        "batch_size": r.get(
            "batch_size", "int", 1, check=lambda v: None if v >= 1 else "must be >= 1"
        ),
        "device": r.get(
            "device",
            "str",
            "cpu",
            check=lambda v: None if _DEVICE_RE.match(v) else "must be cpu, cuda, cuda:N or mps",
        ),
        "dtype": r.get(
            "dtype",
            "str",
            "float32",
            check=lambda v: None if v in ("float32", "float64") else "must be float32 or float64",
        ),
        "save_npy": r.get("save_npy", "bool", False),
        "warmup": r.get("warmup", "int", 0, check=warmup_ok),
        "timing_repeats": r.get(
            "timing_repeats",
            "int",
            1,
            check=lambda v: None if 1 <= v <= 100 else "must be in 1..100",
        ),
        "data_seed": r.get(
            "data_seed", "int", None, check=lambda v: None if v >= 0 else "must be >= 0"
        ),
    }


def _datasets(r: _Reader, base: Path) -> list[DatasetSpec]:
    dsets = []
    for i, t in enumerate(r.get("datasets", "list_table")):
        dr = _Reader(t, f"datasets[{i}]")
        dname = dr.get("name", "str", check=_name_check)
        dtype_ = dr.get("type", "str")
        limit = dr.get("limit", "int", None, check=lambda v: None if v >= 1 else "must be >= 1")
        extra = _plain_values(dr.finish(allow_extra=True), dr.path)
        # relative paths in dataset fields are resolved against the config folder
        for key in ("root", "path", "manifest"):
            if isinstance(extra.get(key), str) and not Path(extra[key]).is_absolute():
                extra[key] = str((base / extra[key]).resolve())
        dsets.append(DatasetSpec(dname, dtype_, limit, extra))
    if not dsets:
        raise ConfigError("datasets: at least one [[datasets]] entry is required")
    _unique([d.name for d in dsets], "datasets", "name")
    return dsets


def _priors(r: _Reader, base: Path, dnames: set[str]) -> list[PriorSpec]:
    priors_ = []
    for i, t in enumerate(r.get("priors", "list_table")):
        pr = _Reader(t, f"priors[{i}]")
        pname = pr.get("name", "str")
        label = pr.get("label", "str", pname, check=_name_check)
        ckpt = pr.get("checkpoint", "str", None)
        if ckpt is not None:
            user = Path(ckpt).expanduser()
            ckpt = str(user if user.is_absolute() else (base / ckpt).resolve())
        pd = pr.get("datasets", "list_str", None)
        for j, dn in enumerate(pd or ()):
            if dn not in dnames:
                raise ConfigError(
                    f"priors[{i}].datasets[{j}]: unknown dataset {dn!r}; "
                    f"declared: {_declared(dnames)}"
                )
        opts = _plain_values(pr.get("options", "table", {}), pr.p("options"))
        pr.finish()
        priors_.append(PriorSpec(pname, label, ckpt, pd, opts))
    if not priors_:
        raise ConfigError("priors: at least one [[priors]] entry is required")
    _unique([p.label for p in priors_], "priors", "label")
    return priors_


def _tasks(r: _Reader) -> list[TaskSpec]:
    tasks = []
    for i, t in enumerate(r.get("tasks", "list_table")):
        tr = _Reader(t, f"tasks[{i}]")
        op = tr.get("operator", "str")
        tname = tr.get("name", "str", op, check=_name_check)
        ns = tr.get(
            "noise_sigma",
            "float",
            check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1] (pixel units)",
        )
        params = _plain_values(tr.get("params", "table", {}), tr.p("params"))
        tr.finish()
        tasks.append(TaskSpec(tname, op, ns, params))
    if not tasks:
        raise ConfigError("tasks: at least one [[tasks]] entry is required")
    _unique([t.name for t in tasks], "tasks", "name")
    return tasks


def _known(names, known: set[str], path: str, what: str) -> None:
    """Each of ``names`` (a list under ``path``) is one of ``known`` (declared ``what``s)."""
    for j, n in enumerate(names or ()):
        if n not in known:
            raise ConfigError(f"{path}[{j}]: unknown {what} {n!r}; declared: {_declared(known)}")


def _solver(sr: _Reader, i: int, tnames: set[str], plabels: set[str], base_dir: Path) -> SolverSpec:
    sname = sr.get("name", "str")
    preset = sr.get("preset", "str", "default")
    label = sr.get("label", "str", sname, check=_name_check)
    overrides = _plain_values(sr.get("overrides", "table", {}), sr.p("overrides"))
    tp = sr.get("task_presets", "table", {})
    for k, v in tp.items():
        if k not in tnames:
            raise ConfigError(
                f"solvers[{i}].task_presets.{_k(k)}: unknown task {k!r}; "
                f"declared: {_declared(tnames)}"
            )
        if not isinstance(v, str):
            raise ConfigError(f"solvers[{i}].task_presets.{_k(k)}: expected a preset name (string)")
    st = sr.get("tasks", "list_str", None)
    _known(st, tnames, f"solvers[{i}].tasks", "task")
    sp = sr.get("priors", "list_str", None)
    _known(sp, plabels, f"solvers[{i}].priors", "prior")
    res = _resources(sr.get("resources", "table", {}), sr.p("resources"))
    sr.finish()
    prov = ""
    if preset.startswith("tuned:"):
        tpath = Path(base_dir) / Path(preset[len("tuned:") :]).expanduser()
        preset, tuned_params, prov = load_tuned(tpath, sname, sr.p("preset"))
        overrides = {**tuned_params, **overrides}
    return SolverSpec(sname, preset, label, overrides, dict(tp), st, sp, res, prov)


def _solvers(r: _Reader, tnames: set[str], plabels: set[str], base_dir: Path) -> list[SolverSpec]:
    sols = [
        _solver(_Reader(t, f"solvers[{i}]"), i, tnames, plabels, base_dir)
        for i, t in enumerate(r.get("solvers", "list_table"))
    ]
    if not sols:
        raise ConfigError("solvers: at least one [[solvers]] entry is required")
    _labels_apart(sols, tnames, plabels)
    return sols


def _labels_apart(sols: list[SolverSpec], tnames: set[str], plabels: set[str]) -> None:
    """Two entries may share a label only when they meet no common (task, prior): one solver
    with a preset per task, e.g. presets tuned per task, is one row label in every table."""
    for j, s in enumerate(sols):
        for i, o in enumerate(sols[:j]):
            if o.label != s.label:
                continue
            tasks = set(o.tasks or tnames) & set(s.tasks or tnames)
            priors = set(o.priors or plabels) & set(s.priors or plabels)
            if tasks and priors:
                raise ConfigError(
                    f"solvers[{j}].label: duplicate label {s.label!r} (solvers[{i}] runs it on task "
                    f"{min(tasks)!r} and prior {min(priors)!r} too); two entries share a "
                    "label only when their tasks or priors do not overlap"
                )


def _metrics(r: _Reader, base: Path) -> MetricsSpec:
    mr = _Reader(r.get("metrics", "table", {}), "metrics")
    image = mr.get("image", "list_str", ("psnr", "ssim", "mse", "consistency"))
    set_ = mr.get("set", "list_str", ())
    mopts = _plain_values(mr.finish(allow_extra=True), "metrics")
    # every other key is a per-metric option table, e.g. [metrics.lpips] net = "alex";
    # metric names and option names are checked by invbench.bench.metrics.build when the run
    # is prepared
    for k, v in mopts.items():
        if not isinstance(v, dict):
            raise ConfigError(
                f"metrics.{_k(k)}: unknown key (metric options go in a table [metrics.<metric>])"
            )
        for kk, vv in v.items():
            if (
                isinstance(vv, str)
                and _PATHLIKE.search(kk)
                and not Path(vv).expanduser().is_absolute()
            ):
                v[kk] = str((base / vv).resolve())
    return MetricsSpec(image, set_, mopts)


def _execution(r: _Reader) -> ExecutionSpec:
    er = _Reader(r.get("execution", "table", {}), "execution")
    shards = er.get("shards", "int", 1, check=lambda v: None if v >= 1 else "must be >= 1")
    folder = er.get("folder", "str", None)
    eres = _resources(er.get("resources", "table", {}), "execution.resources")
    er.finish()
    return ExecutionSpec(shards, folder, eres)


def _report(
    r: _Reader, sols: list[SolverSpec], tnames: set[str], metrics: MetricsSpec
) -> ReportSpec:
    """``[report]`` (presentation only)."""
    rr = _Reader(r.get("report", "table", {}), "report")
    ref = rr.get("reference", "str", None)
    snames = {s.name for s in sols}
    if ref is not None and ref not in snames:
        raise ConfigError(
            f"report.reference: unknown solver {ref!r}; declared: {_declared(snames)}"
        )
    prim = rr.get("primary", "table", {})
    known_metrics = set(metrics.image) | set(metrics.set)
    for k, v in prim.items():
        if k not in tnames:
            raise ConfigError(
                f"report.primary.{_k(k)}: unknown task {k!r}; declared: {_declared(tnames)}"
            )
        if not isinstance(v, str) or v not in known_metrics:
            raise ConfigError(
                f"report.primary.{_k(k)}: expected one of the configured metrics "
                f"({_declared(known_metrics)}), got {v!r}"
            )
    rimages = rr.get("images", "list_str", None)
    zoom = check_zoom(rr.t["zoom"], rr.p("zoom")) if "zoom" in rr.t else None
    rr.used.add("zoom")
    mnfe = None
    if "matched_nfe" in rr.t:
        mnfe = check_nfe_budgets(rr.t["matched_nfe"], rr.p("matched_nfe"))
    rr.used.add("matched_nfe")
    rr.finish()
    return ReportSpec(ref, dict(prim), rimages, zoom, mnfe)


def _resolved_sections(s: dict) -> dict:
    """The list sections of the resolved config (the specs as plain data, defaults filled)."""

    def opt(key, value, keep):
        return {key: value} if keep else {}

    return {
        "datasets": [
            {
                "name": d.name,
                "type": d.type,
                **opt("limit", d.limit, d.limit is not None),
                **d.fields,
            }
            for d in s["datasets"]
        ],
        "priors": [
            {
                "name": p.name,
                "label": p.label,
                **opt("checkpoint", p.checkpoint, p.checkpoint),
                **opt("datasets", list(p.datasets or ()), p.datasets is not None),
                "options": p.options,
            }
            for p in s["priors"]
        ],
        "tasks": [
            {
                "name": t.name,
                "operator": t.operator,
                "noise_sigma": t.noise_sigma,
                "params": t.params,
            }
            for t in s["tasks"]
        ],
        "solvers": [
            {
                "name": v.name,
                "preset": v.preset,
                "label": v.label,
                "overrides": v.overrides,
                "task_presets": v.task_presets,
                **opt("tasks", list(v.tasks or ()), v.tasks is not None),
                **opt("priors", list(v.priors or ()), v.priors is not None),
                "resources": v.resources,
            }
            for v in s["solvers"]
        ],
    }


def _resolved(sc: dict, s: dict) -> dict:
    """The normalised config: every default filled, in the order the store's meta records it."""
    m, e, report = s["metrics"], s["execution"], s["report"]
    head = {k: sc[k] for k in ("name", "description", "protocol")}
    return {
        **head,
        "seeds": list(sc["seeds"]),
        **{k: sc[k] for k in ("batch_size", "device", "dtype", "save_npy", "warmup")},
        **({"data_seed": sc["data_seed"]} if sc["data_seed"] is not None else {}),
        **({"timing_repeats": sc["timing_repeats"]} if sc["timing_repeats"] != 1 else {}),
        **_resolved_sections(s),
        "metrics": {"image": list(m.image), "set": list(m.set), **m.options},
        "execution": {
            "shards": e.shards,
            **({"folder": e.folder} if e.folder else {}),
            "resources": e.resources,
        },
        **({"report": report.as_dict()} if report.as_dict() else {}),
    }


def parse(raw: dict, base_dir: Path | str = ".") -> Experiment:
    """Validate a parsed TOML document and return the :class:`Experiment`.

    Only the schema is checked here (keys, types, ranges, cross references between sections);
    registry names and files are checked by :func:`invbench.bench.run.prepare`.
    """
    base = Path(base_dir)
    r = _Reader(raw, "")
    sc = _scalars(r)
    s: dict = {"datasets": _datasets(r, base)}
    s["priors"] = _priors(r, base, {d.name for d in s["datasets"]})
    s["tasks"] = _tasks(r)
    tnames = {t.name for t in s["tasks"]}
    s["solvers"] = _solvers(r, tnames, {p.label for p in s["priors"]}, base)
    s["metrics"] = _metrics(r, base)
    s["execution"] = _execution(r)
    s["report"] = _report(r, s["solvers"], tnames, s["metrics"])
    r.finish()
    resolved = _resolved(sc, s)
    exp = Experiment(
        name=sc["name"],
        description=sc["description"],
        seeds=tuple(sc["seeds"]),
        batch_size=sc["batch_size"],
        device=sc["device"],
        dtype=sc["dtype"],
        save_npy=sc["save_npy"],
        warmup=sc["warmup"],
        data_seed=sc["data_seed"],
        datasets=tuple(s["datasets"]),
        priors=tuple(s["priors"]),
        tasks=tuple(s["tasks"]),
        solvers=tuple(s["solvers"]),
        metrics=s["metrics"],
        execution=s["execution"],
        protocol=sc["protocol"],
        resolved=resolved,
        base_dir=str(base.resolve()),
        timing_repeats=sc["timing_repeats"],
        report=s["report"],
    )
    object.__setattr__(exp, "config_hash", config_hash(resolved))
    return exp


def _resources(d: dict, path: str) -> dict:
    for k, v in d.items():
        if k not in RESOURCE_KEYS:
            raise ConfigError(f"{path}.{_k(k)}: unknown key; valid: {', '.join(RESOURCE_KEYS)}")
        if k in STRING_RESOURCE_KEYS:
            if (
                not isinstance(v, str)
                or not v
                or any(c.isspace() or not c.isprintable() for c in v)
            ):
                raise ConfigError(f"{path}.{k}: expected a non-empty string without spaces")
        elif isinstance(v, bool) or not isinstance(v, int) or v < int(k == "array_parallelism"):
            raise ConfigError(f"{path}.{k}: expected an integer >= {int(k == 'array_parallelism')}")
    return dict(d)


def config_hash(resolved: dict) -> str:
    """sha256 (hex, first 16 chars) of the canonical JSON of the result-affecting config."""
    d = {k: v for k, v in resolved.items() if k not in HASH_EXCLUDED}
    d["solvers"] = [{k: v for k, v in s.items() if k != "resources"} for s in d["solvers"]]
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
