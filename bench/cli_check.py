"""``invbench check``: the files a benchmark needs and whether they are there: checkpoints, metric
weights and data named by an experiment file, the committed small-prior weights, the torch hub
cache, the downloadable weights of :data:`invbench.assets.weights.TABLE`, and each metric's
availability. Registered by :mod:`.cli`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _candidate_files(cfg_path: str | None) -> list[tuple[str, Path]]:
    """(what, path) pairs to check: checkpoints and metric weights named by a config, the
    committed small-prior weights, and files in the torch hub checkpoint cache."""
    out: list[tuple[str, Path]] = []
    if cfg_path:
        from . import config

        exp = config.load(cfg_path)
        for i, p in enumerate(exp.priors):
            if p.checkpoint:
                out.append((f"priors[{i}] {p.name} checkpoint", Path(p.checkpoint)))
        for m, opts in exp.metrics.options.items():
            for k, v in opts.items():
                if isinstance(v, str) and ("/" in v or v.endswith((".pt", ".pth", ".pkl"))):
                    out.append((f"metrics.{m}.{k}", Path(v)))
        for i, d in enumerate(exp.datasets):
            for k in ("root", "manifest"):
                if isinstance(d.fields.get(k), str):
                    out.append((f"datasets[{i}] {d.name} {k}", Path(d.fields[k])))
    pdata = Path(__file__).resolve().parents[1] / "priors" / "data"
    if pdata.is_dir():
        for f in sorted(pdata.iterdir()):
            if f.is_file():
                out.append(("small prior weights", f))
    try:
        import torch.hub

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        if hub.is_dir():
            for f in sorted(hub.iterdir()):
                if f.is_file():
                    out.append(("torch hub cache (metric weights)", f))
    except Exception:  # noqa: BLE001, S110 - a cache directory we cannot list is simply not reported
        pass
    return out


def cmd_check(args) -> int:
    """``invbench check``: which checkpoints, metric weights and data files are present (with
    their sha256), which downloadable weights are verified, which metrics are available; exit 1
    when a file the ``--config`` names is missing."""
    from .cli import EXIT_FAIL, EXIT_OK

    rows = [_file_row(what, path) for what, path in _candidate_files(args.config)]
    weight_rows = _weight_rows()
    metric_rows = _metric_rows()
    if args.json:
        print(json.dumps({"files": rows, "weights": weight_rows, "metrics": metric_rows}, indent=2))
    else:
        _print_check(rows, weight_rows, metric_rows)
    missing = [r for r in rows if not r["present"]]
    return EXIT_FAIL if (args.config and missing) else EXIT_OK


def _file_row(what: str, path: Path) -> dict:
    """A file (its size and sha256), a folder, or a missing path."""
    if path.is_file():
        return {"what": what, "path": str(path), "present": True,
                "bytes": path.stat().st_size, "sha256": _sha256(path)}
    if path.is_dir():
        return {"what": what, "path": str(path), "present": True, "bytes": None,
                "sha256": "(directory)"}
    return {"what": what, "path": str(path), "present": False, "bytes": None, "sha256": None}


def _metric_rows() -> list[dict]:
    """Each metric's availability, note and backbone (one row saying why, when they cannot be
    built)."""
    out: list[dict] = []
    try:
        from . import metrics

        built = (metrics.build(list(metrics.names()), {})
                 + metrics.build_set(list(metrics.set_names()), {}))
        for m in built:
            st = m.status()
            out.append({"metric": m.name, "available": bool(st["available"]), "note": st["note"],
                        "backbone": st["backbone"]})
    except Exception as e:  # noqa: BLE001 - check reports, never fails on a metric
        out.append({"metric": "*", "available": False, "note": f"cannot build metrics: {e}",
                    "backbone": ""})
    return out


def _print_check(rows: list[dict], weight_rows: list[dict], metric_rows: list[dict]) -> None:
    for r in rows:
        state = f"present  sha256 {r['sha256']}" if r["present"] else "MISSING"
        print(f"{r['what']}: {r['path']}: {state}")
    for r in weight_rows:
        if r["present"]:
            state = ("verified" if r["verified"] else "UNVERIFIED") + f" ({r['how']})"
            state += "" if r["verified"] else f"; to replace it: invbench fetch {r['name']}"
        else:
            state = f"MISSING; {r['fix']}"
        print(f"weights {r['name']}: {r['path']}: {state}")
    for r in metric_rows:
        state = "available" if r["available"] else r["note"]
        print(f"metric {r['metric']}: {state}" + (f" [{r['backbone']}]" if r["backbone"] else ""))


def _weight_rows() -> list[dict]:
    """One row per downloadable file (invbench.assets.weights.TABLE) in the weights folder."""
    from invbench.assets import weights

    out = []
    for name in weights.TABLE:
        loc = weights.locate(name)
        out.append(
            {
                "name": name,
                "path": str(loc.path),
                "present": loc.present,
                "verified": loc.verified,
                "sha256": loc.sha256,
                "how": loc.how,
                "fix": weights.fetch_hint(name),
            }
        )
    return out
