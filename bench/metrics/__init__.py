"""Quality metrics (docs/design.md §6; contract in docs/metrics.md).

Per-image metrics (:class:`Metric`) take a :class:`MetricContext` and return one ``(B,)``
float64 tensor per column; set metrics (:class:`SetMetric`) reduce a whole cell to one number.
A metric whose weights are not on disk (or do not match the official file) is still built,
with ``unavailable = "unavailable: <why>"``; it then computes nothing and the store records
NULL plus the reason. Numbers from unverified (stand-in) weights are never reported as real:
such a metric is unavailable unless built with ``allow_unverified=True`` (tests only), and
then ``verified`` is False.

Units: images in ``MetricContext`` are pixel space [0, 1] (NCHW); ``y`` and the exact
posterior live in model space [-1, 1]; ``sigma_y`` is in model units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import Tensor


class MetricError(ValueError):
    """Unknown metric name or bad metric option (one readable line)."""


@dataclass
class MetricContext:
    """Everything a per-image metric may need for one batch of reconstructions.

    x_hat: ``(B, C, H, W)`` reconstructions in pixel space, *unclipped*
        (``invbench.operators.conventions.model_to_pixel`` of the solver output).
    x_true: ``(B, C, H, W)`` ground truth in pixel space.
    y: model-space measurement ``(B, *operator.out_shape)``.
    operator: the forward model that produced ``y``.
    sigma_y: measurement noise std in model units.
    posterior: exact posterior ``p(x | y)`` (analytic priors only) with ``map()``, ``mean()``,
        ``log_prob(x)`` and ``sample(n, generator=)``, all in model space; None otherwise.
    """

    x_hat: Tensor
    x_true: Tensor
    y: Tensor
    operator: Any
    sigma_y: float
    posterior: Any | None = None


class Metric:
    """A per-image metric.

    ``name`` is the name used in configs, ``columns`` the store columns it fills,
    ``unavailable`` None when usable else ``"unavailable: <why>"``, ``verified`` False only for
    a metric explicitly built on unverified weights (tests), ``backbone`` what the numbers
    come from (recorded in table ``metric_status``).
    """

    name: str = ""
    columns: tuple[str, ...] = ()
    unavailable: str | None = None
    verified: bool = True
    backbone: str = ""
    needs_posterior: bool = False
    """True for a metric that reads ``ctx.posterior``: the harness builds the exact posterior for it
    and leaves it out (its columns NULL) where there is none (network prior, nonlinear operator)."""

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def status(self) -> dict:
        """Row for the store's ``metric_status`` table."""
        note = self.unavailable or ("UNVERIFIED weights: not a real value" if not self.verified else "")
        return {
            "metric": self.name,
            "available": int(self.unavailable is None),
            "note": note,
            "backbone": self.backbone,
        }


class SetMetric:
    """A metric over all images of a cell, returning ``(value | None, note)``.

    ``needs_posterior`` False: :meth:`compute` compares all reconstructions of the cell with the
    truths of the same images. True: :meth:`compute_posterior` compares, per image, the
    reconstructions over seeds with the exact posterior of that image's one measurement (the
    harness offers it for analytic priors under a fixed ``data_seed`` with >= 2 seeds only)."""

    name: str = ""
    unavailable: str | None = None
    verified: bool = True
    backbone: str = ""
    needs_posterior: bool = False

    def compute(self, recon, truth, **kwargs) -> tuple[float | None, str]:  # pragma: no cover
        raise NotImplementedError

    def compute_posterior(self, groups: Iterable[tuple[Tensor, Any]]) -> tuple[float | None, str]:
        """``groups``: per image, ``(samples (n, C, H, W) pixel units, exact posterior)``."""
        raise NotImplementedError(f"set metric {self.name!r} does not compare with a posterior")

    status = Metric.status


def _registry() -> dict[str, Callable[[dict], Metric]]:
    from .image import MSE, PSNR, SSIM, Consistency
    from .lpips_metric import LPIPSMetric
    from .posterior import PosteriorMetrics

    return {
        "psnr": lambda o: PSNR(),
        "ssim": lambda o: SSIM(),
        "mse": lambda o: MSE(),
        "consistency": lambda o: Consistency(),
        "lpips": lambda o: LPIPSMetric(**_sub(o, "lpips")),
        "posterior": lambda o: PosteriorMetrics(),
    }


def _set_registry() -> dict[str, Callable[[dict], SetMetric]]:
    from .fid import FIDMetric
    from .sliced_wasserstein import SlicedWassersteinMetric

    return {
        "fid": lambda o: FIDMetric(**_sub(o, "fid")),
        "sliced_wasserstein": lambda o: SlicedWassersteinMetric(**_sub(o, "sliced_wasserstein")),
    }


def _sub(options: dict, name: str) -> dict:
    sub = options.get(name, {}) if options else {}
    if not isinstance(sub, dict):
        raise MetricError(f"metrics option {name!r} must be a table of options, got {sub!r}")
    return dict(sub)


def names() -> tuple[str, ...]:
    """Per-image metric names accepted by :func:`build`."""
    return tuple(sorted(_registry()))


def set_names() -> tuple[str, ...]:
    """Set-metric names accepted by :func:`build_set`."""
    return tuple(sorted(_set_registry()))


def build(names: list[str], options: dict | None = None) -> list[Metric]:
    """Build per-image metrics by name.

    ``options`` maps a metric name to its keyword options, e.g.
    ``{"lpips": {"net": "vgg", "weights": "/path/vgg16-397923af.pth"}}``. Unknown names or
    options raise :class:`MetricError`. Missing weights do not raise: the metric is returned
    with ``unavailable`` set.
    """
    reg = _registry()
    out = []
    for n in names:
        if n not in reg:
            raise MetricError(f"unknown metric {n!r}; valid: {', '.join(sorted(reg))}")
        try:
            out.append(reg[n](options or {}))
        except TypeError as e:  # unknown keyword option
            raise MetricError(f"metric {n!r}: bad option ({e})") from None
    return out


def build_set(names: list[str], options: dict | None = None) -> list[SetMetric]:
    """Build set metrics (``"fid"``, ``"sliced_wasserstein"``) by name; see :func:`build`."""
    reg = _set_registry()
    out = []
    for n in names:
        if n not in reg:
            raise MetricError(f"unknown set metric {n!r}; valid: {', '.join(sorted(reg))}")
        try:
            out.append(reg[n](options or {}))
        except TypeError as e:
            raise MetricError(f"set metric {n!r}: bad option ({e})") from None
    return out


__all__ = [
    "Metric",
    "MetricContext",
    "MetricError",
    "SetMetric",
    "build",
    "build_set",
    "names",
    "set_names",
]
