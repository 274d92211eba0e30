"""Who may write a run folder, and what of it is already done.

* :func:`lock`: the exclusive ``RUN_DIR/.lock`` (``fcntl.flock``) a run holds while it writes; a
  second run on the same folder is refused naming the holder.
* :func:`refuse_existing`: a folder that holds a store of another config, or any store without
  ``--resume``, or a store whose recorded input hashes differ from this run's, is refused before
  anything is written (the store is read read-only).
* :func:`done_with_files`: the rows a resumed run does not redo: finished (``ok``/``skipped``)
  rows whose files are all present; a finished row whose PNG (or needed ``.npy``) vanished is
  recomputed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from .. import fsafety, input_hashes
from ..config import Experiment
from ..store import STORE_NAME, Store, existing_meta
from .record import OPERATOR_HASHING

__all__ = [
    "RunError",
    "done_with_files",
    "lock",
    "refuse_changed_inputs",
    "refuse_existing",
    "remove_new_dirs",
]


class RunError(RuntimeError):
    """The run cannot proceed (RUN_DIR locked, config changed under --resume, ...); one line."""


@contextlib.contextmanager
def lock(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``run_dir/.lock`` (RunError naming the holder when taken)."""
    # held open for the whole run: the flock lives on it
    f = open(run_dir / ".lock", "a+")  # noqa: SIM115
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            who = fsafety.describe_holders(run_dir / ".lock").strip(" ()").removeprefix("held ")
            raise RunError(
                f"{run_dir}: another invbench run is writing this run directory "
                f"(lock held{' ' + who if who else ''})"
            ) from None
        yield
    finally:
        f.close()


def refuse_existing(
    run_dir: Path, exp: Experiment, resume: bool, hashes: dict[str, str] | None = None
) -> None:
    """RunError if ``run_dir`` holds a store of another config, or any store without ``resume``,
    or (``hashes`` given) a store whose recorded input hashes differ from ``hashes`` (other data,
    weights or operator assets behind the same config); reads the store read-only (a refused run
    writes nothing). A corrupt store or one of an older schema is a StoreError."""
    path = run_dir / STORE_NAME
    if not path.exists():
        return
    meta = existing_meta(path)  # a store stopped before its tables existed: {} (nothing to compare)
    if meta.get("config_hash") not in (None, exp.config_hash):
        raise RunError(
            f"{run_dir}: holds a run of a different config (hash {meta.get('config_hash')} vs "
            f"{exp.config_hash}); --resume needs the same config — use another --out"
        )
    if not resume:
        raise RunError(f"{run_dir}: already holds a run; pass --resume to continue it")
    refuse_changed_inputs(run_dir, meta, hashes)


def _state_key(key: str) -> bool:
    """Input hashes of a declared state (operators, networks' state dicts): their encoding changed."""
    return ".operator[" in key or (key.startswith("priors.") and key.endswith(".state"))


def refuse_changed_inputs(
    run_dir: Path, meta: dict[str, str], hashes: dict[str, str] | None
) -> None:
    """RunError naming the inputs whose content hash differs from the one the run recorded."""
    if hashes is None or "input_hashes" not in meta:
        return  # nothing recorded yet (killed before its metadata was written)
    try:
        old = json.loads(meta["input_hashes"])
    except ValueError:
        old = {}
    diff = input_hashes.changed(old, hashes)
    scheme = meta.get("operator_hashing")
    if diff and scheme != OPERATOR_HASHING and all(_state_key(k) for k in diff):
        how = ("hashed operators by their attributes" if scheme is None else
               "encoded operator and network states without framing")
        raise RunError(
            f"{run_dir}: --resume refused: the run was started by an earlier invbench that {how}; "
            "states are now hashed in a prefix-free encoding, so its hashes "
            f"({', '.join(diff[:2])}{' ...' if len(diff) > 2 else ''}) cannot be "
            "compared — finish it with the version that started it, or start a new run in another "
            "--out"
        )
    if diff:
        shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise RunError(
            f"{run_dir}: --resume refused: inputs changed since the run started ({shown}); its "
            "finished "
            "rows were computed on the old contents — restore them or start a new run in another "
            "--out"
        )


def done_with_files(store: Store, run_dir: Path, need_npy: bool) -> tuple[set[str], list[str]]:
    """Row ids finished in ``store`` (``ok``/``skipped``) whose files are all present, and the
    relative paths of missing files (their rows are recomputed: they leave the done set)."""
    done, missing = set(), []
    for rid, rel in store.done().items():
        if rel:  # an ok row (a skipped row has no file)
            want = [rel] + ([rel[:-4] + ".npy"] if need_npy and rel.endswith(".png") else [])
            lost = [w for w in want if not (run_dir / w).is_file()]
            if lost:
                missing.append(lost[0])
                continue
        done.add(rid)
    return done, missing


def remove_new_dirs(store_dir: Path, new_dirs: list[Path]) -> None:
    """Remove the lock file and the folders this run created, when they hold nothing else."""
    if store_dir in new_dirs:
        with contextlib.suppress(FileNotFoundError):
            (store_dir / ".lock").unlink()
    for d in sorted(new_dirs, key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only succeeds on an empty folder
