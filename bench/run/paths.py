"""The layout of a run folder: the one place where ids become file names.

The runner writes, and the report, ``compare`` and resume read, through these functions only, so
writer and readers can never disagree about where an image lives.

Names are *injective*: :func:`stem` keeps an id that is already a safe file name
(``[A-Za-z0-9_.+-]``, not starting with a dot, not empty) as it is, and otherwise replaces the
unsafe characters by ``_`` and appends ``~`` and 10 hex digits of the sha256 of the raw id. ``~``
never occurs in a kept id, so a kept id never equals a rewritten one, and two rewritten ids share
a name only if their sha256 prefixes collide (40 bits); :func:`colliding` finds even that case,
and the runner refuses such a dataset before anything is written.

Layout (relative to ``RUN_DIR``)::

    truth/<dataset>/<image>.png
    meas/<task>/<dataset>/<image>_s<seed>.png
    recon/<solver>__<preset>/<task>/<dataset>/<prior>/<image>_s<seed>.{png,npy}
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["colliding", "legacy_stem", "meas_rel", "recon_rel", "stem", "truth_rel"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")
HASH_CHARS = 10


def stem(raw: object) -> str:
    """A file-name-safe, injective name for ``raw`` (an image id, a label); see the module doc."""
    s = str(raw)
    safe = _UNSAFE.sub("_", s)
    if safe and not safe.startswith(".") and safe == s:
        return s
    if not safe or safe.startswith("."):
        safe = "_" + safe
    return f"{safe}~{hashlib.sha256(s.encode('utf-8', 'surrogatepass')).hexdigest()[:HASH_CHARS]}"


def legacy_stem(raw: object) -> str:
    """The (not injective) name earlier versions gave an id; only used to recognise the files of
    an older run (e.g. before ``invbench demo`` replaces it), never to write."""
    out = _UNSAFE.sub("_", str(raw))
    return ("_" + out) if out.startswith(".") or not out else out


def colliding(ids: Iterable[object]) -> tuple[str, str] | None:
    """The first two distinct ids with the same :func:`stem` (also compared case-insensitively,
    for case-insensitive file systems), or None."""
    seen: dict[str, str] = {}
    for raw in ids:
        key = stem(raw).casefold()
        other = seen.setdefault(key, str(raw))
        if other != str(raw):
            return other, str(raw)
    return None


def truth_rel(dataset: str, image_id: str) -> str:
    """``truth/<dataset>/<image>.png``: the ground truth as the run saw it (pixel [0, 1])."""
    return f"truth/{stem(dataset)}/{stem(image_id)}.png"


def meas_rel(task: str, dataset: str, image_id: str, seed: int) -> str:
    """``meas/<task>/<dataset>/<image>_s<seed>.png``: a visualisation of the measurement."""
    return f"meas/{stem(task)}/{stem(dataset)}/{stem(image_id)}_s{seed}.png"


def recon_rel(
    solver: str,
    preset: str,
    task: str,
    dataset: str,
    prior: str,
    image_id: str,
    seed: int,
    ext: str,
) -> str:
    """``recon/<solver>__<preset>/<task>/<dataset>/<prior>/<image>_s<seed>.<ext>``."""
    return (
        f"recon/{stem(solver)}__{stem(preset)}/{stem(task)}/{stem(dataset)}/{stem(prior)}/"
        f"{stem(image_id)}_s{seed}.{ext}"
    )
