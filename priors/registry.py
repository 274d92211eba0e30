"""Name -> builder registry for priors (docs/design.md §4, §9)."""

from __future__ import annotations

from collections.abc import Callable

from .base import Prior, PriorError

_BUILDERS: dict[str, Callable[..., Prior]] = {}


def register(name: str):
    """Register ``fn(**kwargs) -> Prior`` under ``name``; a name ending in ``-*`` is a family
    (``gmm-synthetic-*`` receives the suffix as ``suffix=``)."""

    def deco(fn):
        if name in _BUILDERS:
            raise RuntimeError(f"prior {name!r} registered twice")
        _BUILDERS[name] = fn
        return fn

    return deco


def build(name: str, **kwargs) -> Prior:
    """Build prior ``name`` (e.g. ``"gmm-digits"``, ``"adm-ffhq"`` with ``checkpoint=path``)."""
    if name in _BUILDERS:
        p = _BUILDERS[name](**kwargs)
    else:
        fam = [k for k in _BUILDERS if k.endswith("-*") and name.startswith(k[:-1])]
        if not fam:
            raise PriorError(f"unknown prior {name!r}; valid: {', '.join(sorted(_BUILDERS))}")
        p = _BUILDERS[fam[0]](suffix=name[len(fam[0]) - 1 :], **kwargs)
    p.name = name
    return p


def names() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))
