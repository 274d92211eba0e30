"""Build and validate every part of an experiment before anything is written.

:func:`prepare` checks, in this order (cheap first): the output folder, the device, metric names
and options, solver names, presets and hyperparameters, operator names, priors (checkpoints
loaded), datasets (every image read and checked for shape, NaN/Inf and range), prior/dataset
shapes, operator parameters for each dataset shape, each solver against each prior it meets, file
names and the grid's cost. Any bad input raises :class:`invbench.bench.config.ConfigError` (one
line naming the key path or file) and no RUN_DIR is created. It also records the content hash of
every input (:mod:`invbench.bench.input_hashes`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import input_hashes
from ..config import ConfigError, Experiment
from ..cost.netclock import ClockedPrior
from ..grid import Cell, expand, resolve_preset
from ..problem import generator
from .checks import (
    INPUT_ERRORS,
    LARGE_NFE,
    check_name_lengths,
    check_out_dir,
    check_pairs,
    cost_estimate,
    nfe_per_image,
    one_line,
)

__all__ = ["Prepared", "prepare"]


@dataclass
class DatasetView:
    """A dataset limited to its first ``len(ids)`` images."""

    ds: Any
    ids: list[str]
    image_shape: tuple[int, ...]

    def get(self, i: int):
        return self.ds.get(i)

    def source(self) -> dict:
        try:
            return dict(self.ds.source())
        except Exception:  # noqa: BLE001 - a record, never fatal
            return {}


@dataclass
class Prepared:
    """Everything built and validated from an :class:`Experiment`."""

    exp: Experiment
    datasets: dict[str, Any]  # name -> DatasetView
    images: dict[str, list]  # name -> list of (C,H,W) pixel tensors (None: read lazily)
    priors: dict[str, Any]  # label -> priors.CountingPrior
    solvers: dict[tuple[str, str], Any]  # (label, preset) -> Solver
    cells: list[Cell]
    metrics: list  # per-image metrics
    set_metrics: list
    device: torch.device
    dtype: torch.dtype
    warnings: list[str] = field(default_factory=list)
    input_hashes: dict[str, str] = field(default_factory=dict)  # bench.input_hashes keys -> sha256
    nfe_estimate: float = 0.0  # network evaluations of the grid (estimate)

    def image(self, dataset: str, i: int) -> torch.Tensor:
        cached = self.images[dataset][i]
        return cached if cached is not None else torch.as_tensor(self.datasets[dataset].get(i))


def prepare(
    exp: Experiment,
    run_dir: str | Path | None = None,
    resume: bool = False,
    *,
    allow_nonempty: bool = False,
    allow_large_cost: bool = False,
) -> Prepared:
    """Build and validate every part of ``exp`` (see the module doc); writes nothing."""
    if run_dir is not None:
        check_out_dir(Path(run_dir), resume, allow_nonempty)
    device, dtype = _device(exp)
    metrics, set_metrics = _metrics(exp)
    built_solvers = _solvers(exp)
    _check_operator_names(exp)
    hashes: dict[str, str] = {}
    built_priors = _priors(exp, hashes)
    built_ds, images = _datasets(exp, hashes)
    _check_prior_shapes(exp, built_priors, built_ds)
    _operator_hashes(exp, sorted({v.image_shape for v in built_ds.values()}), hashes)
    sizes = {k: len(v.ids) for k, v in built_ds.items()}
    cells = expand(
        exp,
        dataset_shapes={k: v.image_shape for k, v in built_ds.items()},
        dataset_sizes=sizes,
        prior_shapes={k: tuple(v.image_shape) for k, v in built_priors.items()},
        prior_analytic={k: "analytic" in v.capabilities for k, v in built_priors.items()},
        solver_cost={k: nfe_per_image(v) for k, v in built_solvers.items()},
    )
    _metric_file_hashes(exp, hashes)
    check_pairs(exp, cells, built_solvers, built_priors)
    check_name_lengths(exp, cells, {k: v.ids for k, v in built_ds.items()})
    nfe = cost_estimate(exp, cells, built_solvers, sizes)
    if nfe > LARGE_NFE and not allow_large_cost:
        raise ConfigError(
            f"cost estimate: about {nfe:.3g} network evaluations (NFE x images x seeds over "
            f"{len(cells)} cells) exceeds {LARGE_NFE:.0e}; check solver steps/levels, or pass "
            "--allow-large-cost to run it"
        )
    for pr in built_priors.values():
        pr.to(device=device, dtype=dtype)
    return Prepared(
        exp,
        built_ds,
        images,
        built_priors,
        built_solvers,
        cells,
        metrics,
        set_metrics,
        device,
        dtype,
        input_hashes=hashes,
        nfe_estimate=nfe,
    )


def _device(exp: Experiment) -> tuple[torch.device, torch.dtype]:
    device = torch.device(exp.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {exp.device!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {exp.device!r} does not exist ({torch.cuda.device_count()} GPU(s))"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: 'mps' requested but not available")
    return device, torch.float64 if exp.dtype == "float64" else torch.float32


def _metrics(exp: Experiment) -> tuple[list, list]:
    from .. import metrics as bmetrics

    mopts = dict(exp.metrics.options)
    known = set(bmetrics.names()) | set(bmetrics.set_names())
    for k in mopts:
        if k not in known:
            raise ConfigError(
                f"metrics.{k}: unknown key (not a metric name; metrics: {', '.join(sorted(known))})"
            )
    try:
        metrics = bmetrics.build(list(exp.metrics.image), mopts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"metrics.image: {one_line(e)}") from None
    try:
        set_metrics = bmetrics.build_set(list(exp.metrics.set), mopts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"metrics.set: {one_line(e)}") from None
    for m in [*metrics, *set_metrics]:  # an option table for a metric that takes no options
        opts = mopts.get(m.name)
        if opts and not inspect.signature(type(m)).parameters:
            raise ConfigError(
                f"metrics.{m.name}: metric {m.name!r} takes no options (got "
                f"{', '.join(sorted(map(str, opts)))})"
            )
    return metrics, set_metrics


def _solvers(exp: Experiment) -> dict[tuple[str, str], Any]:
    """Solver names, presets and overrides, checked before the expensive parts."""
    from invbench import solvers

    for i, s in enumerate(exp.solvers):
        try:
            solvers.get(s.name)
        except solvers.SolverError as e:
            raise ConfigError(f"solvers[{i}].name: {e}") from None
    built: dict[tuple[str, str], Any] = {}
    for i, s in enumerate(exp.solvers):
        for t in exp.tasks:
            if s.tasks is not None and t.name not in s.tasks:
                continue
            preset = resolve_preset(s, t, i)
            if (i, preset) not in built:
                built[(i, preset)] = _build_solver(i, s, preset)
    return built


def _build_solver(i: int, s, preset: str):
    from invbench.solvers.base import ParamTypeError

    from invbench import solvers

    try:
        return solvers.build(s.name, preset=preset, **s.overrides)
    except ParamTypeError as e:
        where = f"overrides.{e.field}" if e.field in s.overrides else f"preset {preset!r}"
        raise ConfigError(f"solvers[{i}].{where}: {e}") from None
    except solvers.SolverError as e:
        raise ConfigError(f"solvers[{i}]: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"solvers[{i}].overrides: {one_line(e)}") from None


def _check_operator_names(exp: Experiment) -> None:
    """Operator names first (cheap); their parameters per dataset shape in
    :func:`_operator_hashes`."""
    from invbench import operators

    for i, t in enumerate(exp.tasks):
        if t.operator not in operators.PRESETS:
            raise ConfigError(
                f"tasks[{i}].operator: unknown operator preset {t.operator!r}; valid: "
                f"{', '.join(operators.PRESETS)}"
            )


def _priors(exp: Experiment, hashes: dict[str, str]) -> dict[str, Any]:
    """Every prior built (checkpoints loaded), wrapped to count NFE/VJP and clock network time."""
    from invbench import priors

    built: dict[str, Any] = {}
    for i, p in enumerate(exp.priors):
        if p.checkpoint is not None:
            ck = Path(p.checkpoint)
            if not ck.exists():
                raise ConfigError(f"priors[{i}].checkpoint: file not found: {p.checkpoint}")
            if not ck.is_file():
                kind = "a directory" if ck.is_dir() else "a device, pipe or socket"
                raise ConfigError(
                    f"priors[{i}].checkpoint: {p.checkpoint} is {kind}, not a regular file of "
                    "weights"
                )
        try:
            prior = priors.build(p.name, **p.build_kwargs())
        except INPUT_ERRORS as e:
            raise ConfigError(f"priors[{i}] ({p.name}): {one_line(e)}") from None
        try:
            hashes.update(input_hashes.prior_hashes(p.label, p.name, prior, p.checkpoint))
        except OSError as e:
            raise ConfigError(
                f"priors[{i}].checkpoint: cannot read {p.checkpoint} ({e.strerror or e})"
            ) from None
        built[p.label] = ClockedPrior(prior)
    return built


def _datasets(
    exp: Experiment, hashes: dict[str, str]
) -> tuple[dict[str, DatasetView], dict[str, list]]:
    """Every dataset built and every image read and checked."""
    try:
        from .. import datasets as bdatasets
    except ImportError as e:  # pragma: no cover - part not installed
        raise ConfigError(f"invbench.bench.datasets is not available ({e})") from None
    views: dict[str, DatasetView] = {}
    images: dict[str, list] = {}
    for i, d in enumerate(exp.datasets):
        try:
            ds = bdatasets.build(d.build_spec(), Path(exp.base_dir))
        except INPUT_ERRORS as e:
            raise ConfigError(f"datasets[{i}] ({d.name}): {one_line(e)}") from None
        n = len(ds)
        if n == 0:
            raise ConfigError(f"datasets[{i}] ({d.name}): no images")
        if d.limit is not None and n > d.limit:
            n = d.limit
        ids = [str(x) for x in list(ds.ids)[:n]]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"datasets[{i}] ({d.name}): duplicate image ids")
        view = DatasetView(ds, ids, tuple(int(s) for s in ds.image_shape))
        images[d.name] = _read_images(f"datasets[{i}] ({d.name})", d.name, view, hashes)
        src = view.source()
        for what in ("manifest", "list"):
            if src.get(f"{what}_sha256"):
                hashes[f"datasets.{d.name}.{what}"] = str(src[f"{what}_sha256"])
        views[d.name] = view
    return views, images


def _read_images(where: str, name: str, view: DatasetView, hashes: dict[str, str]) -> list:
    """Read and check every image of ``view`` (kept in memory when the dataset is small)."""
    shape, ids = view.image_shape, view.ids
    synthetic = bool(getattr(view.ds, "synthetic", False))
    keep = len(ids) * math.prod(shape) <= 50_000_000
    imgs = []
    pix = input_hashes.pixels_hasher()
    for j, iid in enumerate(ids):
        try:
            x = torch.as_tensor(view.ds.get(j))
        except INPUT_ERRORS as e:
            raise ConfigError(f"{where} image {iid!r}: {one_line(e)}") from None
        if tuple(x.shape) != shape:
            raise ConfigError(
                f"{where} image {iid!r}: shape {tuple(x.shape)} != dataset image shape {shape} "
                "(channels/size)"
            )
        if not torch.isfinite(x).all():
            raise ConfigError(f"{where} image {iid!r}: contains NaN/Inf")
        if not synthetic and (x.min() < 0 or x.max() > 1):
            raise ConfigError(f"{where} image {iid!r}: values outside [0, 1]")
        pix.add(iid, x)
        imgs.append(x if keep else None)
    hashes[f"datasets.{name}.images"] = pix.hexdigest()
    return imgs


def _check_prior_shapes(
    exp: Experiment, built_priors: dict, built_ds: dict[str, DatasetView]
) -> None:
    for i, p in enumerate(exp.priors):
        pshape = tuple(int(s) for s in built_priors[p.label].image_shape)
        for j, dn in enumerate(p.datasets or ()):
            dshape = built_ds[dn].image_shape
            if dshape != pshape:
                raise ConfigError(
                    f"priors[{i}].datasets[{j}]: prior {p.name} expects images {pshape} but "
                    f"dataset {dn!r} has {dshape} (channels/size mismatch)"
                )


def _operator_hashes(
    exp: Experiment, shapes: list[tuple[int, ...]], hashes: dict[str, str]
) -> None:
    """Each task's operator built for each dataset shape (its parameters checked) and the hash of
    its declared state recorded."""
    from invbench import operators

    for i, t in enumerate(exp.tasks):
        for shp in shapes:
            try:
                op0 = operators.build(
                    t.operator, image_shape=shp, generator=generator(0), **t.params
                )
                hashes[f"tasks.{t.name}.operator{list(shp)}"] = input_hashes.operator_sha256(op0)
            except INPUT_ERRORS as e:
                raise ConfigError(
                    f"tasks[{i}] ({t.name}): {one_line(e)} (image shape {shp})"
                ) from None


def _metric_file_hashes(exp: Experiment, hashes: dict[str, str]) -> None:
    """Hashes of the weights files named by metric options."""
    for m, opts in exp.metrics.options.items():
        for k, v in opts.items():
            if isinstance(v, str) and Path(v).is_file():
                hashes[f"metrics.{m}.{k}"] = input_hashes.file_sha256(v)
