"""Writing a report folder as a whole: build it aside, then swap it in.

A report is built in a staging folder next to ``--out`` (``.<name>.<random>.invbench-report-tmp``,
created with the umask's permissions and flock-ed while it is written), with a marker file
:data:`MARKER` saying that this tool made it. When every file is written the staging folder
takes the place of ``--out`` in one step (``renameat2(RENAME_EXCHANGE)``: the old and the new
folder swap names atomically; a plain ``rename`` when there was no report yet), and the old
report, now under the staging name, is deleted. A kill at any moment therefore leaves ``--out``
holding the old complete report or the new one, never a mix, and figures the new report does not
make are gone with the old folder. On a file system without ``RENAME_EXCHANGE`` the old folder
is first renamed aside (``.<name>.<random>.invbench-report-old``) and the new one renamed in: a
kill between the two renames leaves no folder under ``--out`` for that instant's reader.

Leftovers of killed reports (those two name forms, next to ``--out``, not locked by a live
report) are deleted by the next report to the same ``--out``.

An existing ``--out`` is replaced only when it is a report: it holds :data:`MARKER`, or it is
empty, or it holds only what reports of earlier versions wrote (``index.html``,
``leaderboard.*``, ``figures/`` of PNG/PDF and ``figures.json``). Any other folder is refused
(:class:`RunDirError`, exit 2): a report never deletes a user's files. Storage errors while
writing (no space, read-only file system, permission denied, ...) become one
:class:`RunDirError` line naming ``--out`` and the file, and the staging folder is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..fsafety import current_umask
from .data import RunDirError

__all__ = ["MARKER", "check_replaceable", "is_report_folder", "staged_report"]

MARKER = ".invbench-report"
MARKER_TEXT = ("Made by `invbench report`. The next report to this folder replaces the folder as a whole; "
               "do not keep other files here.\n")
STAGE_SUFFIX = ".invbench-report-tmp"
OLD_SUFFIX = ".invbench-report-old"
LEGACY_FILES = frozenset({"index.html", "leaderboard.md", "leaderboard.tex", "leaderboard.csv",
                          "leaderboard_matched_nfe.csv", "main.md", "main.tex"})
_OWN_WRITE_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.invbench-tmp$")   # fsafety.atomic_write_bytes' temp names
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _legacy_figures_ok(folder: Path) -> bool:
    """True when ``folder`` (a report's ``figures/``) holds only figure files and the manifest."""
    for e in os.scandir(folder):
        if e.is_symlink() or not e.is_file():
            return False
        if not (e.name.endswith((".png", ".pdf")) or e.name == "figures.json" or _OWN_WRITE_TMP.match(e.name)):
            return False
    return True


def is_report_folder(path: Path) -> bool:
    """True when ``path`` (an existing folder) may be replaced by a report (see module docstring)."""
    marker = path / MARKER
    if marker.is_file() and not marker.is_symlink():
        return True
    names = set(os.listdir(path))
    if not names:
        return True
    others = {n for n in names if n not in LEGACY_FILES and n != "figures" and not _OWN_WRITE_TMP.match(n)}
    if others or not {"index.html", "leaderboard.md"} <= names:
        return False
    figs = path / "figures"
    return "figures" not in names or (figs.is_dir() and not figs.is_symlink() and _legacy_figures_ok(figs))


def report_target(out_dir: Path) -> Path:
    """The folder a report to ``out_dir`` replaces: ``out_dir``, or the folder a symbolic link
    ``out_dir`` points at (the link stays and shows the new report)."""
    return out_dir.resolve() if out_dir.is_symlink() else out_dir


def check_replaceable(out_dir: Path) -> None:
    """RunDirError unless ``out_dir`` is absent or a folder a report may replace."""
    target = report_target(out_dir)
    try:
        if target.is_dir() and not is_report_folder(target):
            raise RunDirError(f"report --out {out_dir}: exists and is not a report made by invbench report (no "
                              f"{MARKER} "
                              "file and other files than a report's); choose a new or empty folder — a report "
                              "replaces its folder as a whole")
    except OSError as e:
        raise _storage_error(out_dir, e) from None


def _storage_error(out_dir: Path, e: OSError, stage: Path | None = None) -> RunDirError:
    """One line naming ``--out`` and the file (a file of the staging folder under its final name)."""
    where = str(e.filename) if e.filename is not None else str(out_dir)
    if stage is not None and (where == str(stage) or where.startswith(str(stage) + os.sep)):
        where = str(out_dir) + where[len(str(stage)):]
    why = os.strerror(e.errno) if e.errno else (e.strerror or type(e).__name__)
    return RunDirError(f"report --out {out_dir}: cannot write {where}: {why}")


def _stale(target: Path) -> list[Path]:
    """Staging and set-aside folders of earlier reports to ``target`` (exact name forms)."""
    pat = re.compile(r"^\." + re.escape(target.name) + r"\.[A-Za-z0-9_]+(" + re.escape(STAGE_SUFFIX) + "|"
                     + re.escape(OLD_SUFFIX) + r")$")
    try:
        return sorted(p for p in target.parent.iterdir() if pat.match(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _remove_stale(target: Path) -> None:
    """Delete the leftovers of killed reports to ``target`` that no live report holds locked."""
    for p in _stale(target):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # fails while a report writes into it
        except OSError:
            os.close(fd)
            continue
        try:
            shutil.rmtree(p, ignore_errors=True)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names of folders ``a`` and ``b`` atomically; False when the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(stage: Path, target: Path) -> None:
    """Put ``stage`` in the place of ``target`` and delete what was there (see module docstring)."""
    if not os.path.lexists(target):
        os.rename(stage, target)
        return
    if _exchange(stage, target):
        shutil.rmtree(stage, ignore_errors=True)   # the old report, now under the staging name
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=OLD_SUFFIX, dir=target.parent))
    os.rename(target, aside / "old")
    os.rename(stage, target)
    shutil.rmtree(aside, ignore_errors=True)


def _new_parents(folder: Path) -> list[Path]:
    """The missing folders on the way to ``folder`` (deepest last)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


@contextlib.contextmanager
def staged_report(out_dir: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to ``out_dir``'s target; on success swap it in, on any
    failure delete it (and the parent folders it created). OSErrors become :class:`RunDirError`."""
    target = report_target(out_dir)
    created = _new_parents(target.parent)
    stage = None
    fd = -1
    done = False
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(target)
            stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGE_SUFFIX, dir=target.parent))
            os.chmod(stage, 0o777 & ~current_umask())   # mkdtemp's 0700 would hide a shared report
            fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (stage / MARKER).write_text(MARKER_TEXT)
            yield stage
            _swap_in(stage, target)
            stage, done = None, True
        except OSError as e:
            raise _storage_error(out_dir, e, stage) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if not done:
            for d in reversed(created):
                with contextlib.suppress(OSError):
                    d.rmdir()   # only an empty folder this report created
