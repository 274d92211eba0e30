"""What a run records about itself when it starts: the ``meta`` table (config, versions, machine,
units, seeding, input hashes, load), the ``metric_status`` table and the ground truth PNGs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from .. import cost
from ..runfiles import write_png
from ..store import Store
from . import paths as run_paths

__all__ = ["UNITS", "code_version", "env_info", "loadavg", "write_start"]

UNITS = "pixel [0,1]; noise_sigma pixel units; sigma_y = 2 noise_sigma (model units, [-1,1] images)"



OPERATOR_HASHING = "state-v2"
"""Meta ``operator_hashing``: operators' input hashes are of their declared ``state()`` in the
prefix-free encoding of :func:`invbench.bench.input_hashes.state_sha256`. Runs started before it
hashed operator attributes (no such meta) or encoded states without framing (``"state"``); a
resume of such a run says so (not "inputs changed")."""

def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, or ``'unknown'``."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        v = out.stdout.strip()
        return v if out.returncode == 0 and v else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def env_info(device: torch.device) -> dict:
    """Device, versions and machine facts recorded with every row and in ``meta``."""
    return {
        "device": cost.device_name(device),
        "torch_version": cost.torch_version(),
        "code_version": code_version(),
        **cost.machine_info(device),
    }


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages of the machine (``""`` where unknown), for timings."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return ""


def write_start(
    p, store: Store, run_dir: Path, env: dict, rss_reset: bool, keep_truth: bool
) -> None:
    """Record the run's metadata and metric status of :class:`~invbench.bench.run.Prepared` ``p``,
    and write ``truth/`` (kept on resume, where the input hashes guarantee the same images;
    rewritten by a new run)."""
    store.set_meta(_meta(p, env, rss_reset))
    rows = []
    for m in [*p.metrics, *p.set_metrics]:
        st = m.status()
        cols = getattr(m, "columns", ()) or (m.name,)
        for c in cols:
            rows.append((c, st["available"], st["note"], st["backbone"]))
    store.set_metric_status(rows)
    for name, ds in p.datasets.items():
        for i, iid in enumerate(ds.ids):
            f = run_dir / run_paths.truth_rel(name, iid)
            if not (keep_truth and f.exists()):
                write_png(f, p.image(name, i).to(torch.float64))


def _meta(p, env: dict, rss_reset: bool) -> dict[str, str]:
    exp = p.exp
    return {
        "experiment": exp.name,
        "config": exp.toml_text(),
        "config_hash": exp.config_hash,
        "code_version": env["code_version"],
        "torch_version": env["torch_version"],
        "device": env["device"],
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "units": UNITS,
        "protocol": exp.protocol,
        "description": exp.description,
        "schema_version": "1",
        "numpy_version": np.__version__,
        "batch_size": str(exp.batch_size),
        "warmup": str(exp.warmup),
        "rss_peak_reset_per_cell": str(bool(rss_reset)),
        # CPU float rounding of convolutions depends on the thread count and the kernel family
        # (cpu_capability): bitwise reruns need the same of both
        **{
            k: env[k]
            for k in ("cpu_model", "cpu_capability", "gpu_name", "torch_threads", "cpu_count")
        },
        "timing_repeats": str(exp.timing_repeats),
        # rows of the whole grid: compare tells a finished run from a killed or running one
        "grid_rows": str(sum(len(p.datasets[c.dataset].ids) for c in p.cells) * len(exp.seeds)),
        "seeding": "operator/noise/solver generators seeded by "
        "sha256(seed, kind, task, dataset, image_id)",
        "batching": "images batched only while their operators are identical",
        "datasets": repr({k: v.source() for k, v in p.datasets.items()}),
        "input_hashes": json.dumps(p.input_hashes, sort_keys=True),
        "operator_hashing": OPERATOR_HASHING,
        "created": str(time.time()),
        "load_avg_start": loadavg(),
    }
