"""Runner: validate an experiment, expand its grid, run every cell, store rows and files.

Order of work
1. :func:`prepare` validates *everything* before anything is written: registry names, solver
   presets and hyperparameters, operator parameters for each dataset shape, priors (checkpoints
   loaded), datasets (every image read and checked for shape, NaN/Inf and range), prior/dataset
   shapes, metric names/options, the device and the output folder. Any bad input raises
   :class:`invbench.bench.config.ConfigError` (one line naming the key path or file) and no RUN_DIR is
   created.
2. :func:`run` creates RUN_DIR, takes an exclusive lock (a second run on the same RUN_DIR is
   refused), writes ``meta``/``metric_status``/ground-truth PNGs, then runs the cells cheapest
   first. For each (cell, image, seed) row:

   * ``operator_seed = derive_seed(seed, "operator", task, dataset, image_id)`` builds the
     operator (masks, box positions, kernels differ per image and are re-derivable);
   * ``noise_seed = derive_seed(seed, "noise", task, dataset, image_id)`` draws the measurement
     noise ``y = A(x) + sigma_y n``; the same measurement is shared by every solver and prior;
   * ``solver_seed = derive_seed(seed, "solver", task, dataset, image_id)`` seeds the generator
     handed to the solver (one generator per image, so results do not depend on batching).

   Images are batched (up to ``batch_size``) only while consecutive images have an *identical*
   operator (all tensors and parameters equal): deterministic tasks (SR, deblur with a fixed
   kernel, colorization) batch fully, per-image random masks/kernels run one image per call.
3. Failure isolation: ``SolverSkip`` -> ``skipped`` (the rest of the cell is skipped with the
   same reason), ``SolverDiverged`` or a non-finite reconstruction -> ``diverged``,
   ``torch.OutOfMemoryError`` -> ``oom``, any other exception -> ``error`` with a one-line
   message; the grid goes on.
4. A row is committed after its files (recon PNG, optional .npy, measurement PNG) exist.
   ``--resume`` skips rows whose ``row_id`` is already ``ok``/``skipped`` and redoes the rest.
5. After the grid, set metrics (FID, sliced Wasserstein) are computed per cell from the stored
   reconstructions.

Timing: the timed region is the ``solver.solve`` call only (CUDA synchronised); ``seconds`` per
image = batch time / batch size. ``nfe``/``vjp`` are the network evaluations / VJPs each image of
the batch received (a batched network call counts once). ``warmup = k`` runs each cell's first
image k times before timing (results discarded, counters reset). ``net_seconds`` = seconds inside
the network during that solve / batch size (:class:`invbench.bench.cost.netclock.ClockedPrior`);
``timings`` = JSON of that solve and of ``timing_repeats - 1`` repeated solves of the same batch
(:func:`_timing_json`). At the start of a run the device is calibrated
(:mod:`invbench.bench.cost.calibration`, meta ``calibration``).
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from invbench.operators.base import same_operator

from . import cost, fsafety, input_hashes, run_paths
from .config import ConfigError, Experiment, preset_provenance
from .cost import calibration
from .cost.netclock import ClockedPrior
from .grid import Cell, expand, resolve_preset, steps_hint
from .problem import derive_seed
from .problem import generator as _gen
from .store import STORE_NAME, Store, StoreError, read_png, row_id, write_npy, write_png

__all__ = [
    "UNITS",
    "Prepared",
    "RunError",
    "check_out_dir",
    "code_version",
    "compute_set_metrics",
    "derive_seed",
    "prepare",
    "run",
]

UNITS = "pixel [0,1]; noise_sigma pixel units; sigma_y = 2 noise_sigma (model units, [-1,1] images)"


class RunError(RuntimeError):
    """The run cannot proceed (RUN_DIR locked, config changed under --resume, ...); one line."""


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, or ``'unknown'``."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10, check=False)
        v = out.stdout.strip()
        return v if out.returncode == 0 and v else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- prepare


@dataclass
class Prepared:
    """Everything built and validated from an :class:`Experiment`."""

    exp: Experiment
    datasets: dict[str, Any]              # name -> invbench.bench.datasets.Dataset
    images: dict[str, list]               # name -> list of (C,H,W) pixel tensors (None: read lazily)
    priors: dict[str, Any]                # label -> priors.CountingPrior
    solvers: dict[tuple[str, str], Any]   # (label, preset) -> Solver
    cells: list[Cell]
    metrics: list                         # per-image metrics
    set_metrics: list
    device: torch.device
    dtype: torch.dtype
    warnings: list[str] = field(default_factory=list)
    input_hashes: dict[str, str] = field(default_factory=dict)   # bench.input_hashes keys -> sha256
    nfe_estimate: float = 0.0                                    # network evaluations of the grid (estimate)

    def image(self, dataset: str, i: int) -> torch.Tensor:
        cached = self.images[dataset][i]
        return cached if cached is not None else torch.as_tensor(self.datasets[dataset].get(i))


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


_INPUT_ERRORS = (ValueError, OSError, KeyError, TypeError, RuntimeError, ImportError)


def check_out_dir(run_dir: Path, resume: bool, allow_nonempty: bool = False) -> None:
    """Raise ConfigError unless ``run_dir`` can be created/written (creates nothing that stays).

    A folder that holds files a run does not create and no results store is refused unless
    ``allow_nonempty`` (``--allow-nonempty-out``): a run never mixes its files with a user's.
    """
    run_dir = Path(run_dir)
    long = [c for c in run_dir.parts if len(os.fsencode(c)) > _NAME_MAX]
    if long or len(os.fsencode(str(run_dir.absolute()))) > _PATH_MAX:
        what = f"its component {long[0][:40]!r}... is {len(os.fsencode(long[0]))} bytes (limit {_NAME_MAX})" if long \
            else f"the path is longer than {_PATH_MAX} bytes"
        raise ConfigError(f"--out {str(run_dir)[:80]}...: {what}; choose a shorter --out")
    if run_dir.is_symlink() and not run_dir.exists():
        raise ConfigError(f"--out {run_dir}: is a symbolic link to a missing target ({os.readlink(run_dir)}); "
                          "remove the link or choose another --out")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError(f"--out {run_dir}: exists and is not a directory")
        if (run_dir / STORE_NAME).exists() and not resume:
            raise ConfigError(f"--out {run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        _refuse_foreign(run_dir, allow_nonempty, ConfigError)
        probe_dir = run_dir
    else:
        probe_dir = run_dir.parent
        while not probe_dir.exists():
            if probe_dir.is_symlink():
                raise ConfigError(f"--out {run_dir}: {probe_dir} is a symbolic link to a missing target")
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise ConfigError(f"--out {run_dir}: {probe_dir} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".invbench-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"--out {run_dir}: output folder is not writable ({e.strerror or e})") from None


def _refuse_foreign(run_dir: Path, allow_nonempty: bool, err: type[Exception]) -> None:
    """``err`` when ``run_dir`` holds no results store but other files (not a run folder)."""
    if allow_nonempty or (run_dir / STORE_NAME).exists():
        return
    foreign = fsafety.foreign_entries(run_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise err(f"--out {run_dir}: folder is not empty and holds no run ({shown}); choose a new or empty "
                  "folder, or pass --allow-nonempty-out to write the run next to these files")


def prepare(exp: Experiment, run_dir: str | Path | None = None, resume: bool = False, *,
            allow_nonempty: bool = False, allow_large_cost: bool = False) -> Prepared:
    """Build and validate every part of ``exp`` (see module docstring); writes nothing."""
    from invbench.solvers.base import ParamTypeError

    from invbench import operators, priors, solvers

    try:
        from . import datasets as bdatasets
    except ImportError as e:  # pragma: no cover - part not installed
        raise ConfigError(f"invbench.bench.datasets is not available ({e})") from None
    from . import metrics as bmetrics

    if run_dir is not None:
        check_out_dir(Path(run_dir), resume, allow_nonempty)

    # device / dtype
    device = torch.device(exp.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {exp.device!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {exp.device!r} does not exist ({torch.cuda.device_count()} GPU(s))")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: 'mps' requested but not available")
    dtype = torch.float64 if exp.dtype == "float64" else torch.float32

    # metrics
    mopts = dict(exp.metrics.options)
    known = set(bmetrics.names()) | set(bmetrics.set_names())
    for k in mopts:
        if k not in known:
            raise ConfigError(f"metrics.{k}: unknown key (not a metric name; metrics: {', '.join(sorted(known))})")
    try:
        metrics = bmetrics.build(list(exp.metrics.image), mopts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"metrics.image: {_one_line(e)}") from None
    try:
        set_metrics = bmetrics.build_set(list(exp.metrics.set), mopts)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"metrics.set: {_one_line(e)}") from None
    for m in [*metrics, *set_metrics]:   # an option table for a metric that takes no options
        opts = mopts.get(m.name)
        if opts and not inspect.signature(type(m)).parameters:
            raise ConfigError(f"metrics.{m.name}: metric {m.name!r} takes no options (got {', '.join(sorted(map(str, opts)))})")

    # solvers (names, presets, overrides) — before the expensive parts
    for i, s in enumerate(exp.solvers):
        try:
            solvers.get(s.name)
        except solvers.SolverError as e:
            raise ConfigError(f"solvers[{i}].name: {e}") from None
    built_solvers: dict[tuple[str, str], Any] = {}
    for i, s in enumerate(exp.solvers):
        for t in exp.tasks:
            if s.tasks is not None and t.name not in s.tasks:
                continue
            preset = resolve_preset(s, t, i)
            if (s.label, preset) in built_solvers:
                continue
            try:
                built_solvers[(s.label, preset)] = solvers.build(s.name, preset=preset, **s.overrides)
            except ParamTypeError as e:
                where = f"overrides.{e.field}" if e.field in s.overrides else f"preset {preset!r}"
                raise ConfigError(f"solvers[{i}].{where}: {e}") from None
            except solvers.SolverError as e:
                raise ConfigError(f"solvers[{i}]: {e}") from None
            except (TypeError, ValueError) as e:
                raise ConfigError(f"solvers[{i}].overrides: {_one_line(e)}") from None

    # operators: names first (cheap), parameters per dataset shape below
    for i, t in enumerate(exp.tasks):
        if t.operator not in operators.PRESETS:
            raise ConfigError(f"tasks[{i}].operator: unknown operator preset {t.operator!r}; valid: {', '.join(operators.PRESETS)}")

    # priors (checkpoints are loaded here)
    built_priors: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    for i, p in enumerate(exp.priors):
        if p.checkpoint is not None:
            ck = Path(p.checkpoint)
            if not ck.exists():
                raise ConfigError(f"priors[{i}].checkpoint: file not found: {p.checkpoint}")
            if not ck.is_file():
                kind = "a directory" if ck.is_dir() else "a device, pipe or socket"
                raise ConfigError(f"priors[{i}].checkpoint: {p.checkpoint} is {kind}, not a regular file of weights")
        try:
            prior = priors.build(p.name, **p.build_kwargs())
        except _INPUT_ERRORS as e:
            raise ConfigError(f"priors[{i}] ({p.name}): {_one_line(e)}") from None
        try:
            hashes.update(input_hashes.prior_hashes(p.label, p.name, prior, p.checkpoint))
        except OSError as e:
            raise ConfigError(f"priors[{i}].checkpoint: cannot read {p.checkpoint} ({e.strerror or e})") from None
        built_priors[p.label] = ClockedPrior(prior)   # counts NFE/VJP and clocks network time

    # datasets (every image read and checked)
    built_ds: dict[str, Any] = {}
    images: dict[str, list] = {}
    for i, d in enumerate(exp.datasets):
        try:
            ds = bdatasets.build(d.build_spec(), Path(exp.base_dir))
        except _INPUT_ERRORS as e:
            raise ConfigError(f"datasets[{i}] ({d.name}): {_one_line(e)}") from None
        n = len(ds)
        if n == 0:
            raise ConfigError(f"datasets[{i}] ({d.name}): no images")
        if d.limit is not None and n > d.limit:
            n = d.limit
        ids = [str(x) for x in list(ds.ids)[:n]]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"datasets[{i}] ({d.name}): duplicate image ids")
        shape = tuple(int(s) for s in ds.image_shape)
        synthetic = bool(getattr(ds, "synthetic", False))
        keep = n * math.prod(shape) <= 50_000_000
        imgs = []
        pix = input_hashes.pixels_hasher()
        for j in range(n):
            try:
                x = torch.as_tensor(ds.get(j))
            except _INPUT_ERRORS as e:
                raise ConfigError(f"datasets[{i}] ({d.name}) image {ids[j]!r}: {_one_line(e)}") from None
            if tuple(x.shape) != shape:
                raise ConfigError(f"datasets[{i}] ({d.name}) image {ids[j]!r}: shape {tuple(x.shape)} != dataset image shape {shape} (channels/size)")
            if not torch.isfinite(x).all():
                raise ConfigError(f"datasets[{i}] ({d.name}) image {ids[j]!r}: contains NaN/Inf")
            if not synthetic and (x.min() < 0 or x.max() > 1):
                raise ConfigError(f"datasets[{i}] ({d.name}) image {ids[j]!r}: values outside [0, 1]")
            pix.add(ids[j], x)
            imgs.append(x if keep else None)
        hashes[f"datasets.{d.name}.images"] = pix.hexdigest()
        src = _DatasetView(ds, ids, shape).source()
        for what in ("manifest", "list"):
            if src.get(f"{what}_sha256"):
                hashes[f"datasets.{d.name}.{what}"] = str(src[f"{what}_sha256"])
        ds_ids = ids
        built_ds[d.name] = (ds, ds_ids, shape)
        images[d.name] = imgs

    # prior/dataset pairing and shapes
    for i, p in enumerate(exp.priors):
        pshape = tuple(int(s) for s in built_priors[p.label].image_shape)
        for j, dn in enumerate(p.datasets or ()):
            dshape = built_ds[dn][2]
            if dshape != pshape:
                raise ConfigError(f"priors[{i}].datasets[{j}]: prior {p.name} expects images {pshape} but dataset {dn!r} has {dshape} (channels/size mismatch)")

    # operator parameters for each dataset shape
    shapes = sorted({v[2] for v in built_ds.values()})
    for i, t in enumerate(exp.tasks):
        for shp in shapes:
            try:
                op0 = operators.build(t.operator, image_shape=shp, generator=_gen(0), **t.params)
                hashes[f"tasks.{t.name}.operator{list(shp)}"] = input_hashes.operator_sha256(op0)
            except _INPUT_ERRORS as e:
                raise ConfigError(f"tasks[{i}] ({t.name}): {_one_line(e)} (image shape {shp})") from None

    cells = expand(
        exp,
        dataset_shapes={k: v[2] for k, v in built_ds.items()},
        dataset_sizes={k: len(v[1]) for k, v in built_ds.items()},
        prior_shapes={k: tuple(v.image_shape) for k, v in built_priors.items()},
        prior_analytic={k: "analytic" in v.capabilities for k, v in built_priors.items()},
        solver_cost={k: nfe_per_image(v) for k, v in built_solvers.items()},
    )
    for m, opts in exp.metrics.options.items():   # weights files named by metric options
        for k, v in opts.items():
            if isinstance(v, str) and Path(v).is_file():
                hashes[f"metrics.{m}.{k}"] = input_hashes.file_sha256(v)
    _check_pairs(exp, cells, built_solvers, built_priors)
    _check_name_lengths(exp, cells, {k: v[1] for k, v in built_ds.items()})
    nfe = cost_estimate(exp, cells, built_solvers, {k: len(v[1]) for k, v in built_ds.items()})
    if nfe > LARGE_NFE and not allow_large_cost:
        raise ConfigError(f"cost estimate: about {nfe:.3g} network evaluations (NFE x images x seeds over "
                          f"{len(cells)} cells) exceeds {LARGE_NFE:.0e}; check solver steps/levels, or pass "
                          "--allow-large-cost to run it")
    for pr in built_priors.values():
        pr.to(device=device, dtype=dtype)
    datasets_ = {k: _DatasetView(v[0], v[1], v[2]) for k, v in built_ds.items()}
    return Prepared(exp, datasets_, images, built_priors, built_solvers, cells, metrics, set_metrics, device, dtype,
                    input_hashes=hashes, nfe_estimate=nfe)


LARGE_NFE = 1e9
"""A grid whose estimated network evaluations exceed this needs ``--allow-large-cost``."""


def nfe_per_image(solver) -> float:
    """Network evaluations one image costs: the solver's ``nfe_estimate()`` when it has one, else
    :func:`bench.grid.steps_hint` (product of its step/level counts)."""
    est = getattr(solver, "nfe_estimate", None)
    return float(est()) if callable(est) else float(steps_hint(solver))


def cost_estimate(exp: Experiment, cells: list[Cell], built_solvers: dict, sizes: dict[str, int]) -> float:
    """Estimated network evaluations of the whole grid: per cell, NFE per image x (images x seeds
    + warmup repeats)."""
    return float(sum(nfe_per_image(built_solvers[(c.solver, c.preset)]) * (sizes[c.dataset] * len(exp.seeds) + exp.warmup)
                     for c in cells))


def _check_pairs(exp: Experiment, cells: list[Cell], built_solvers: dict, built_priors: dict) -> None:
    """Each solver's own checks against each prior it meets (e.g. steps <= the prior's grid)."""
    from invbench.solvers import SolverError

    seen = set()
    index = {s.label: i for i, s in enumerate(exp.solvers)}
    for c in cells:
        if (c.solver, c.preset, c.prior) in seen:
            continue
        seen.add((c.solver, c.preset, c.prior))
        try:
            built_solvers[(c.solver, c.preset)].validate(built_priors[c.prior])
        except (SolverError, ValueError) as e:
            raise ConfigError(f"solvers[{index[c.solver]}] ({c.solver}, preset {c.preset}) with prior {c.prior}: "
                              f"{_one_line(e)}") from None


_NAME_MAX = 255   # bytes per path component on common file systems
_PATH_MAX = 4000  # bytes of an absolute path (Linux PATH_MAX is 4096; files inside need room)


def _check_name_lengths(exp: Experiment, cells: list[Cell], ids: dict[str, list[str]]) -> None:
    """ConfigError naming the key or image whose folder/file name (with the temp-name overhead of
    an atomic write) would exceed 255 bytes."""
    extra = len(".") + len(".XXXXXXXX") + len(fsafety.TMP_SUFFIX)
    seed = max(exp.seeds)
    sidx = {s.label: i for i, s in enumerate(exp.solvers)}
    for c in cells:
        comp = f"{run_paths.stem(c.solver)}__{run_paths.stem(c.preset)}"
        if len(comp.encode()) > _NAME_MAX:
            raise ConfigError(f"solvers[{sidx[c.solver]}]: label + preset make a folder name of {len(comp.encode())} bytes "
                              f"(limit {_NAME_MAX}); use a shorter label")
    for d, iids in ids.items():
        di = next(i for i, x in enumerate(exp.datasets) if x.name == d)
        clash = run_paths.colliding(iids)
        if clash is not None:
            raise ConfigError(f"datasets[{di}] ({d}): image ids {clash[0]!r} and {clash[1]!r} would share one file name "
                              f"in the run folder ({run_paths.stem(clash[0])!r}); rename one of the files")
        for iid in iids:
            n = len(f"{run_paths.stem(iid)}_s{seed}.png".encode()) + extra
            if n > _NAME_MAX:
                raise ConfigError(f"datasets[{di}] ({d}) image {iid[:60]!r}...: its file name in the run folder would be "
                                  f"{n} bytes (limit {_NAME_MAX}); rename the file")


@dataclass
class _DatasetView:
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


# --------------------------------------------------------------------------- run helpers


@contextlib.contextmanager
def _lock(run_dir: Path) -> Iterator[None]:
    f = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held open for the whole run (the flock lives on it)
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            who = fsafety.describe_holders(run_dir / ".lock").strip(" ()").removeprefix("held ")
            raise RunError(f"{run_dir}: another invbench run is writing this run directory "
                           f"(lock held{' ' + who if who else ''})") from None
        yield
    finally:
        f.close()


def _meas_vis(op, y: torch.Tensor) -> torch.Tensor | None:
    """Model-space image visualising ``y``: ``y`` itself when image-shaped, else ``A⁺ y`` (SVD
    operators) or ``Aᵀ y`` (other linear operators); None for non-image nonlinear measurements."""
    if tuple(y.shape[1:]) == tuple(op.in_shape) or (len(y.shape) == 4 and y.shape[1] in (1, 3)):
        return y
    if op.is_linear:
        with contextlib.suppress(Exception):
            return op.pinv(y) if op.svd is not None else op.adjoint(y)
    return None


@dataclass
class _Item:
    idx: int
    image_id: str
    seed: int
    rid: str
    op: Any
    x: torch.Tensor      # (1,C,H,W) pixel, float64 on CPU
    y: torch.Tensor      # (1,*out) model space on device
    gen: torch.Generator
    seeds: tuple[int, int, int]


def _recon_rel(cell: Cell, image_id: str, seed: int, ext: str) -> str:
    return run_paths.recon_rel(cell.solver, cell.preset, cell.task.name, cell.dataset, cell.prior, image_id, seed, ext)


def _base_row(p: Prepared, cell: Cell, it: _Item, env: dict) -> dict:
    return {
        "row_id": it.rid, "experiment": p.exp.name, "solver": cell.solver, "preset": cell.preset,
        "task": cell.task.name, "operator": cell.task.operator, "noise_sigma": cell.task.noise_sigma,
        "sigma_y": cell.task.sigma_y, "dataset": cell.dataset, "prior": cell.prior, "image_id": it.image_id,
        "seed": it.seed, "device": env["device"], "torch_version": env["torch_version"],
        "config_hash": p.exp.config_hash, "code_version": env["code_version"],
        "operator_seed": it.seeds[0], "noise_seed": it.seeds[1], "solver_seed": it.seeds[2],
        "preset_provenance": _provenance(p, cell),
    }


def _provenance(p: Prepared, cell: Cell) -> str:
    """The row's ``preset_provenance``: the preset's origin, after the solver's ``FIDELITY``."""
    from invbench import solvers

    spec = next((s for s in p.exp.solvers if s.label == cell.solver), None)
    fidelity = solvers.get(spec.name).FIDELITY if spec is not None else ""
    return preset_provenance(cell.preset, spec.provenance if spec is not None else "", fidelity)


def _items_for(p: Prepared, cell: Cell, todo: list[tuple[int, int]]) -> Iterator[_Item]:
    from invbench.operators.conventions import pixel_to_model

    from invbench import operators

    ds = p.datasets[cell.dataset]
    t = cell.task
    for idx, seed in todo:
        iid = ds.ids[idx]
        dseed = seed if p.exp.data_seed is None else f"data{p.exp.data_seed}"
        s_op = derive_seed(dseed, "operator", t.name, cell.dataset, iid)
        s_noise = derive_seed(dseed, "noise", t.name, cell.dataset, iid)
        s_sol = derive_seed(seed, "solver", t.name, cell.dataset, iid)
        op = operators.build(t.operator, image_shape=ds.image_shape, generator=_gen(s_op), **t.params)
        op.to(device=p.device, dtype=p.dtype)
        x = p.image(cell.dataset, idx).to(torch.float64).unsqueeze(0)
        x_model = pixel_to_model(x).to(device=p.device, dtype=p.dtype)
        y = op.measure(x_model, t.sigma_y, generator=_gen(s_noise))
        rid = row_id(p.exp.config_hash, cell.solver, cell.preset, t.name, cell.dataset, cell.prior, iid, seed)
        yield _Item(idx, iid, seed, rid, op, x, y, _gen(s_sol), (s_op, s_noise, s_sol))


def _batches(items: Iterator[_Item], batch_size: int) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    for it in items:
        if batch and (len(batch) >= batch_size or not same_operator(batch[0].op, it.op)):
            yield batch
            batch = []
        batch.append(it)
    if batch:
        yield batch


def _compute_metrics(p: Prepared, cell: Cell, batch: list[_Item], x_hat_pix: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
    from .metrics import MetricContext

    prior = p.priors[cell.prior]
    op = batch[0].op
    x_true = torch.cat([it.x for it in batch]).to(device=x_hat_pix.device, dtype=x_hat_pix.dtype)
    posterior = None
    if any(m.name == "posterior" and m.unavailable is None for m in p.metrics) and "analytic" in prior.capabilities and op.is_linear:
        posterior = prior.inner.posterior(op, y, cell.task.sigma_y)
    ctx = MetricContext(x_hat=x_hat_pix, x_true=x_true, y=y, operator=op, sigma_y=cell.task.sigma_y, posterior=posterior)
    out: dict[str, list] = {}
    for m in p.metrics:
        if m.unavailable is not None:
            continue
        if m.name == "posterior" and posterior is None:
            continue
        vals = m.compute(ctx)
        for col, v in vals.items():
            v = torch.as_tensor(v).detach().reshape(-1).cpu().double().tolist()
            out[col] = [None if not math.isfinite(x) else float(x) for x in v]
    return out


def _run_batch(p: Prepared, cell: Cell, solver, batch: list[_Item], run_dir: Path, env: dict) -> tuple[list[dict], str | None]:
    """Solve one batch; return its rows and, for a skip, the reason (the cell's remaining rows are
    then skipped without running)."""
    from invbench.operators.conventions import model_to_pixel
    from invbench.solvers import SolverDiverged, SolverSkip

    prior = p.priors[cell.prior]
    op = batch[0].op
    y = torch.cat([it.y for it in batch])
    gens = [it.gen for it in batch]
    prior.reset()
    status, message, x_hat, skip = "ok", "", None, None
    timer = cost.Timer(p.device)
    try:
        with timer:
            x_hat = solver.solve(y, op, prior, sigma_y=cell.task.sigma_y, generator=gens)
        nfe, vjp, net_s = int(prior.nfe), int(prior.vjp), prior.network_seconds()
        if not isinstance(x_hat, torch.Tensor) or tuple(x_hat.shape) != (len(batch), *op.in_shape):
            raise RuntimeError(f"solver returned shape {tuple(getattr(x_hat, 'shape', ()))}, expected {(len(batch), *op.in_shape)}")
        if not torch.isfinite(x_hat).all():
            raise SolverDiverged("non-finite values in the reconstruction")
    except SolverSkip as e:
        status, message, skip = "skipped", _one_line(e), _one_line(e)
    except SolverDiverged as e:
        status, message = "diverged", _one_line(e)
    except torch.OutOfMemoryError as e:
        status, message = "oom", _one_line(e)
        if p.device.type == "cuda":
            torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001 - isolate any failure to this cell
        status, message = "error", f"{type(e).__name__}: {_one_line(e)}"
    rows = []
    n = len(batch)
    if status != "ok":
        for it in batch:
            r = _base_row(p, cell, it, env)
            r.update(status=status, message=message, batch_size=n, created=time.time())
            rows.append(r)
        return rows, skip

    seconds = timer.seconds / n
    timings = _timing_json(p, cell, solver, batch, y, op, timer.seconds, net_s)
    peak_gpu = cost.gpu_peak_bytes(p.device)
    peak_rss = cost.peak_rss_bytes()
    x_hat = x_hat.detach()
    x_pix = model_to_pixel(x_hat.to(torch.float64))
    try:
        metric_vals = _compute_metrics(p, cell, batch, x_pix, y.detach())
        metric_err = ""
    except Exception as e:  # noqa: BLE001 - a failing metric marks the rows, the grid goes on
        metric_vals, metric_err = {}, f"metric failed: {type(e).__name__}: {_one_line(e)}"
    save_npy = p.exp.save_npy or bool(p.set_metrics)
    for k, it in enumerate(batch):
        rel = _recon_rel(cell, it.image_id, it.seed, "png")
        write_png(run_dir / rel, x_pix[k].cpu())
        if save_npy:
            write_npy(run_dir / (rel[:-4] + ".npy"), x_pix[k].cpu())
        meas = run_dir / run_paths.meas_rel(cell.task.name, cell.dataset, it.image_id, it.seed)
        if not meas.exists():
            vis = _meas_vis(it.op, it.y)
            if vis is not None and vis.ndim == 4:
                write_png(meas, model_to_pixel(vis[0].detach().to(torch.float64)).cpu())
        r = _base_row(p, cell, it, env)
        r.update(status="error" if metric_err else "ok", message=metric_err, seconds=seconds,
                 peak_mem_bytes=peak_gpu, peak_rss_bytes=peak_rss, nfe=nfe, vjp=vjp, batch_size=n,
                 net_seconds=net_s / n, timings=timings,
                 recon_path=rel, created=time.time())
        for col, vals in metric_vals.items():
            r[col] = vals[k]
        rows.append(r)
    return rows, None


def _timing_json(p: Prepared, cell: Cell, solver, batch: list[_Item], y: torch.Tensor, op,
                 first_s: float, first_net_s: float) -> str:
    """JSON of the batch's timed solves, shared by its rows: ``call`` (id of this solve call: the
    first row_id of the batch), ``seconds`` and ``net_seconds`` per image (solve wall time and the
    network's share, each / batch size) of the stored solve followed by ``timing_repeats - 1``
    repeated solves of the same batch (same seeds; results discarded; a failing repeat ends the
    repeats)."""
    n = len(batch)
    secs, nets = [first_s / n], [first_net_s / n]
    prior = p.priors[cell.prior]
    for _ in range(p.exp.timing_repeats - 1):
        prior.reset()
        timer = cost.Timer(p.device)
        try:
            with timer:
                solver.solve(y, op, prior, sigma_y=cell.task.sigma_y, generator=[_gen(it.seeds[2]) for it in batch])
        except Exception:  # noqa: BLE001 - the stored solve succeeded; a repeat only adds samples
            break
        secs.append(timer.seconds / n)
        nets.append(prior.network_seconds() / n)
    return json.dumps({"call": batch[0].rid[:16], "seconds": [float(f"{v:.6g}") for v in secs],
                       "net_seconds": [float(f"{v:.6g}") for v in nets]})


def _warmup(p: Prepared, cell: Cell, solver, item: _Item) -> None:
    prior = p.priors[cell.prior]
    for _ in range(p.exp.warmup):
        with contextlib.suppress(Exception):
            solver.solve(item.y, item.op, prior, sigma_y=cell.task.sigma_y, generator=[_gen(item.seeds[2])])
    prior.reset()


def env_info(device: torch.device) -> dict:
    return {"device": cost.device_name(device), "torch_version": cost.torch_version(), "code_version": code_version(),
            **cost.machine_info(device)}


def _loadavg() -> str:
    """The 1-, 5- and 15-minute load averages of the machine (``""`` where unknown), for timings."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return ""


def _write_start(p: Prepared, store: Store, run_dir: Path, env: dict, rss_reset: bool, keep_truth: bool) -> None:
    """Record the run's metadata and metric status, and write ``truth/`` (kept on resume, where
    the input hashes guarantee the same images; rewritten by a new run)."""
    exp = p.exp
    store.set_meta({
        "experiment": exp.name, "config": exp.toml_text(), "config_hash": exp.config_hash,
        "code_version": env["code_version"], "torch_version": env["torch_version"], "device": env["device"],
        "python_version": platform.python_version(), "platform": platform.platform(), "units": UNITS,
        "protocol": exp.protocol, "description": exp.description, "schema_version": "1",
        "numpy_version": np.__version__, "batch_size": str(exp.batch_size), "warmup": str(exp.warmup),
        "rss_peak_reset_per_cell": str(bool(rss_reset)),
        # CPU float rounding of convolutions depends on the thread count and the kernel family
        # (cpu_capability): bitwise reruns need the same of both
        **{k: env[k] for k in ("cpu_model", "cpu_capability", "gpu_name", "torch_threads", "cpu_count")},
        "timing_repeats": str(exp.timing_repeats),
        # rows of the whole grid: compare tells a finished run from a killed or running one
        "grid_rows": str(sum(len(p.datasets[c.dataset].ids) for c in p.cells) * len(exp.seeds)),
        "seeding": "operator/noise/solver generators seeded by sha256(seed, kind, task, dataset, image_id)",
        "batching": "images batched only while their operators are identical",
        "datasets": repr({k: v.source() for k, v in p.datasets.items()}),
        "input_hashes": json.dumps(p.input_hashes, sort_keys=True),
        "created": str(time.time()),
        "load_avg_start": _loadavg(),
    })
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


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="invbench", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr)


# --------------------------------------------------------------------------- run


def _refuse_existing(run_dir: Path, exp: Experiment, resume: bool, hashes: dict[str, str] | None = None) -> None:
    """RunError if ``run_dir`` holds a store of another config, or any store without ``resume``,
    or (``hashes`` given) a store whose recorded input hashes differ from ``hashes`` (other data,
    weights or operator assets behind the same config); reads the store read-only (a refused run
    writes nothing)."""
    from .store import StoreError, _check_existing, _connect_readonly

    path = run_dir / STORE_NAME
    if not path.exists():
        return
    try:
        _check_existing(path)   # corrupt / older schema: refused before the lock file is created
        con = _connect_readonly(path)
        try:   # a store killed before its tables existed has no meta yet: nothing to compare
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(con.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{run_dir / STORE_NAME}: not a usable results store ({e})") from None
    if meta.get("config_hash") not in (None, exp.config_hash):
        raise RunError(f"{run_dir}: holds a run of a different config (hash {meta.get('config_hash')} vs "
                       f"{exp.config_hash}); --resume needs the same config — use another --out")
    if not resume:
        raise RunError(f"{run_dir}: already holds a run; pass --resume to continue it")
    _refuse_changed_inputs(run_dir, meta, hashes)


def _refuse_changed_inputs(run_dir: Path, meta: dict[str, str], hashes: dict[str, str] | None) -> None:
    """RunError naming the inputs whose content hash differs from the one the run recorded."""
    if hashes is None or "input_hashes" not in meta:
        return   # nothing recorded yet (killed before its metadata was written)
    try:
        old = json.loads(meta["input_hashes"])
    except ValueError:
        old = {}
    diff = input_hashes.changed(old, hashes)
    if diff:
        shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise RunError(f"{run_dir}: --resume refused: inputs changed since the run started ({shown}); its finished "
                       "rows were computed on the old contents — restore them or start a new run in another --out")


@dataclass
class RunSummary:
    run_dir: Path
    rows: int
    counts: dict[str, int]
    skipped_done: int
    seconds: float


def run(
    p: Prepared,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    cell_indices: list[int] | None = None,
    set_metrics: bool = True,
    allow_nonempty: bool = False,
) -> RunSummary:
    """Run the grid of a prepared experiment into ``run_dir`` (see module docstring).

    ``shard=(k, n)`` runs only cells ``k, k+n, k+2n, ...`` (cheapest-first order), writing rows to
    ``RUN_DIR/shards/<k>/results.sqlite`` (files go to RUN_DIR as usual) and skipping rows that
    the run store already holds as finished. ``cell_indices`` (indices into ``p.cells``) replaces
    the round-robin split of a shard.
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    exp = p.exp
    main_store = run_dir / STORE_NAME
    had_store = main_store.exists()   # else nothing in the folder is this run's: no cleanup, truth rewritten
    if shard is None:
        _refuse_existing(run_dir, exp, resume, p.input_hashes)
        _refuse_foreign(run_dir, allow_nonempty, RunError)
    new_dirs = [d for d in (run_dir, run_dir / "shards", run_dir / "shards" / str(shard[0] if shard else 0))
                if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    store_dir = run_dir if shard is None else run_dir / "shards" / str(shard[0])
    store_dir.mkdir(parents=True, exist_ok=True)
    env = env_info(p.device)
    with _lock(store_dir):
        if shard is None:   # again under the lock: another run may have created the store meanwhile
            _refuse_existing(run_dir, exp, resume, p.input_hashes)
        elif main_store.exists():   # a shard checks its inputs against what the run recorded
            from .store import load_meta

            _refuse_changed_inputs(run_dir, load_meta(run_dir), p.input_hashes)
        if shard is None and had_store:   # shards leave cleanup to their parent (other shards write into RUN_DIR)
            fsafety.clean_own_temp_files(run_dir)
        try:
            store = Store(store_dir / STORE_NAME)
        except (StoreError, fsafety.StorageFault):
            _remove_new_dirs(store_dir, new_dirs)   # a failed creation leaves nothing behind
            raise
        try:
            need_npy = p.exp.save_npy or bool(p.set_metrics)
            done, missing = _done_with_files(store, run_dir, need_npy)
            if shard is not None and main_store.exists():
                with Store(main_store) as ms:
                    d2, m2 = _done_with_files(ms, run_dir, need_npy)
                done |= d2
                missing += [m for m in m2 if m not in missing]
            if missing:
                sys.stderr.write(f"invbench: {run_dir}: {len(missing)} finished row(s) lost their files (e.g. {missing[0]}); "
                                 "recomputing them\n")
            rss_reset = cost.reset_rss_peak()
            _write_start(p, store, run_dir, env, rss_reset, keep_truth=had_store)
            store.set_meta({"calibration": json.dumps(calibration.calibrate(p.priors, exp.batch_size, p.device, p.dtype))})
            if cell_indices is not None:
                cells = [p.cells[i] for i in cell_indices]
            else:
                cells = p.cells if shard is None else p.cells[shard[0]::shard[1]]
            todo_by_cell = []
            total = already = 0
            for cell in cells:
                ds = p.datasets[cell.dataset]
                todo = []
                for idx, iid in enumerate(ds.ids):
                    for seed in exp.seeds:
                        total += 1
                        rid = row_id(exp.config_hash, cell.solver, cell.preset, cell.task.name, cell.dataset, cell.prior, iid, seed)
                        if rid in done:
                            already += 1
                        else:
                            todo.append((idx, seed))
                todo_by_cell.append((cell, todo))
            counts: dict[str, int] = {}
            bar = _progress(total, already, progress)
            try:
                for k, (cell, todo) in enumerate(todo_by_cell):
                    if not todo:
                        continue
                    bar.set_postfix_str(f"cell {k + 1}/{len(todo_by_cell)} {cell.label()}", refresh=False)
                    solver = p.solvers[(cell.solver, cell.preset)]
                    cost.reset_gpu_peak(p.device)
                    cost.reset_rss_peak()
                    items = _items_for(p, cell, todo)
                    skip_reason = None
                    warmed = False
                    for batch in _batches(items, exp.batch_size):
                        if skip_reason is not None:
                            rows = []
                            for it in batch:
                                r = _base_row(p, cell, it, env)
                                r.update(status="skipped", message=skip_reason, batch_size=len(batch), created=time.time())
                                rows.append(r)
                        else:
                            if exp.warmup and not warmed:
                                _warmup(p, cell, solver, batch[0])
                                warmed = True
                            rows, skip_reason = _run_batch(p, cell, solver, batch, run_dir, env)
                        store.write_rows(rows)
                        for r in rows:
                            counts[r["status"]] = counts.get(r["status"], 0) + 1
                        bar.update(len(rows))
            finally:
                bar.close()
            if set_metrics and shard is None:
                compute_set_metrics(p, store, run_dir)
            store.set_meta({"load_avg_end": _loadavg()})
        except (OSError, sqlite3.OperationalError) as e:   # a write failed: name the file, say how to continue
            fault = fsafety.storage_fault(e, run_dir if isinstance(e, OSError) else store_dir / STORE_NAME)
            if fault is not None:
                raise fault from None
            raise
        finally:
            store.close()
    return RunSummary(run_dir, total, counts, already, time.time() - t0)


def _remove_new_dirs(store_dir: Path, new_dirs: list[Path]) -> None:
    """Remove the lock file and the folders this run created, when they hold nothing else."""
    if store_dir in new_dirs:
        with contextlib.suppress(FileNotFoundError):
            (store_dir / ".lock").unlink()
    for d in sorted(new_dirs, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()   # only succeeds on an empty folder


def _done_with_files(store: Store, run_dir: Path, need_npy: bool) -> tuple[set[str], list[str]]:
    """Row ids finished in ``store`` (``ok``/``skipped``) whose files are all present, and the
    relative paths of missing files (their rows are recomputed: they leave the done set)."""
    done, missing = set(), []
    for rid, status, rel in store.con.execute("SELECT row_id, status, recon_path FROM results WHERE status IN ('ok', 'skipped')"):
        if status == "ok" and rel:
            want = [rel] + ([rel[:-4] + ".npy"] if need_npy and rel.endswith(".png") else [])
            lost = [w for w in want if not (run_dir / w).is_file()]
            if lost:
                missing.append(lost[0])
                continue
        done.add(rid)
    return done, missing


def compute_set_metrics(p: Prepared, store: Store, run_dir: Path) -> None:
    """Per cell, compute each available set metric from the cell's ``ok`` rows (float .npy when
    present, else the PNG).

    * ``fid`` (and any other set metric): all reconstructions of the cell vs the ground truth of
      the same images.
    * ``sliced_wasserstein``: analytic priors only, and only when ``data_seed`` is set (then all
      seeds of an image share one measurement): per image, the samples over seeds vs exact
      posterior samples for that measurement; the stored value is the mean over images.
    """
    if not p.set_metrics:
        return
    for cell in p.cells:
        key = {"experiment": p.exp.name, "solver": cell.solver, "preset": cell.preset, "task": cell.task.name,
               "dataset": cell.dataset, "prior": cell.prior}
        rows = store.rows("WHERE solver=? AND preset=? AND task=? AND dataset=? AND prior=? AND config_hash=? AND status='ok' ORDER BY image_id, seed",
                          (cell.solver, cell.preset, cell.task.name, cell.dataset, cell.prior, p.exp.config_hash))
        ds = p.datasets[cell.dataset]
        index = {iid: i for i, iid in enumerate(ds.ids)}
        recon, lost = [], None
        for r in rows:
            rel = r["recon_path"]
            npy = run_dir / (rel[:-4] + ".npy")
            try:
                arr = np.load(npy, allow_pickle=False) if npy.exists() else read_png(run_dir / rel)
            except OSError:
                lost = rel
                break
            recon.append(torch.as_tensor(np.asarray(arr, dtype=np.float64)))
        if lost is not None:   # a file vanished during the run: recorded, recomputed by the next --resume
            for m in p.set_metrics:
                store.write_set_metric(key, m.name, None, len(rows), f"unavailable: reconstruction {lost} is missing "
                                       "(rerun with --resume to recompute it)")
            continue
        for m in p.set_metrics:
            if m.unavailable is not None:
                store.write_set_metric(key, m.name, None, len(recon), m.unavailable)
                continue
            if not recon:
                store.write_set_metric(key, m.name, None, 0, "unavailable: no ok reconstructions in this cell")
                continue
            try:
                if m.name == "sliced_wasserstein":
                    value, n, note = _sliced_wasserstein(p, cell, m, rows, recon)
                else:
                    truth = [p.image(cell.dataset, index[r["image_id"]]).to(torch.float64) for r in rows]
                    value, note = m.compute(torch.stack(recon), torch.stack(truth))
                    n = len(recon)
            except Exception as e:  # noqa: BLE001 - recorded, never fatal
                value, n, note = None, len(recon), f"unavailable: {type(e).__name__}: {_one_line(e)}"
            ok = value is not None and math.isfinite(value)
            store.write_set_metric(key, m.name, float(value) if ok else None, n, note)


def _sliced_wasserstein(p: Prepared, cell: Cell, m, rows: list[dict], recon: list) -> tuple[float | None, int, str]:
    from invbench.operators.conventions import pixel_to_model

    from invbench import operators

    prior = p.priors[cell.prior]
    if "analytic" not in prior.capabilities:
        return None, len(recon), "unavailable: needs an analytic prior (exact posterior)"
    if p.exp.data_seed is None or len(p.exp.seeds) < 2:
        return None, len(recon), "unavailable: needs data_seed and >= 2 seeds (samples for one measurement)"
    ds = p.datasets[cell.dataset]
    index = {iid: i for i, iid in enumerate(ds.ids)}
    groups: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        groups.setdefault(r["image_id"], []).append(k)
    vals, notes = [], ""
    for iid, ks in groups.items():
        r = rows[ks[0]]
        op = operators.build(cell.task.operator, image_shape=ds.image_shape, generator=_gen(int(r["operator_seed"])), **cell.task.params)
        op.to(device=p.device, dtype=p.dtype)
        if not op.is_linear:
            return None, len(recon), "unavailable: exact posterior needs a linear operator"
        x = pixel_to_model(p.image(cell.dataset, index[iid]).to(torch.float64).unsqueeze(0)).to(device=p.device, dtype=p.dtype)
        y = op.measure(x, cell.task.sigma_y, generator=_gen(int(r["noise_seed"])))
        post = prior.inner.posterior(op, y, cell.task.sigma_y)
        v, notes = m.compute(torch.stack([recon[k] for k in ks]), None, posterior=post)
        if v is None:
            return None, len(recon), notes
        vals.append(float(v))
    return float(np.mean(vals)), len(recon), f"mean over {len(vals)} images; " + notes
