"""Which files of a run folder a run created, so that replacing a run deletes those and nothing
else.

:func:`replace_plan` reads the store (read-only) and lists every file under the run's own
top-level entries (:data:`invbench.bench.fsafety.RUN_ENTRIES`); a file the run did not write — a
user's notes inside ``recon/``, a PNG dropped into ``truth/`` — makes the plan refuse, naming it.
:func:`remove` then deletes exactly the planned files and the folders they leave empty.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import fsafety
from .. import store as store_mod
from . import paths as run_paths

__all__ = ["ReplacePlan", "refuse_foreign", "remove", "replace_older_run", "replace_plan"]

_STORE_FILES = (
    "results.sqlite",
    "results.sqlite-wal",
    "results.sqlite-shm",
    "results.sqlite-journal",
)
_SUBMITIT = re.compile(
    r"^[0-9]+(_[0-9]+)*_(submitted\.pkl|result\.pkl|log\.out|log\.err|submission\.sh)$"
)


@dataclass
class ReplacePlan:
    """Files to delete (absolute paths), the top-level entries they belong to, and files found
    inside those entries that no run wrote (a non-empty ``foreign`` means: refuse)."""

    files: list[Path]
    entries: list[str]
    foreign: list[Path]


def _owned(run_dir: Path, rows: list[tuple]) -> set[Path]:
    owned = {run_dir / n for n in (*_STORE_FILES, ".lock")}
    for rel, task, dataset, iid, seed in rows:
        if rel:
            owned |= {run_dir / rel, run_dir / (rel[:-4] + ".npy")}
        for name in (run_paths.stem, run_paths.legacy_stem):
            owned.add(run_dir / f"truth/{name(dataset)}/{name(iid)}.png")
            owned.add(run_dir / f"meas/{name(task)}/{name(dataset)}/{name(iid)}_s{seed}.png")
    return owned


def _is_owned(path: Path, run_dir: Path, owned: set[Path]) -> bool:
    if path in owned or fsafety.is_own_temp(path.name):
        return True
    rel = path.relative_to(run_dir).parts
    if rel[0] == "shards":  # shards/<k>/results.sqlite*, .lock
        return len(rel) == 3 and rel[1].isdigit() and rel[2] in (*_STORE_FILES, ".lock")
    if rel[0] == "submitit":
        return len(rel) == 2 and bool(_SUBMITIT.match(rel[1]))
    return False


def replace_plan(run_dir: str | os.PathLike) -> ReplacePlan:
    """What deleting the run in ``run_dir`` would remove (see the module doc); the run folder
    itself and every entry that is not a run's (a user's ``notes.txt``, ``report/``) stay."""
    run_dir = Path(run_dir)
    owned = _owned(run_dir, store_mod.file_keys(run_dir / "results.sqlite"))  # read-only
    files, foreign, entries = [], [], []
    for name in sorted(fsafety.RUN_ENTRIES):
        top = run_dir / name
        if not (top.exists() or top.is_symlink()):
            continue
        entries.append(name)
        if top.is_symlink() or not top.is_dir():
            (files if _is_owned(top, run_dir, owned) and not top.is_symlink() else foreign).append(
                top
            )
            continue
        for folder, dirs, names in os.walk(top):  # links are listed, never followed
            for n in names + [d for d in dirs if (Path(folder) / d).is_symlink()]:
                f = Path(folder) / n
                (files if not f.is_symlink() and _is_owned(f, run_dir, owned) else foreign).append(
                    f
                )
    return ReplacePlan(files, entries, foreign)


def remove(plan: ReplacePlan, run_dir: str | os.PathLike) -> None:
    """Delete the plan's files (never a foreign one), then the folders under the run's entries
    that are left empty."""
    if plan.foreign:
        raise ValueError(f"{plan.foreign[0]}: not a file a run wrote; refusing to delete")
    run_dir = Path(run_dir)
    for f in plan.files:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    for name in plan.entries:
        top = run_dir / name
        if top.is_dir() and not top.is_symlink():
            for folder, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(Path(t[0]).parts)):
                with contextlib.suppress(OSError):
                    Path(folder).rmdir()  # only empty folders go


def refuse_foreign(out: Path, what: str) -> ReplacePlan:
    """The replace plan of the run in ``out`` (``what`` names it, e.g. "older demo run (...)");
    ValueError (exit 2) naming the files inside its folders that no run wrote."""
    plan = replace_plan(out)
    if plan.foreign:
        shown = ", ".join(str(f.relative_to(out)) for f in plan.foreign[:3])
        more = f" and {len(plan.foreign) - 3} more" if len(plan.foreign) > 3 else ""
        raise ValueError(
            f"--out {out}: holds an {what} whose folders also hold files no run wrote "
            f"({shown}{more}); move them or choose another --out"
        )
    return plan


def replace_older_run(out: Path, what: str) -> None:
    """Delete the run in ``out`` — only the files it wrote — under the folder's lock, printing
    what goes; refused while another run holds the lock, or when its folders hold anything else."""
    from .resume import lock

    with lock(out):
        plan = refuse_foreign(out, what)
        print(
            f"invbench: replacing the {what} in {out}: removing {len(plan.files)} files it wrote "
            f"({', '.join(plan.entries)}); nothing else in the folder is touched",
            file=sys.stderr,
        )
        remove(plan, out)
