"""What the parts of ``invbench tune`` share: its input error and one validation case (a problem
and the prior it is solved with)."""

from __future__ import annotations

from dataclasses import dataclass

from .problem import Problem


class TuneError(ValueError):
    """Bad tune input; ``str(e)`` is one line naming the field or file."""


@dataclass
class Case:
    """One validation problem of the study and the prior it is solved with."""

    problem: Problem  # float64 on the CPU
    prior: object
    image_sha256: str


__all__ = ["Case", "TuneError"]
