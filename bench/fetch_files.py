"""The weights folder as ``invbench fetch`` writes into it, safe when the folder is shared:
preparing and locking it, opening a ``<file>.part`` without following a link at its name, and
the one-line refusal of anything planted there (a symbolic link, a second hard link, not a
regular file). :class:`FetchError` and the exit codes are defined here, beneath :mod:`.fetch`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_MANUAL = 0, 1, 2, 3
CHUNK = 1 << 20  # bytes per read


class FetchError(Exception):
    """One-line failure of one file; ``code`` is the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


def prepare_dir(folder: Path) -> None:
    """Create ``folder`` and make sure a file can be created in it (else FetchError, exit 2)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(
            f"weights folder {folder}: cannot create it ({e.strerror or e})", EXIT_BAD_INPUT
        ) from None
    if not folder.is_dir():
        raise FetchError(f"weights folder {folder}: not a directory", EXIT_BAD_INPUT)
    try:  # a uniquely named probe: concurrent fetches (processes or threads) never share one
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".invbench-write-test-"):
            pass
    except OSError as e:
        raise FetchError(
            f"weights folder {folder}: not writable ({e.strerror or e})", EXIT_BAD_INPUT
        ) from None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the weights folder while one file is fetched or imported.

    Two ``invbench fetch`` processes on one folder (two jobs of a cluster array starting at once)
    would otherwise write the same ``.part`` and the same manifest. The lock is ``flock`` on the
    folder itself, so no lock file is left behind, and the kernel releases it when a process
    dies. A second process waits, then finds the verified file and downloads nothing."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another invbench fetch writing into {folder}", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def planted(path: Path) -> FetchError:
    """The one-line refusal for ``path`` when it is not a plain file of its own (exit 2)."""
    try:
        st = os.lstat(path)
    except OSError:
        return FetchError(
            f"{path}: appeared while it was being created; another program writes into "
            f"{path.parent}"
        )
    if stat.S_ISLNK(st.st_mode):
        what = "is a symbolic link"
    elif not stat.S_ISREG(st.st_mode):
        what = "is not a regular file"
    else:
        what = f"has {st.st_nlink - 1} other hard link(s)"
    return FetchError(
        f"{path} {what}; refusing to write through it (remove it, and check who else can "
        f"write into {path.parent})",
        EXIT_BAD_INPUT,
    )


def open_part(part: Path, create: bool):
    """Open ``part`` for reading and appending without following a link at its name.

    ``create=False``: the ``.part`` already there, or None when there is none. ``create=True``: a
    new one (``O_EXCL``: whatever appeared at the name meanwhile is refused). A symbolic link, a
    file with other hard links or anything but a regular file raises the FetchError of
    :func:`planted` (exit 2); the file is never written through."""

    def opener(path: str, flags: int) -> int:
        flags |= os.O_NOFOLLOW
        flags = flags | os.O_EXCL if create else flags & ~os.O_CREAT
        return os.open(path, flags, 0o666)

    try:
        f = open(part, "a+b", opener=opener)  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        if create:
            raise FetchError(
                f"{part}: cannot create it (its folder disappeared)", EXIT_BAD_INPUT
            ) from None
        return None
    except OSError as e:
        if e.errno in (
            errno.ELOOP,
            errno.EMLINK,
            errno.EEXIST,
            errno.EISDIR,
        ):  # O_NOFOLLOW on a link; O_EXCL
            raise planted(part) from None
        raise FetchError(f"{part}: cannot open it ({e.strerror or e})") from None
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        f.close()
        raise planted(part)
    return f


def hash_open(f) -> tuple[hashlib._Hash, int]:  # type: ignore[name-defined]
    """sha256 and length of what an open ``.part`` holds (``f`` None: nothing yet)."""
    h = hashlib.sha256()
    n = 0
    if f is not None:
        f.seek(0)
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
    return h, n


def fresh_part(part: Path):
    """An empty ``.part`` opened for appending (a stale one is emptied; links are refused)."""
    f = open_part(part, create=False)
    if f is None:
        return open_part(part, create=True)
    f.truncate(0)
    f.seek(0)
    return f
