"""Solving one cell: its problems, batched while their operators are equal, each batch solved
once in the timed region, its files written and its rows returned.

* Problems come from :func:`invbench.bench.problem.build_problem` with the run's seed parts:
  ``data_part`` is the row's seed (or ``"data<N>"`` under ``data_seed = N``, so every seed of an
  image shares one measurement) and ``solver_part`` the row's seed.
* Images are batched (up to ``batch_size``) only while consecutive images have the same operator
  (:func:`invbench.operators.base.same_operator`, which compares the operators' declared state):
  deterministic tasks batch fully, per-image random masks/kernels run one image per call.
* Failure isolation: ``SolverSkip`` -> ``skipped`` (the rest of the cell is skipped with the same
  reason), ``SolverDiverged`` or a non-finite reconstruction -> ``diverged``,
  ``torch.OutOfMemoryError`` -> ``oom``, any other exception -> ``error`` with a one-line
  message; the grid goes on.
* Timing: the timed region is the ``solver.solve`` call only (CUDA synchronised); ``seconds`` per
  image = batch time / batch size; ``timings`` holds that solve and ``timing_repeats - 1``
  repeats of it (:func:`timing_json`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .. import cost
from ..grid import Cell
from ..problem import batched, build_problem
from ..runfiles import write_npy, write_png
from . import paths as run_paths
from .checks import one_line
from .rows import Item, base_row, item, metric_columns, recon_rel

__all__ = ["batches", "items_for", "run_batch", "status_rows", "timing_json", "warmup"]


def items_for(p, cell: Cell, todo: list[tuple[int, int]]) -> Iterator[Item]:
    """The items of ``todo`` (dataset index, seed) in ``cell``, each measured by
    :func:`~invbench.bench.problem.build_problem` when it is reached."""
    ds = p.datasets[cell.dataset]
    for idx, seed in todo:
        data_part = seed if p.exp.data_seed is None else f"data{p.exp.data_seed}"
        problem = build_problem(
            cell.task,
            cell.dataset,
            ds.ids[idx],
            p.image(cell.dataset, idx),
            data_part,
            seed,
            device=p.device,
            dtype=p.dtype,
        )
        yield item(p, cell, problem, seed)


def batches(items: Iterator[Item], batch_size: int) -> Iterator[list[Item]]:
    """Consecutive items in batches of at most ``batch_size`` that share one operator
    (:func:`invbench.bench.problem.batched`)."""
    return batched(items, batch_size, problem_of=lambda it: it.problem)


def status_rows(
    p, cell: Cell, batch: list[Item], env: dict, status: str, message: str
) -> list[dict]:
    """Rows of a batch that produced no reconstruction (skipped, diverged, oom, error)."""
    rows = []
    for it in batch:
        r = base_row(p, cell, it, env)
        r.update(status=status, message=message, batch_size=len(batch), created=time.time())
        rows.append(r)
    return rows


def _solve(p, cell: Cell, solver, batch: list[Item]) -> tuple[str, str, dict]:
    """Solve a batch in the timed region: ``(status, message, result)``; ``result`` holds
    ``x_hat``, ``y``, the timer and the prior's counters of an ``ok`` solve."""
    from invbench.solvers import SolverDiverged, SolverSkip

    prior = p.priors[cell.prior]
    op = batch[0].problem.operator
    y = torch.cat([it.problem.y for it in batch])
    gens = [it.problem.solver_generator() for it in batch]
    prior.reset()
    timer = cost.Timer(p.device)
    try:
        with timer:
            x_hat = solver.solve(y, op, prior, sigma_y=cell.task.sigma_y, generator=gens)
        nfe, vjp, net_s = int(prior.nfe), int(prior.vjp), prior.network_seconds()
        if not isinstance(x_hat, torch.Tensor) or tuple(x_hat.shape) != (len(batch), *op.in_shape):
            raise RuntimeError(
                f"solver returned shape {tuple(getattr(x_hat, 'shape', ()))}, expected "
                f"{(len(batch), *op.in_shape)}"
            )
        if not torch.isfinite(x_hat).all():
            raise SolverDiverged("non-finite values in the reconstruction")
    except SolverSkip as e:
        return "skipped", one_line(e), {}
    except SolverDiverged as e:
        return "diverged", one_line(e), {}
    except torch.OutOfMemoryError as e:
        if p.device.type == "cuda":
            torch.cuda.empty_cache()
        return "oom", one_line(e), {}
    except Exception as e:  # noqa: BLE001 - isolate any failure to this cell
        return "error", f"{type(e).__name__}: {one_line(e)}", {}
    res = {"x_hat": x_hat, "y": y, "seconds": timer.seconds, "nfe": nfe, "vjp": vjp, "net_s": net_s}
    return "ok", "", res


def run_batch(
    p, cell: Cell, solver, batch: list[Item], run_dir: Path, env: dict
) -> tuple[list[dict], str | None]:
    """Solve one batch; return its rows and, for a skip, the reason (the cell's remaining rows are
    then skipped without running)."""
    from invbench.operators.conventions import model_to_pixel

    status, message, res = _solve(p, cell, solver, batch)
    if status != "ok":
        skip = message if status == "skipped" else None
        return status_rows(p, cell, batch, env, status, message), skip
    n = len(batch)
    timings = timing_json(
        p, cell, solver, batch, res["y"], batch[0].problem.operator, res["seconds"], res["net_s"]
    )
    peak_gpu = cost.gpu_peak_bytes(p.device)
    peak_rss = cost.peak_rss_bytes()
    x_pix = model_to_pixel(res["x_hat"].detach().to(torch.float64))
    try:
        metric_vals = metric_columns(p, cell, batch, x_pix, res["y"].detach())
        metric_err = ""
    except Exception as e:  # noqa: BLE001 - a failing metric marks the rows, the grid goes on
        metric_vals, metric_err = {}, f"metric failed: {type(e).__name__}: {one_line(e)}"
    rows = []
    for k, it in enumerate(batch):
        rel = _write_files(p, cell, it, x_pix[k], run_dir)
        r = base_row(p, cell, it, env)
        r.update(
            status="error" if metric_err else "ok",
            message=metric_err,
            seconds=res["seconds"] / n,
            peak_mem_bytes=peak_gpu,
            peak_rss_bytes=peak_rss,
            nfe=res["nfe"],
            vjp=res["vjp"],
            batch_size=n,
            net_seconds=res["net_s"] / n,
            timings=timings,
            recon_path=rel,
            created=time.time(),
        )
        for col, vals in metric_vals.items():
            r[col] = vals[k]
        rows.append(r)
    return rows, None


def _write_files(p, cell: Cell, it: Item, x_pix: torch.Tensor, run_dir: Path) -> str:
    """Write the reconstruction (PNG, and ``.npy`` when kept) and, once per image and seed, the
    measurement's visualisation; returns the PNG's path relative to the run folder."""
    from invbench.operators.conventions import model_to_pixel

    rel = recon_rel(cell, it.image_id, it.seed, "png")
    write_png(run_dir / rel, x_pix.cpu())
    if p.exp.save_npy or bool(p.set_metrics):
        write_npy(run_dir / (rel[:-4] + ".npy"), x_pix.cpu())
    meas = run_dir / run_paths.meas_rel(cell.task.name, cell.dataset, it.image_id, it.seed)
    if not meas.exists():
        vis = _meas_vis(it.problem.operator, it.problem.y)
        if vis is not None and vis.ndim == 4:
            write_png(meas, model_to_pixel(vis[0].detach().to(torch.float64)).cpu())
    return rel


def _meas_vis(op, y: torch.Tensor) -> torch.Tensor | None:
    """Model-space image visualising ``y``: ``y`` itself when image-shaped, else ``A⁺ y`` (SVD
    operators) or ``Aᵀ y`` (other linear operators); None for non-image nonlinear measurements."""
    if tuple(y.shape[1:]) == tuple(op.in_shape) or (len(y.shape) == 4 and y.shape[1] in (1, 3)):
        return y
    if op.is_linear:
        with contextlib.suppress(Exception):
            return op.pinv(y) if op.svd is not None else op.adjoint(y)
    return None


def timing_json(
    p,
    cell: Cell,
    solver,
    batch: list[Item],
    y: torch.Tensor,
    op,
    first_s: float,
    first_net_s: float,
) -> str:
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
                solver.solve(
                    y,
                    op,
                    prior,
                    sigma_y=cell.task.sigma_y,
                    generator=[it.problem.solver_generator() for it in batch],
                )
        except Exception:  # noqa: BLE001 - the stored solve succeeded; a repeat only adds samples
            break
        secs.append(timer.seconds / n)
        nets.append(prior.network_seconds() / n)
    return json.dumps(
        {
            "call": batch[0].rid[:16],
            "seconds": [float(f"{v:.6g}") for v in secs],
            "net_seconds": [float(f"{v:.6g}") for v in nets],
        }
    )


def warmup(p, cell: Cell, solver, it: Item) -> None:
    """Solve the cell's first item ``warmup`` times (results discarded, counters reset)."""
    prior = p.priors[cell.prior]
    for _ in range(p.exp.warmup):
        with contextlib.suppress(Exception):
            solver.solve(
                it.problem.y,
                it.problem.operator,
                prior,
                sigma_y=cell.task.sigma_y,
                generator=[it.problem.solver_generator()],
            )
    prior.reset()
