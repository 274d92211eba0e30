"""One problem pipeline: measure a ground truth once, solve it, score it.

A :class:`Problem` is everything a solver is given and everything it is scored against: the truth
(pixel units and model units), the operator, the measurement ``y`` and ``sigma_y`` (model units),
the three seeds and the identifiers of the row it becomes. :func:`build_problem` is the one
function that builds it, with the one seeding scheme of the suite (docs/design.md §2,
"Randomness"): for task ``t``, dataset ``d`` and image ``i``

* ``operator_seed = derive_seed(data_part, "operator", t, d, i)`` builds the operator (masks, box
  positions, kernels differ per image and can be re-derived from the row);
* ``noise_seed = derive_seed(data_part, "noise", t, d, i)`` draws the measurement noise
  ``y = A(x) + sigma_y n``;
* ``solver_seed = derive_seed(solver_part, "solver", t, d, i)`` seeds the solver's generator.

``data_part`` and ``solver_part`` say which draw it is: a run uses its seed (or ``"dataN"`` under
a fixed ``data_seed``) and its seed, ``invbench tune`` uses ``"tune"`` for both, a study its own
names. The draws depend on the image's identity only, never on the batch it is solved in. A study
that scores many images under one exact posterior per operator passes ``operator_id``: images
that name one ``operator_id`` share one operator draw (``i`` above is then the operator id); the
runner and ``invbench tune`` draw one operator per image. Further draws of one image (a solver's
``k``-th posterior sample, exact reference samples) come from :meth:`Problem.seed_for` under the
same scheme. :func:`measure` is the one
place outside the operators that draws measurement noise; :func:`solve_and_score` is the one
solve-and-score step of tuning and the studies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = ["Problem", "Scored", "batched", "build_problem", "derive_seed", "generator", "measure",
           "problem_seeds", "solve_and_score"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the sha256 of ``parts`` joined by an ASCII unit separator
    (deterministic across processes and platforms, unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded ``seed`` (noise is drawn on the CPU, so it does not depend on
    the device the problem is solved on)."""
    return torch.Generator(device="cpu").manual_seed(seed)


def problem_seeds(task_name: str, dataset_name: str, image_id: str, data_part: Any,
                  solver_part: Any, operator_id: str | None = None) -> tuple[int, int, int]:
    """``(operator_seed, noise_seed, solver_seed)`` of one image (the module docstring's scheme);
    the operator is drawn for ``operator_id`` (default: the image)."""
    ident = (task_name, dataset_name, image_id)
    op_ident = ident if operator_id is None else (task_name, dataset_name, operator_id)
    return (derive_seed(data_part, "operator", *op_ident), derive_seed(data_part, "noise", *ident),
            derive_seed(solver_part, "solver", *ident))


def measure(operator, x_model: Tensor, sigma_y: float, noise_seeds: Sequence[int]) -> Tensor:
    """``y = A(x) + sigma_y n`` for a batch ``x_model`` (model units), image ``k`` measured alone
    with the noise of ``generator(noise_seeds[k])``: the measurement of an image does not depend
    on the batch it is in."""
    if len(noise_seeds) != x_model.shape[0]:
        raise ValueError(f"{len(noise_seeds)} noise seeds for a batch of {x_model.shape[0]} images")
    return torch.cat([operator.measure(x_model[k : k + 1], sigma_y, generator=generator(s))
                      for k, s in enumerate(noise_seeds)])


@dataclass(frozen=True, eq=False)
class Problem:
    """One measured image: what a solver gets and what it is scored against."""

    task: str                # task name (a run's ``[[tasks]] name``)
    dataset: str
    image_id: str
    x: Tensor                # truth, pixel units [0, 1], float64, (1, C, H, W), CPU
    x_model: Tensor          # truth, model units [-1, 1], on the problem's device and dtype
    operator: Any
    y: Tensor                # measurement, model units, (1, *operator.out_shape)
    sigma_y: float           # model units
    operator_seed: int
    noise_seed: int
    solver_seed: int

    @property
    def seeds(self) -> tuple[int, int, int]:
        """``(operator_seed, noise_seed, solver_seed)``."""
        return self.operator_seed, self.noise_seed, self.solver_seed

    def solver_generator(self) -> torch.Generator:
        """A fresh generator for the solver (each call starts the same stream again)."""
        return generator(self.solver_seed)

    def seed_for(self, kind: str, part: Any) -> int:
        """Seed of a further draw ``kind`` of this image under ``part``
        (``derive_seed(part, kind, task, dataset, image_id)``)."""
        return derive_seed(part, kind, self.task, self.dataset, self.image_id)

    def with_solver_part(self, part: Any) -> Problem:
        """This problem (same operator and measurement) with the solver seed of ``part``: the
        ``k``-th of several solver draws on one measurement."""
        return replace(self, solver_seed=self.seed_for("solver", part))


def build_problem(task, dataset_name: str, image_id: str, x_pixel: Tensor, data_part: Any,
                  solver_part: Any, *, operator_id: str | None = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Problem:
    """Build the operator of ``task`` (a :class:`invbench.bench.config.TaskSpec`: ``name``,
    ``operator``, ``params``, ``sigma_y``) for image ``image_id`` of ``dataset_name`` (or for
    ``operator_id``, shared by the images that name it) and measure ``x_pixel`` (pixel units,
    ``(C, H, W)`` or ``(1, C, H, W)``; values outside [0, 1] are kept) through it, on ``device``
    in ``dtype``, with the seeds of :func:`problem_seeds`."""
    from invbench.operators.conventions import pixel_to_model

    from invbench import operators

    x = torch.as_tensor(x_pixel).detach().to(device="cpu", dtype=torch.float64)
    x = x if x.ndim == 4 else x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError(f"build_problem measures one image, got a batch of {x.shape[0]}")
    s_op, s_noise, s_sol = problem_seeds(task.name, dataset_name, image_id, data_part, solver_part,
                                         operator_id)
    op = operators.build(task.operator, image_shape=tuple(x.shape[1:]), generator=generator(s_op),
                         **task.params)
    op.to(device=device, dtype=dtype)
    x_model = pixel_to_model(x).to(device=device, dtype=dtype)
    y = measure(op, x_model, task.sigma_y, [s_noise])
    return Problem(task.name, dataset_name, image_id, x, x_model, op, y, float(task.sigma_y),
                   s_op, s_noise, s_sol)


def batched(items: Iterable[T], batch_size: int | None = None,
            problem_of: Callable[[T], Problem] = lambda it: it) -> Iterator[list[T]]:
    """Consecutive ``items`` in batches of at most ``batch_size`` (None: no limit) whose problems
    (``problem_of(item)``) share one operator (:func:`invbench.operators.base.same_operator`,
    which compares declared state) and one ``sigma_y``: what one solver call can take."""
    from invbench.operators.base import same_operator

    batch: list[T] = []
    for it in items:
        if batch:
            first, p = problem_of(batch[0]), problem_of(it)
            full = batch_size is not None and len(batch) >= batch_size
            if full or p.sigma_y != first.sigma_y or not same_operator(first.operator, p.operator):
                yield batch
                batch = []
        batch.append(it)
    if batch:
        yield batch


@dataclass(frozen=True, eq=False)
class Scored:
    """The result of :func:`solve_and_score`: ``x_hat`` (model units, as the solver returned
    it, detached) and ``psnr`` (dB, pixel units, clipped to [0, 1]) per problem."""

    x_hat: Tensor
    psnr: list[float]


def solve_and_score(solver, problems: Sequence[Problem], prior) -> Scored:
    """Solve ``problems`` in one batched call (they must share one operator and ``sigma_y``:
    the first problem's are used), each image with its own :meth:`Problem.solver_generator`, and
    score each reconstruction by its PSNR against the pixel-unit truth. Solver exceptions
    (``SolverSkip``, ``SolverDiverged``, ...) propagate to the caller."""
    from invbench.bench.metrics.image import psnr
    from invbench.operators.base import same_operator
    from invbench.operators.conventions import model_to_pixel

    if not problems:
        raise ValueError("solve_and_score needs at least one problem")
    first = problems[0]
    if any(p.sigma_y != first.sigma_y for p in problems):
        raise ValueError("problems solved in one call must share sigma_y")
    if any(not same_operator(p.operator, first.operator) for p in problems[1:]):
        raise ValueError("problems solved in one call must share one operator (same state())")
    y = torch.cat([p.y for p in problems])
    x_hat = solver.solve(y, first.operator, prior, sigma_y=first.sigma_y,
                         generator=[p.solver_generator() for p in problems]).detach()
    x_true = torch.cat([p.x for p in problems])
    values = psnr(model_to_pixel(x_hat.to(torch.float64)).cpu(), x_true)
    return Scored(x_hat, [float(v) for v in values])
