"""The rows of a batch: the identity columns every row carries, and the per-image metric columns
of a solved batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import preset_provenance
from ..grid import Cell
from ..problem import Problem
from ..store import row_id
from . import paths as run_paths

__all__ = ["Item", "base_row", "item", "metric_columns", "recon_rel"]


@dataclass(frozen=True)
class Item:
    """One row to compute: the measured problem of (task, dataset, image), its seed, its row id."""

    problem: Problem
    seed: int
    rid: str

    @property
    def image_id(self) -> str:
        return self.problem.image_id


def item(p, cell: Cell, problem: Problem, seed: int) -> Item:
    """The :class:`Item` of ``problem`` under ``seed`` in ``cell`` of prepared run ``p``."""
    t = cell.task
    rid = row_id(
        p.exp.config_hash,
        cell.solver,
        cell.preset,
        t.name,
        cell.dataset,
        cell.prior,
        problem.image_id,
        seed,
    )
    return Item(problem, seed, rid)


def recon_rel(cell: Cell, image_id: str, seed: int, ext: str) -> str:
    """The reconstruction's path in the run folder (:func:`invbench.bench.run.paths.recon_rel`)."""
    return run_paths.recon_rel(
        cell.solver, cell.preset, cell.task.name, cell.dataset, cell.prior, image_id, seed, ext
    )


def base_row(p, cell: Cell, it: Item, env: dict) -> dict:
    """The columns every row of ``it`` carries, whatever its status."""
    seeds = it.problem.seeds
    return {
        "row_id": it.rid,
        "experiment": p.exp.name,
        "solver": cell.solver,
        "preset": cell.preset,
        "task": cell.task.name,
        "operator": cell.task.operator,
        "noise_sigma": cell.task.noise_sigma,
        "sigma_y": cell.task.sigma_y,
        "dataset": cell.dataset,
        "prior": cell.prior,
        "image_id": it.image_id,
        "seed": it.seed,
        "device": env["device"],
        "torch_version": env["torch_version"],
        "config_hash": p.exp.config_hash,
        "code_version": env["code_version"],
        "operator_seed": seeds[0],
        "noise_seed": seeds[1],
        "solver_seed": seeds[2],
        "preset_provenance": _provenance(p, cell),
    }


def _provenance(p, cell: Cell) -> str:
    """The row's ``preset_provenance``: the preset's origin, after the solver's ``FIDELITY``."""
    from invbench import solvers

    spec = p.exp.solvers[cell.entry] if 0 <= cell.entry < len(p.exp.solvers) else None
    fidelity = solvers.get(spec.name).FIDELITY if spec is not None else ""
    return preset_provenance(cell.preset, spec.provenance if spec is not None else "", fidelity)


def metric_columns(
    p, cell: Cell, batch: list[Item], x_hat_pix: torch.Tensor, y: torch.Tensor
) -> dict[str, list]:
    """Per-image metric columns of a solved batch (``None`` for a non-finite value). A metric that
    declares ``needs_posterior`` gets the exact posterior of the batch's measurement (analytic
    prior, linear operator) and is left out where there is none."""
    from ..metrics import MetricContext

    prior = p.priors[cell.prior]
    op = batch[0].problem.operator
    x_true = torch.cat([it.problem.x for it in batch]).to(
        device=x_hat_pix.device, dtype=x_hat_pix.dtype
    )
    posterior = None
    wanted = any(m.needs_posterior and m.unavailable is None for m in p.metrics)
    if wanted and "analytic" in prior.capabilities and op.is_linear:
        posterior = prior.inner.posterior(op, y, cell.task.sigma_y)
    ctx = MetricContext(
        x_hat=x_hat_pix,
        x_true=x_true,
        y=y,
        operator=op,
        sigma_y=cell.task.sigma_y,
        posterior=posterior,
    )
    out: dict[str, list] = {}
    for m in p.metrics:
        if m.unavailable is not None or (m.needs_posterior and posterior is None):
            continue
        for col, v in m.compute(ctx).items():
            v = torch.as_tensor(v).detach().reshape(-1).cpu().double().tolist()
            out[col] = [None if not math.isfinite(x) else float(x) for x in v]
    return out
