"""File safety of a run folder: atomic writes, cleanup of the suite's own temp files only, the
list of names a run creates, and storage faults reported with their path.

* :func:`atomic_write_bytes` writes ``path`` through a temp file in the same folder named
  ``.<final name>.<random>.invbench-tmp``, fsyncs it and ``os.replace``\\ s it, so a final name
  never holds a half-written file.
* :func:`clean_own_temp_files` removes, inside ``RUN_DIR/recon``, ``meas`` and ``truth`` only,
  files whose *exact* name has that form (or the form older versions used,
  ``.<name>.png|npy.<8 chars>.tmp``); nothing else in the run folder or outside it is touched.
* :data:`RUN_ENTRIES` are the top-level names a run creates; :func:`foreign_entries` lists what
  else a folder holds (a run refuses such a folder unless told otherwise).
* :class:`StorageFault`: a write failed because of the storage (disk full, I/O error, file too
  large, store locked by another process); one line naming the path and what to do.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

__all__ = [
    "RUN_ENTRIES",
    "TMP_SUFFIX",
    "StorageFault",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_own_temp_files",
    "current_umask",
    "describe_holders",
    "foreign_entries",
    "is_own_temp",
    "lock_holders",
    "storage_fault",
]

TMP_SUFFIX = ".invbench-tmp"
DATA_SUBDIRS = ("recon", "meas", "truth")
RUN_ENTRIES = frozenset({
    "results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "results.sqlite-journal", ".lock",
    *DATA_SUBDIRS, "shards", "submitit",
})
"""Top-level names that ``invbench run`` creates in a run folder."""

_OWN_TMP = re.compile(r"^\..+\.(png|npy)\.[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX) + r"$")
_LEGACY_TMP = re.compile(r"^\..+\.(png|npy)\.[a-z0-9_]{8}\.tmp$")
_PROBE = re.compile(r"^\.invbench-probe-[A-Za-z0-9_]+$")
_FAULT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS}


class StorageFault(RuntimeError):
    """A write failed because of the storage; ``str(e)`` names the path and what to do."""


def storage_fault(e: BaseException, path: str | os.PathLike, resume_hint: bool = True) -> StorageFault | None:
    """A :class:`StorageFault` for ``e`` when it is a storage error (ENOSPC, EDQUOT, EIO, EFBIG,
    EROFS, SQLite 'disk is full' / 'disk I/O error' / 'locked'), else None."""
    what = None
    if isinstance(e, OSError) and e.errno in _FAULT_ERRNOS:
        what = os.strerror(e.errno)
        path = e.filename or path
    else:
        msg = str(e).lower()
        if "disk is full" in msg or "disk i/o error" in msg:
            what = str(e)
        elif "database is locked" in msg or "database table is locked" in msg:
            who = describe_holders(path, f"{path}-wal", f"{path}-shm")
            return StorageFault(f"{path}: the results store is locked by another process{who} (an SQLite writer "
                                "that is not this run); close that program and "
                                f"rerun{' with --resume' if resume_hint else ''}")
    if what is None:
        return None
    hint = "finished rows are kept; free space (or fix the disk) and rerun with --resume" if resume_hint \
        else "free space (or fix the disk) and rerun"
    return StorageFault(f"{path}: {what} (is the disk full?); {hint}")


def lock_holders(*paths: str | os.PathLike) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the processes holding a lock (flock or POSIX) on any of
    ``paths``, read from ``/proc/locks`` by device and inode; ``[]`` where that is not available
    (non-Linux) or no lock is held."""
    keys = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        keys.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    pids: list[int] = []
    try:
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if "->" in parts:   # a blocked waiter, not a holder
                    continue
                try:
                    pid, dev = int(parts[4]), parts[5].split(":")
                    key = (int(dev[0], 16), int(dev[1], 16), int(dev[2]))
                except (IndexError, ValueError):
                    continue
                if key in keys and pid not in pids:
                    pids.append(pid)
    except OSError:
        return []
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmd = ""
        out.append((pid, cmd[:120]))
    return out


def describe_holders(*paths: str | os.PathLike) -> str:
    """`` (held by pid 123: python -m invbench run ...)`` for :func:`lock_holders`, or ``""``."""
    me = os.getpid()
    hs = lock_holders(*paths)
    others = [(p, c) for p, c in hs if p != me]
    if others:
        return " (held by " + ", ".join(f"pid {p}: {c}" if c else f"pid {p}" for p, c in others[:3]) + ")"
    return " (held by another connection of this process)" if hs else ""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``.<name>.<random>.invbench-tmp`` in the same folder, fsync,
    ``os.replace``; the temp file is removed on any failure. An OSError names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())   # mkstemp's 0600 would hide shared runs from the group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def current_umask() -> int:
    """The process umask (read from ``/proc/self/status`` where available, so that no other
    thread ever sees a changed umask; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_own_temp(name: str) -> bool:
    """True for the exact temp-file names :func:`atomic_write_bytes` creates for ``.png``/``.npy``
    files (and the ``.<name>.<8 chars>.tmp`` names of earlier versions)."""
    return bool(_OWN_TMP.match(name) or _LEGACY_TMP.match(name))


def clean_own_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the suite's own temp files (:func:`is_own_temp`) under ``RUN_DIR/recon``, ``meas``
    and ``truth`` (symbolic links are not followed); returns what was removed."""
    removed = []
    for sub in DATA_SUBDIRS:
        top = Path(run_dir) / sub
        if top.is_symlink() or not top.is_dir():
            continue
        for folder, _dirs, files in os.walk(top):
            for name in files:
                p = Path(folder) / name
                if is_own_temp(name) and not p.is_symlink():
                    try:
                        p.unlink()
                        removed.append(p)
                    except OSError:
                        pass
    return removed


def foreign_entries(run_dir: str | os.PathLike) -> list[str]:
    """Sorted top-level names in ``run_dir`` that do not belong to a run (``[]`` when the folder
    does not exist).

    Without a results store nothing in the folder can be a run's: a ``recon/`` or ``truth/``
    there is somebody else's (or a deleted run's leftovers), so every entry is foreign except an
    empty ``.lock`` (what a run killed before creating its store leaves) and write probes.
    """
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    if "results.sqlite" not in names:
        lock = Path(run_dir) / ".lock"
        return sorted(n for n in names if not _PROBE.match(n)
                      and not (n == ".lock" and not lock.is_symlink() and lock.is_file() and lock.stat().st_size == 0))
    return sorted(n for n in names if n not in RUN_ENTRIES and not _PROBE.match(n))
