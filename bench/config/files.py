"""Experiment files in: reading a file safely, ``--set KEY=VALUE`` overrides, TOML text to a
validated :class:`~.spec.Experiment`."""

from __future__ import annotations

import copy
import os
import re
import stat
from pathlib import Path
from typing import Any

import tomllib

from .schema import parse
from .spec import CONFIG_MAX_BYTES, ConfigError, Experiment

_SEG_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)(?:\[(\d+)\])?$")


def parse_set(item: str) -> tuple[list[tuple[str, int | None]], Any]:
    """Parse ``KEY=VALUE``; KEY is a dotted path with optional indices
    (``solvers[1].overrides.steps``), VALUE a TOML value (``4``, ``0.1``, ``true``, ``"x"``,
    ``[0, 1]``) or else a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    key, val = item.split("=", 1)
    key = key.strip()
    segs = []
    for part in key.split("."):
        m = _SEG_RE.match(part)
        if not m:
            raise ConfigError(f"--set {item!r}: bad key path {key!r}")
        segs.append((m.group(1), int(m.group(2)) if m.group(2) is not None else None))
    try:
        value = tomllib.loads(f"v = {val.strip()}")["v"]
    except tomllib.TOMLDecodeError as e:
        if val.strip()[:1] in ("{", "[", '"', "'"):  # meant as a table / array / quoted string
            raise ConfigError(f"--set {item!r}: malformed TOML value ({e})") from None
        value = val.strip()
    return segs, value


def apply_sets(raw: dict, sets: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``KEY=VALUE`` override applied (keys may be new: the
    schema then rejects unknown ones with their path)."""
    out = copy.deepcopy(raw)
    for item in sets:
        segs, value = parse_set(item)
        cur: Any = out
        path = ""
        for n, (k, idx) in enumerate(segs):
            last = n == len(segs) - 1
            path = f"{path}.{k}" if path else k
            if not isinstance(cur, dict):
                raise ConfigError(f"--set {item!r}: {path} is not inside a table")
            if idx is None:
                if last:
                    cur[k] = value
                else:
                    cur = cur.setdefault(k, {})
            else:
                arr = cur.get(k)
                if not isinstance(arr, list) or idx >= len(arr):
                    raise ConfigError(f"--set {item!r}: {path}[{idx}] does not exist")
                path = f"{path}[{idx}]"
                if last:
                    arr[idx] = value
                else:
                    cur = arr[idx]
    return out


def loads(
    text: str, sets: list[str] | None = None, base_dir: Path | str = ".", source: str = "config"
) -> Experiment:
    """Parse TOML ``text`` (with ``--set`` overrides) into a validated :class:`Experiment`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: malformed TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: malformed TOML: arrays/tables nested too deeply") from None
    try:
        return parse(apply_sets(raw, list(sets or [])), base_dir)
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply") from None


def load(path: str | Path, sets: list[str] | None = None) -> Experiment:
    """Read and validate the experiment file at ``path``; relative paths inside it are resolved
    against its folder."""
    p = Path(path)
    try:
        st = os.stat(p)  # follows symbolic links: the target must be a regular file
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
            raise ConfigError(f"{p}: cannot read config (it is {kind}, not a regular file)")
        if st.st_size > CONFIG_MAX_BYTES:
            raise ConfigError(
                f"{p}: cannot read config ({st.st_size} bytes; experiment files are at most "
                f"{CONFIG_MAX_BYTES})"
            )
        with open(p, "rb") as f:
            data = f.read(CONFIG_MAX_BYTES + 1)
        if len(data) > CONFIG_MAX_BYTES:
            raise ConfigError(f"{p}: cannot read config (larger than {CONFIG_MAX_BYTES} bytes)")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from None
    try:
        return loads(text, sets, p.parent, source=str(p))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
