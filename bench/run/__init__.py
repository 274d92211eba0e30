"""The run wing: validate an experiment, expand its grid, run every cell, store rows and files.

A run, in order (one module per step):

1. :mod:`.prepare` (:func:`prepare`) validates *everything* before anything is written — registry
   names, solver presets and hyperparameters, operator parameters for each dataset shape, priors
   (checkpoints loaded), datasets (every image read and checked), metric names and options —
   with :mod:`.checks` (output folder, file-name lengths, solver × prior checks, cost estimate).
   Any bad input raises :class:`invbench.bench.config.ConfigError` and no RUN_DIR is created.
2. :mod:`.loop` (:func:`run`) creates RUN_DIR, takes its exclusive lock and finds what is done
   (:mod:`.resume`: a second run on the same RUN_DIR is refused; ``--resume`` skips rows whose
   ``row_id`` is ``ok``/``skipped`` with their files present and redoes the rest), records the
   start (:mod:`.record`: ``meta``, ``metric_status``, ground-truth PNGs) and runs the cells
   cheapest first.
3. :mod:`.execute` solves a cell: each row's problem comes from
   :func:`invbench.bench.problem.build_problem` (operator, measurement and solver generator seeded
   by ``derive_seed(seed, kind, task, dataset, image_id)``), images are batched while their
   operators are equal, each batch is solved once in the timed region, failures become the
   row's status; :mod:`.rows` builds the rows and their per-image metric columns. A row is
   committed after its files exist (names from :mod:`.paths`).
4. :mod:`.set_metrics`: after the grid, set metrics (FID, sliced Wasserstein) per cell from the
   stored reconstructions.

:mod:`.owned` lists the files a run wrote, so that replacing an older run deletes only those.
Timing: ``warmup = k`` runs each cell's first image k times before timing (results discarded,
counters reset); ``net_seconds`` is the time inside the network
(:class:`invbench.bench.cost.netclock.ClockedPrior`); at the start of a run the device is
calibrated (:mod:`invbench.bench.cost.calibration`, meta ``calibration``).
"""

from __future__ import annotations

from ..problem import derive_seed
from .checks import LARGE_NFE, check_out_dir, cost_estimate, nfe_per_image
from .loop import RunSummary, run
from .prepare import Prepared, prepare
from .record import UNITS, code_version, env_info
from .resume import RunError
from .set_metrics import compute_set_metrics

__all__ = [
    "LARGE_NFE",
    "UNITS",
    "Prepared",
    "RunError",
    "RunSummary",
    "check_out_dir",
    "code_version",
    "compute_set_metrics",
    "cost_estimate",
    "derive_seed",
    "env_info",
    "nfe_per_image",
    "prepare",
    "run",
]
