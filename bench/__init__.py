"""Benchmark harness: experiment files, datasets, metrics, cost meters, store, runner, CLI.

Public names (imported lazily so ``import invbench.bench`` stays fast): :func:`load_results`,
:func:`load_set_metrics`, :func:`load_meta`, :func:`load_metric_status` (from
:mod:`invbench.bench.store`), :func:`load_config` (:func:`invbench.bench.config.load`), :func:`run_config`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_config", "load_meta", "load_metric_status", "load_results", "load_set_metrics", "run_config"]

_LAZY = {
    "load_results": ("invbench.bench.store", "load_results"),
    "load_set_metrics": ("invbench.bench.store", "load_set_metrics"),
    "load_meta": ("invbench.bench.store", "load_meta"),
    "load_metric_status": ("invbench.bench.store", "load_metric_status"),
    "load_config": ("invbench.bench.config", "load"),
}


def run_config(config_path, out, *, resume: bool = False, sets: list[str] | None = None, progress: bool = False):
    """Load, validate and run an experiment file locally into ``out``; returns the run summary."""
    from . import config, executors

    exp = config.load(config_path, sets)
    return executors.run_local(exp, out, resume=resume, progress=progress)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'invbench.bench' has no attribute {name!r}")
