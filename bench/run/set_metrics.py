"""Set metrics of a finished grid: per cell, each set metric from the cell's stored ``ok``
reconstructions (the float ``.npy`` when present, else the PNG).

A set metric says what it compares (:class:`invbench.bench.metrics.SetMetric`):

* against the truth (``needs_posterior`` False, e.g. FID): all reconstructions of the cell vs the
  ground truth of the same images;
* against the exact posterior (``needs_posterior`` True, e.g. sliced Wasserstein): analytic priors
  only, and only when ``data_seed`` is set and there are >= 2 seeds (then all seeds of an image
  share one measurement); per image, the samples over seeds vs that measurement's exact
  posterior, combined over images by the metric (:meth:`SetMetric.compute_posterior`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..grid import Cell
from ..problem import build_problem
from ..runfiles import read_png
from ..store import Store
from .checks import one_line

__all__ = ["compute_set_metrics"]


def compute_set_metrics(p, store: Store, run_dir: Path) -> None:
    """Compute and store every set metric of every cell of prepared run ``p`` (see the module doc);
    a failing or unavailable metric is stored as ``None`` with its reason, never fatal."""
    if not p.set_metrics:
        return
    for cell in p.cells:
        key = {
            "experiment": p.exp.name,
            "solver": cell.solver,
            "preset": cell.preset,
            "task": cell.task.name,
            "dataset": cell.dataset,
            "prior": cell.prior,
        }
        rows = store.cell_rows(
            p.exp.config_hash, cell.solver, cell.preset, cell.task.name, cell.dataset, cell.prior
        )
        recon, lost = _read_recons(rows, run_dir)
        if lost is not None:  # a file vanished during the run: recorded, redone by --resume
            why = (
                f"unavailable: reconstruction {lost} is missing "
                "(rerun with --resume to recompute it)"
            )
            for m in p.set_metrics:
                store.write_set_metric(key, m.name, None, len(rows), why)
            continue
        for m in p.set_metrics:
            value, n, note = _one(p, cell, m, rows, recon)
            ok = value is not None and math.isfinite(value)
            store.write_set_metric(key, m.name, float(value) if ok else None, n, note)


def _read_recons(rows: list[dict], run_dir: Path) -> tuple[list[torch.Tensor], str | None]:
    """The reconstructions of ``rows`` (float64 pixel units) and the first missing file, if any."""
    recon = []
    for r in rows:
        rel = r["recon_path"]
        npy = run_dir / (rel[:-4] + ".npy")
        try:
            arr = np.load(npy, allow_pickle=False) if npy.exists() else read_png(run_dir / rel)
        except OSError:
            return recon, rel
        recon.append(torch.as_tensor(np.asarray(arr, dtype=np.float64)))
    return recon, None


def _one(p, cell: Cell, m, rows: list[dict], recon: list) -> tuple[float | None, int, str]:
    """``(value, n, note)`` of set metric ``m`` on one cell."""
    if m.unavailable is not None:
        return None, len(recon), m.unavailable
    if not recon:
        return None, 0, "unavailable: no ok reconstructions in this cell"
    try:
        if m.needs_posterior:
            return _against_posterior(p, cell, m, rows, recon)
        ds = p.datasets[cell.dataset]
        index = {iid: i for i, iid in enumerate(ds.ids)}
        truth = [p.image(cell.dataset, index[r["image_id"]]).to(torch.float64) for r in rows]
        value, note = m.compute(torch.stack(recon), torch.stack(truth))
        return value, len(recon), note
    except Exception as e:  # noqa: BLE001 - recorded, never fatal
        return None, len(recon), f"unavailable: {type(e).__name__}: {one_line(e)}"


def _against_posterior(
    p, cell: Cell, m, rows: list[dict], recon: list
) -> tuple[float | None, int, str]:
    prior = p.priors[cell.prior]
    if "analytic" not in prior.capabilities:
        return None, len(recon), "unavailable: needs an analytic prior (exact posterior)"
    if p.exp.data_seed is None or len(p.exp.seeds) < 2:
        return (
            None,
            len(recon),
            "unavailable: needs data_seed and >= 2 seeds (samples for one measurement)",
        )
    try:
        value, note = m.compute_posterior(_groups(p, cell, rows, recon))
    except _Nonlinear:
        return None, len(recon), "unavailable: exact posterior needs a linear operator"
    return value, len(recon), note


def _groups(p, cell: Cell, rows: list[dict], recon: list) -> Iterator[tuple[torch.Tensor, object]]:
    """Per image (lazily): its samples over seeds and the exact posterior of its one measurement
    (the problem rebuilt from the run's seed parts); :class:`_Nonlinear` for a nonlinear
    operator."""
    ds = p.datasets[cell.dataset]
    index = {iid: i for i, iid in enumerate(ds.ids)}
    groups: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        groups.setdefault(r["image_id"], []).append(k)
    prior = p.priors[cell.prior]
    for iid, ks in groups.items():
        r = rows[ks[0]]
        problem = build_problem(
            cell.task,
            cell.dataset,
            iid,
            p.image(cell.dataset, index[iid]),
            f"data{p.exp.data_seed}",
            r["seed"],
            device=p.device,
            dtype=p.dtype,
        )
        if problem.seeds[:2] != (r["operator_seed"], r["noise_seed"]):
            raise RuntimeError(
                f"image {iid!r}: the stored seeds do not match the run's seeding scheme"
            )
        if not problem.operator.is_linear:
            raise _Nonlinear()
        yield (
            torch.stack([recon[k] for k in ks]),
            prior.inner.posterior(problem.operator, problem.y, cell.task.sigma_y),
        )


class _Nonlinear(ValueError):
    """The cell's operator is nonlinear: it has no exact posterior."""
