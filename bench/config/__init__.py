"""Experiment files (TOML): schema, validation naming the key path, ``--set`` overrides, hash.

An experiment file declares datasets, priors, tasks, solvers and metrics; the grid of cells is
their product (see :mod:`invbench.bench.grid`). Every key is documented in
``docs/harness.md``. Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` whose message names the key path (e.g. ``solvers[2].preset_x``). Configs
are data: nothing in them is evaluated or used to import code; names are looked up in the
registries of ``operators``, ``priors`` and ``solvers``.

The package: :mod:`.spec` (the specs and :class:`Experiment`), :mod:`.reader` (typed reading of
one table), :mod:`.schema` (one parser per section, the resolved config, the hash), :mod:`.files`
(files, ``--set``), :mod:`.writer` (TOML text). ``invbench.bench.config`` exports the public names.

Units: ``noise_sigma`` is in pixel units ([0, 1] images); ``sigma_y = 2 * noise_sigma`` in model
units (:mod:`invbench.operators.conventions`).
"""

from __future__ import annotations

from .files import apply_sets, load, loads, parse_set
from .schema import HASH_EXCLUDED, config_hash, parse
from .spec import (
    CONFIG_MAX_BYTES,
    INT64_MAX,
    MAX_WARMUP,
    NAME_MAX_BYTES,
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
    preset_provenance,
)
from .writer import to_toml

__all__ = [
    "CONFIG_MAX_BYTES",
    "HASH_EXCLUDED",
    "INT64_MAX",
    "MAX_WARMUP",
    "NAME_MAX_BYTES",
    "RESOURCE_KEYS",
    "STRING_RESOURCE_KEYS",
    "ConfigError",
    "DatasetSpec",
    "ExecutionSpec",
    "Experiment",
    "MetricsSpec",
    "PriorSpec",
    "ReportSpec",
    "SolverSpec",
    "TaskSpec",
    "apply_sets",
    "check_nfe_budgets",
    "check_zoom",
    "config_hash",
    "load",
    "load_tuned",
    "loads",
    "parse",
    "parse_set",
    "preset_provenance",
    "to_toml",
]
