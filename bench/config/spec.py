"""The validated experiment: the spec of each config section, :class:`Experiment`, the limits on
names and files, and the checks shared with the command line (zoom, NFE budgets, tuned presets)."""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .writer import to_toml

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")
_PATHLIKE = re.compile(r"(weights|path|file|dir|inception|checkpoint)")
RESOURCE_KEYS = (
    "timeout_min",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "partition",
    "account",
    "qos",
    "constraint",
    "gres",
    "array_parallelism",
)
STRING_RESOURCE_KEYS = ("partition", "account", "qos", "constraint", "gres")
"""Resource keys whose values are strings (Slurm names: ``--partition``, ``--account``, ...);
the others are integers >= 0 (``array_parallelism`` >= 1: most tasks of a shard array running at
once)."""
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
    provenance: str = (
        ""  # TUNED_HERE + " (...)" for a ``tuned:PATH`` preset; "" = from the preset name
    )


#: how the provenance of a preset tuned by ``invbench tune`` begins (the report finds tuned
#: presets by it: :func:`invbench.bench.report.main_table` names them under their table)
TUNED_HERE = "tuned-here"


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
            raise ConfigError(
                f"{where}: {path} was tuned for solver {doc['solver']!r}, not {solver!r}"
            )
        b = doc.get("budget", {})
        budget = ", ".join(f"{k} {v:g}" for k, v in b.items())
        prov = f"{TUNED_HERE} ({budget}; {doc['split']} split)"
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(
            f"{where}: {path} is not a tuned preset file ({type(e).__name__}: {e})"
        ) from None
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
        return {
            **({"reference": self.reference} if self.reference else {}),
            **({"primary": dict(self.primary)} if self.primary else {}),
            **({"images": list(self.images)} if self.images is not None else {}),
            **({"zoom": list(self.zoom)} if self.zoom is not None else {}),
            **({"matched_nfe": list(self.matched_nfe)} if self.matched_nfe is not None else {}),
        }


def check_zoom(v: Any, path: str) -> tuple[float, float, float]:
    """``[x, y, size]`` of a zoomed inset, fractions of the image side; raises
    :class:`ConfigError`."""
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 3
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    ):
        raise ConfigError(
            f"{path}: expected [x, y, size], three numbers in [0, 1] (fractions of the image side)"
        )
    x, y, size = (float(t) for t in v)
    if not (
        0 <= x < 1
        and 0 <= y < 1
        and 0 < size <= 1
        and x + size <= 1 + 1e-9
        and y + size <= 1 + 1e-9
    ):
        raise ConfigError(
            f"{path}: [x, y, size] = [{x}, {y}, {size}] must satisfy 0 <= x, y < 1, 0 < size, "
            "x + size <= 1 and y + size <= 1 (fractions of the image side)"
        )
    return x, y, size


def check_nfe_budgets(v: Any, path: str) -> tuple[float, ...]:
    """A non-empty array of positive numbers (network evaluations per image)."""
    if (
        not isinstance(v, (list, tuple))
        or not v
        or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in v
        )
    ):
        raise ConfigError(
            f"{path}: expected a non-empty array of positive numbers "
            "(network evaluations per image)"
        )
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
    resolved: dict = field(repr=False)  # the normalised config (all defaults filled)
    base_dir: str = "."  # folder relative paths are resolved against
    timing_repeats: int = 1  # timed solves per batch (1 stored + repeats for statistics)
    config_hash: str = ""
    report: ReportSpec = field(default_factory=ReportSpec)

    def toml_text(self) -> str:
        """The resolved config as TOML text (recorded in the store's meta)."""
        return to_toml(self.resolved)

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)
