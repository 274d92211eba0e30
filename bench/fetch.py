"""``invbench fetch``: download the weight files of :data:`invbench.assets.weights.TABLE`.

For each file: if a verified copy is already in the folder, nothing is requested. Otherwise the
file is streamed to ``<folder>/<file>.part`` (progress bar on stderr), resumed with an HTTP
``Range`` request when a ``.part`` is already there or the connection drops, checked (size,
then the published sha256 or torchvision's sha256 prefix), flushed to disk and renamed onto
its final name in one ``os.replace``; its size, sha256, address and time go to the folder's
manifest. A checksum or size mismatch, a full disk or a write error deletes the ``.part``; a
dropped connection keeps it so that the next run resumes. Concurrent fetches into one folder
are serialised by :func:`folder_lock`; the later one finds the file present. Files that a program cannot fetch
(Google Drive) print manual steps; ``--from FILE`` then imports the file the user downloaded. A file
with no published checksum cannot be verified, so ``--from`` refuses it unless the user passes
``--trust-unverified``; the manifest records that (``"verified": false, "trusted_by_user": true``).

Shared weights folders. Every file fetch writes there is opened without following a link
(``O_NOFOLLOW``; a new ``.part`` with ``O_EXCL``); a symbolic link, a second hard link or anything
but a regular file at ``<file>.part`` is refused (exit 2, naming the path), the manifest is written
through a new uniquely named temporary file, and the final name is replaced by ``os.replace``
(which replaces a link, never writes through it). A download reads at most the published size
plus one byte: more is an error and the partial file is deleted.

Exit codes: 0 every requested file present and verified; 1 a download failed (network, server
error, checksum, disk, more bytes than the published size); 2 bad input (unknown name,
unusable folder, missing or unverifiable ``--from`` file, a link or foreign file planted at
``<file>.part``); 3 a file needs the manual steps printed. Errors are one line on stderr naming the file and URL.

The folder's safety (locking, opening ``.part`` files, refusing planted files) is
:mod:`.fetch_files`; this module holds the transfer, the import and the command.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from invbench.assets import weights as W

from .fetch_files import (
    CHUNK,
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_MANUAL,
    EXIT_OK,
    FetchError,
    folder_lock,
    fresh_part,
    hash_open,
    open_part,
    prepare_dir,
    remove,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAIL", "EXIT_MANUAL", "EXIT_OK", "FetchError", "download", "import_file", "run"]

RETRIES = 3       # extra attempts after an interrupted transfer or a transient server error
BACKOFF_S = 1.0   # seconds before the first retry, doubled for each further one
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_RETRY_HTTP = {408, 429, 500, 502, 503, 504}


class _Interrupted(Exception):
    """The transfer stopped early; the ``.part`` is kept and the next attempt resumes it."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _too_big(w: W.WeightFile, url: str, what: str) -> FetchError:
    bound = (f"the published size of {w.size} bytes" if w.size is not None else
             f"the limit of {w.limit} bytes (no size is published; far above the file's known size)")
    return FetchError(f"{w.filename}: {url}: {what} more than {bound}; the partial file was deleted")


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not enabled, file=sys.stderr, leave=False)


def _attempt(w: W.WeightFile, url: str, part: Path, timeout: float, progress: bool) -> hashlib._Hash:  # type: ignore[name-defined]
    """One HTTP request continuing ``part``; returns the sha256 of the whole file when complete.

    Raises _Interrupted (resume possible), FetchError (give up for this URL)."""
    f = open_part(part, create=False)
    try:
        h, offset = hash_open(f)
        if f is not None and w.limit is not None and offset > w.limit:   # cannot be a prefix: start again
            f.truncate(0)
            h, offset = hashlib.sha256(), 0
        resp = _request(w, url, part, offset, timeout)
        with resp:
            status = resp.status
            if status == 206:
                crange = resp.headers.get("Content-Range", "")
                start = crange.split(" ", 1)[-1].split("-", 1)[0]
                if not start.isdigit() or int(start) != offset:
                    if f is not None:
                        f.close()
                    remove(part)
                    raise _Interrupted(f"server answered a resume at byte {offset} with {crange!r}; starting again")
            elif status == 200:
                if offset:                 # Range ignored: the body is the whole file
                    h, offset = hashlib.sha256(), 0
                    f.truncate(0)
                    f.seek(0)
            else:
                raise FetchError(f"{w.filename}: {url}: unexpected HTTP {status}")
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if w.limit is not None and length is not None and offset + length > w.limit:
                if f is not None:
                    f.close()
                remove(part)
                raise _too_big(w, url, f"the server announces {offset + length} bytes,")
            if f is None:
                f = open_part(part, create=True)
            got = _receive(w, url, resp, f, part, h, offset, offset + length if length is not None else w.size,
                           progress)
            if length is not None and got != offset + length:
                raise _Interrupted(f"connection closed after {got} of {offset + length} bytes")
    finally:
        if f is not None:
            f.close()
    return h


def _request(w: W.WeightFile, url: str, part: Path, offset: int, timeout: float):
    """Open ``url`` (with ``Range`` from ``offset`` when resuming); the response, or the
    _Interrupted / FetchError its failure maps to."""
    headers = {"User-Agent": "invbench-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:   # the .part is not a prefix the server can continue: start again
            remove(part)
            raise _Interrupted(f"HTTP 416 for a resume at byte {offset}; starting again") from None
        if e.code in _RETRY_HTTP:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise FetchError(f"{w.filename}: {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, socket.gaierror):   # no name resolution: offline, retrying will not help
            raise FetchError(f"{w.filename}: {url}: cannot connect "
                             f"(cannot resolve the host: {reason}; offline?)") from None
        raise _Interrupted(f"cannot connect ({reason})") from None


def _receive(w: W.WeightFile, url: str, resp, f, part: Path, h, offset: int, total: int | None, progress: bool) -> int:
    """Append the body of ``resp`` to the open ``part`` (updating ``h``); the byte count reached.

    Reads at most the published size plus one byte: more is a FetchError and ``part`` is deleted,
    as after a write error or a full disk; a dropped connection raises _Interrupted."""
    got = offset
    bar = _progress(total, offset, w.filename, progress)
    try:
        while True:
            want = CHUNK if w.limit is None else min(CHUNK, w.limit + 1 - got)
            try:
                block = resp.read(want)
            except (http.client.HTTPException, OSError) as e:   # dropped, reset, timed out
                raise _Interrupted(f"connection lost after {got} bytes ({type(e).__name__})") from None
            if not block:
                break
            if w.limit is not None and got + len(block) > w.limit:
                f.close()
                remove(part)
                raise _too_big(w, url, "the server sent")
            try:
                f.write(block)
            except OSError as e:
                f.close()
                remove(part)
                if e.errno in _DISK_FULL:
                    raise FetchError(f"{w.filename}: disk full writing {part}; the partial file was deleted "
                                     f"(needs {total or 'unknown'} bytes)") from None
                raise FetchError(f"{w.filename}: cannot write {part} ({e.strerror or e}); "
                                 "the partial file was deleted") from None
            h.update(block)
            got += len(block)
            bar.update(len(block))
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            f.close()
            remove(part)
            full = "disk full" if e.errno in _DISK_FULL else f"cannot write ({e.strerror or e})"
            raise FetchError(f"{w.filename}: {full} flushing {part}; the partial file was deleted") from None
    finally:
        bar.close()
    return got


def download(w: W.WeightFile, folder: Path, *, retries: int = 3, timeout: float = 60.0,
             backoff: float = 1.0, progress: bool = False) -> W.Located:
    """Fetch ``w`` into ``folder`` (see module docstring); returns the verified file.

    ``retries``: extra attempts after an interrupted transfer or a transient server error
    (each resumes the ``.part``); ``timeout``: seconds per socket operation; ``backoff``: seconds
    before the first retry (doubled each time). Raises FetchError.
    """
    prepare_dir(folder)
    final = folder / w.filename
    part = folder / (w.filename + ".part")
    if not w.fetchable:
        raise FetchError(f"{w.name}: {w.filename} cannot be downloaded by a program", EXIT_MANUAL)
    last = ""
    for url in w.urls:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                h = _attempt(w, url, part, timeout, progress)
            except _Interrupted as e:
                last = f"{url}: {e}"
                continue
            return _finish(w, part, final, h.hexdigest(), url)
    kept = f"; {part.stat().st_size} bytes kept in {part}, rerun to resume" if part.is_file() else ""
    raise FetchError(f"{w.filename}: download failed after {retries + 1} attempt(s): {last}{kept}")


def _finish(w: W.WeightFile, part: Path, final: Path, digest: str, url: str, trusted: bool = False) -> W.Located:
    """Check the complete ``part`` and move it onto ``final``; record it in the manifest
    (``trusted``: the user passed ``--trust-unverified`` for a file with no published checksum)."""
    size = os.lstat(part).st_size
    if w.size is not None and size != w.size:
        remove(part)
        raise FetchError(f"{w.filename}: {url}: got {size} bytes, expected {w.size}; the temporary file was deleted")
    ok = w.check_digest(digest)
    if ok is False:
        remove(part)
        raise FetchError(f"{w.filename}: {url}: sha256 {digest} does not match the expected {w.expected()}; "
                         "the temporary file was deleted")
    os.replace(part, final)   # replaces whatever is at the final name (a link too), never writes through it
    _record(w, final, digest, size, url, trusted)
    return W.check_file(w, final, digest)


def _record(w: W.WeightFile, final: Path, digest: str, size: int, url: str, trusted: bool) -> None:
    """Write ``final``'s manifest entry: ``verified`` is False only for an import that no
    published checksum could check, and then ``trusted_by_user`` says the user vouched for it."""
    ok = w.check_digest(digest)
    imported = url.startswith(W.IMPORT_PREFIX)
    verified = ok is True or (ok is None and not imported)
    if ok:
        check = "published checksum"
    elif verified:
        check = "none published: sha256 recorded at download"
    else:
        check = "none published: trusted by the user (--trust-unverified)" if trusted else "none published: unverified"
    W.write_manifest_entry(final.parent, w.filename, {
        "sha256": digest, "bytes": size, "url": url, "fetched_at": _now(), "check": check,
        "verified": verified, "trusted_by_user": bool(trusted and not verified)})


def import_file(w: W.WeightFile, src: Path, folder: Path, trust_unverified: bool = False) -> W.Located:
    """Copy a file the user downloaded by hand into ``folder`` (same checks and atomic rename as
    a download) and record its size and sha256 in the manifest.

    A file with no published checksum cannot be verified: it is refused (exit 2) unless
    ``trust_unverified``, which the manifest records. More or fewer bytes than a published size
    are refused before anything is copied."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise FetchError(f"--from {src}: file not found", EXIT_BAD_INPUT)
    if not w.verifiable and not trust_unverified:
        raise FetchError(f"--from {src}: {w.filename} has no published checksum, so this file cannot be verified; "
                         "pass --trust-unverified to import it anyway (the manifest then records it as trusted by you, "
                         "not verified)", EXIT_BAD_INPUT)
    if w.size is not None and src.stat().st_size != w.size:
        raise FetchError(f"--from {src}: {src.stat().st_size} bytes, but {w.filename} has {w.size}; nothing was copied")
    if w.size is None and w.limit is not None and src.stat().st_size > w.limit:
        raise FetchError(f"--from {src}: {src.stat().st_size} bytes, more than {w.filename} can be (limit {w.limit} "
                         "bytes); nothing was copied")
    prepare_dir(folder)
    final = folder / w.filename
    part = folder / (w.filename + ".part")
    url = f"{W.IMPORT_PREFIX}{src}"
    if final.exists() and os.path.samefile(src, final):
        digest = W.sha256_file(final)
        if w.check_digest(digest) is False:
            raise FetchError(f"{final}: sha256 {digest} does not match the expected {w.expected()}")
        _record(w, final, digest, final.stat().st_size, url, trust_unverified)
        return W.check_file(w, final, digest)
    h = hashlib.sha256()
    fo = fresh_part(part)
    try:
        with open(src, "rb") as fi, fo:
            while block := fi.read(CHUNK):
                fo.write(block)
                h.update(block)
            fo.flush()
            os.fsync(fo.fileno())
    except OSError as e:
        remove(part)
        full = "disk full" if e.errno in _DISK_FULL else f"cannot copy ({e.strerror or e})"
        raise FetchError(f"{w.filename}: {full} writing {part}; the partial file was deleted") from None
    return _finish(w, part, final, h.hexdigest(), url, trust_unverified)


def _say(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    sys.stderr.write(f"invbench: error: {' '.join(line.split())}\n")


def _list(folder: Path) -> int:
    for w in W.TABLE.values():
        loc = W.locate(w.name, [folder], verify=False)
        size = f"{w.size} bytes" if w.size else "size not published"
        how = "download" if w.fetchable else "manual"
        state = "missing"
        if loc.present:
            entry = W.read_manifest(folder).get(w.filename)
            state = "present" + (f" ({W.record_state(entry)})" if entry else "")
        _say(f"{w.name}: {w.filename} ({size}; {w.expected()}; {how}) -> {state} in {folder}")
    return EXIT_OK


def run(names: list[str], folder: Path | None = None, src: str | None = None, *, progress: bool = False,
        retries: int | None = None, timeout: float = 60.0, backoff: float | None = None,
        trust_unverified: bool = False) -> int:
    """The ``invbench fetch`` command: fetch ``names`` (``all`` = every table entry) into ``folder``
    (default :func:`weights.cache_dir`); one line per file on stdout, errors on stderr; the exit code.
    ``trust_unverified`` (with ``src`` only): import a file no published checksum can verify."""
    dest = Path(folder).expanduser() if folder else W.cache_dir()
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_S if backoff is None else backoff
    if not names:
        return _list(dest)
    wanted = list(W.TABLE) if "all" in names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in W.TABLE]
    if unknown:
        _err(f"unknown weights name(s) {', '.join(map(repr, unknown))}; valid: {', '.join(W.TABLE)}, all")
        return EXIT_BAD_INPUT
    if src and len(wanted) != 1:
        _err("--from FILE needs exactly one name")
        return EXIT_BAD_INPUT
    if trust_unverified and not src:
        _err("--trust-unverified applies only to a file imported with --from FILE")
        return EXIT_BAD_INPUT
    codes: list[int] = []
    try:
        _fetch_each(wanted, dest, src, codes, progress=progress, retries=retries, timeout=timeout, backoff=backoff,
                    trust_unverified=trust_unverified)
    except KeyboardInterrupt:
        _err(f"interrupted; a partial download stays as <file>.part in {dest} and the next run resumes it")
        return 130
    if folder and dest.resolve() != W.cache_dir().resolve() and EXIT_OK in codes:
        _say(f"note: the metrics and priors look in {W.cache_dir()}; set {W.ENV_VAR}={dest} to use these files")
    for c in (EXIT_BAD_INPUT, EXIT_FAIL, EXIT_MANUAL):
        if c in codes:
            return c
    return EXIT_OK


def _fetch_each(wanted: list[str], dest: Path, src: str | None, codes: list[int], *, progress: bool,
                retries: int, timeout: float, backoff: float, trust_unverified: bool = False) -> None:
    """Fetch each name in turn, appending its exit code to ``codes`` (stops at bad input)."""
    for n in wanted:
        w = W.TABLE[n]
        try:
            if src:
                prepare_dir(dest)
                with folder_lock(dest):
                    loc = import_file(w, Path(src), dest, trust_unverified)
                _say(f"{n}: {loc.path} imported ({loc.path.stat().st_size} bytes, sha256 {loc.sha256}; {loc.how})")
                codes.append(EXIT_OK)
                continue
            loc = W.locate(n, [dest])
            if loc.present and loc.usable:
                _say(f"{n}: {loc.path} already present ({loc.how}); nothing downloaded")
                codes.append(EXIT_OK)
                continue
            if not w.fetchable:
                _say(f"{n}: {w.filename} must be downloaded by hand ({w.used_by}):\n{w.manual}")
                codes.append(EXIT_MANUAL)
                continue
            prepare_dir(dest)
            with folder_lock(dest):
                loc = W.locate(n, [dest])  # again: a concurrent fetch may have finished it meanwhile
                if loc.present and loc.usable:
                    _say(f"{n}: {loc.path} present (fetched by another process; {loc.how}); nothing downloaded")
                    codes.append(EXIT_OK)
                    continue
                if loc.present:
                    _say(f"{n}: {loc.path} present but {loc.how}; downloading it again")
                _say(f"{n}: downloading {w.filename} from {w.urls[0]}")
                loc = download(w, dest, retries=retries, timeout=timeout, backoff=backoff, progress=progress)
            _say(f"{n}: {loc.path} ({loc.path.stat().st_size} bytes, sha256 {loc.sha256}; {loc.how})")
            codes.append(EXIT_OK)
        except FetchError as e:
            _err(f"{n}: {e}")
            codes.append(e.code)
            if e.code == EXIT_BAD_INPUT:
                break
