"""Name -> builder registry for task presets (docs/design.md §3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Operator, OperatorError

Builder = Callable[..., Operator]
_BUILDERS: dict[str, Builder] = {}
_FAMILIES: dict[str, str] = {}

FAMILIES = ("inpainting", "super_resolution", "deblurring", "colorization", "phase_retrieval", "denoising")
"""The task families a preset declares (solvers with per-task released settings choose by family,
never by the preset's name)."""


def register(name: str, *, family: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(image_shape, generator, **overrides) -> Operator`` as preset
    ``name`` of task family ``family`` (one of :data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise ValueError(f"operator preset {name!r}: unknown family {family!r}; valid: {', '.join(FAMILIES)}")

    def deco(fn: Builder) -> Builder:
        if name in _BUILDERS:
            raise RuntimeError(f"operator preset {name!r} registered twice")
        _BUILDERS[name] = fn
        _FAMILIES[name] = family
        return fn

    return deco


def family(name: str) -> str:
    """The declared task family of preset ``name``."""
    if name not in _FAMILIES:
        raise OperatorError(f"unknown operator preset {name!r}; valid: {', '.join(sorted(_BUILDERS))}")
    return _FAMILIES[name]


def build(
    name: str,
    image_shape: tuple[int, int, int] = (3, 256, 256),
    generator: torch.Generator | None = None,
    **overrides,
) -> Operator:
    """Build task preset ``name`` for images of shape ``(C, H, W)``.

    Random parts (masks, box positions, kernels) come only from ``generator`` (a fresh
    ``torch.Generator().manual_seed(0)`` when None), so one seed always gives one operator.
    ``overrides`` are preset parameters (e.g. ``ratio=0.5`` for ``inpaint_random``).
    """
    if name not in _BUILDERS:
        raise OperatorError(f"unknown operator preset {name!r}; valid: {', '.join(sorted(_BUILDERS))}")
    if len(image_shape) != 3:
        raise OperatorError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    op = _BUILDERS[name](tuple(int(s) for s in image_shape), generator, **overrides)
    op.name = name
    return op


def names() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))
