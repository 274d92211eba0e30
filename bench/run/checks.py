"""Checks of a run before anything is written: the output folder, file-name lengths, each
solver against each prior it meets, and the grid's cost estimate.

Every refusal is a :class:`invbench.bench.config.ConfigError` naming the key path, file or folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .. import fsafety
from ..config import ConfigError, Experiment
from ..grid import Cell, steps_hint
from ..store import STORE_NAME
from . import paths as run_paths

__all__ = [
    "INPUT_ERRORS",
    "LARGE_NFE",
    "check_name_lengths",
    "check_out_dir",
    "check_pairs",
    "cost_estimate",
    "nfe_per_image",
    "one_line",
    "refuse_not_a_run",
]

INPUT_ERRORS = (ValueError, OSError, KeyError, TypeError, RuntimeError, ImportError)
"""Exceptions that building a part from bad input raises (reported as one ConfigError line)."""

LARGE_NFE = 1e9
"""A grid whose estimated network evaluations exceed this needs ``--allow-large-cost``."""

NAME_MAX = 255  # bytes per path component on common file systems
PATH_MAX = 4000  # bytes of an absolute path (Linux PATH_MAX is 4096; files inside need room)


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def check_out_dir(run_dir: Path, resume: bool, allow_nonempty: bool = False) -> None:
    """Raise ConfigError unless ``run_dir`` can be created/written (creates nothing that stays).

    A folder that holds files a run does not create and no results store is refused unless
    ``allow_nonempty`` (``--allow-nonempty-out``): a run never mixes its files with a user's.
    """
    run_dir = Path(run_dir)
    _check_path_length(run_dir)
    if run_dir.is_symlink() and not run_dir.exists():
        raise ConfigError(
            f"--out {run_dir}: is a symbolic link to a missing target ({os.readlink(run_dir)}); "
            "remove the link or choose another --out"
        )
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError(f"--out {run_dir}: exists and is not a directory")
        if (run_dir / STORE_NAME).exists() and not resume:
            raise ConfigError(
                f"--out {run_dir}: already holds a run; pass --resume to continue it or choose "
                "another --out"
            )
        refuse_not_a_run(run_dir, allow_nonempty, ConfigError)
        probe_dir = run_dir
    else:
        probe_dir = run_dir.parent
        while not probe_dir.exists():
            if probe_dir.is_symlink():
                raise ConfigError(
                    f"--out {run_dir}: {probe_dir} is a symbolic link to a missing target"
                )
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise ConfigError(f"--out {run_dir}: {probe_dir} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".invbench-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(
            f"--out {run_dir}: output folder is not writable ({e.strerror or e})"
        ) from None


def _check_path_length(run_dir: Path) -> None:
    long = [c for c in run_dir.parts if len(os.fsencode(c)) > NAME_MAX]
    if long or len(os.fsencode(str(run_dir.absolute()))) > PATH_MAX:
        what = (
            f"its component {long[0][:40]!r}... is {len(os.fsencode(long[0]))} bytes (limit "
            f"{NAME_MAX})"
            if long
            else f"the path is longer than {PATH_MAX} bytes"
        )
        raise ConfigError(f"--out {str(run_dir)[:80]}...: {what}; choose a shorter --out")


def refuse_not_a_run(run_dir: Path, allow_nonempty: bool, err: type[Exception]) -> None:
    """``err`` when ``run_dir`` holds no results store but other files (not a run folder)."""
    if allow_nonempty or (run_dir / STORE_NAME).exists():
        return
    foreign = fsafety.foreign_entries(run_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise err(
            f"--out {run_dir}: folder is not empty and holds no run ({shown}); choose a new or "
            "empty "
            "folder, or pass --allow-nonempty-out to write the run next to these files"
        )


def nfe_per_image(solver) -> float:
    """Network evaluations one image costs: the solver's ``nfe_estimate()`` when it has one, else
    :func:`invbench.bench.grid.steps_hint` (product of its step/level counts)."""
    est = getattr(solver, "nfe_estimate", None)
    return float(est()) if callable(est) else float(steps_hint(solver))


def cost_estimate(
    exp: Experiment, cells: list[Cell], built_solvers: dict, sizes: dict[str, int]
) -> float:
    """Estimated network evaluations of the whole grid: per cell, NFE per image x (images x seeds
    + warmup repeats)."""
    return float(
        sum(
            nfe_per_image(built_solvers[(c.entry, c.preset)])
            * (sizes[c.dataset] * len(exp.seeds) + exp.warmup)
            for c in cells
        )
    )


def check_pairs(
    exp: Experiment, cells: list[Cell], built_solvers: dict, built_priors: dict
) -> None:
    """Each solver's own checks against each prior it meets (e.g. steps <= the prior's grid)."""
    from invbench.solvers import SolverError

    seen = set()
    for c in cells:
        if (c.entry, c.preset, c.prior) in seen:
            continue
        seen.add((c.entry, c.preset, c.prior))
        try:
            built_solvers[(c.entry, c.preset)].validate(built_priors[c.prior])
        except (SolverError, ValueError) as e:
            raise ConfigError(
                f"solvers[{c.entry}] ({c.solver}, preset {c.preset}) with prior {c.prior}: "
                f"{one_line(e)}"
            ) from None


def check_name_lengths(exp: Experiment, cells: list[Cell], ids: dict[str, list[str]]) -> None:
    """ConfigError naming the key or image whose folder/file name (with the temp-name overhead of
    an atomic write) would exceed 255 bytes, or two image ids that would share one file name."""
    extra = len(".") + len(".XXXXXXXX") + len(fsafety.TMP_SUFFIX)
    seed = max(exp.seeds)
    for c in cells:
        comp = f"{run_paths.stem(c.solver)}__{run_paths.stem(c.preset)}"
        if len(comp.encode()) > NAME_MAX:
            raise ConfigError(
                f"solvers[{c.entry}]: label + preset make a folder name of "
                f"{len(comp.encode())} bytes "
                f"(limit {NAME_MAX}); use a shorter label"
            )
    for d, iids in ids.items():
        di = next(i for i, x in enumerate(exp.datasets) if x.name == d)
        clash = run_paths.colliding(iids)
        if clash is not None:
            raise ConfigError(
                f"datasets[{di}] ({d}): image ids {clash[0]!r} and {clash[1]!r} would share one "
                "file name "
                f"in the run folder ({run_paths.stem(clash[0])!r}); rename one of the files"
            )
        for iid in iids:
            n = len(f"{run_paths.stem(iid)}_s{seed}.png".encode()) + extra
            if n > NAME_MAX:
                raise ConfigError(
                    f"datasets[{di}] ({d}) image {iid[:60]!r}...: its file name in the run folder "
                    "would be "
                    f"{n} bytes (limit {NAME_MAX}); rename the file"
                )
