"""Reading one TOML table of an experiment file: typed keys, unknown-key errors naming the key
path, free-form tables holding only plain values, unique names."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .spec import _NAME_RE, INT64_MAX, NAME_MAX_BYTES, ConfigError


def _type_name(v: Any) -> str:
    return {
        bool: "bool",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(v), type(v).__name__)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def _k(key: Any) -> str:
    """A key as it appears in a key path: bare when plain, else JSON-quoted (so control
    characters and newlines in a hostile key never reach a terminal unescaped)."""
    key = str(key)
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


class _Reader:
    """Reads one TOML table, checking types and tracking used keys for unknown-key errors."""

    def __init__(self, table: Any, path: str):
        if not isinstance(table, dict):
            raise ConfigError(f"{path or 'config'}: expected a table, got {_type_name(table)}")
        self.t = table
        self.path = path
        self.used: set[str] = set()

    def p(self, key: str) -> str:
        return f"{self.path}.{_k(key)}" if self.path else _k(key)

    def get(self, key: str, kind, default=..., check=None):
        self.used.add(key)
        if key not in self.t:
            if default is ...:
                raise ConfigError(f"{self.p(key)}: required key missing")
            return default
        v = self.t[key]
        v = _coerce(v, kind, self.p(key))
        if check is not None:
            msg = check(v)
            if msg:
                raise ConfigError(f"{self.p(key)}: {msg} (got {v!r})")
        return v

    def finish(self, allow_extra: bool = False) -> dict:
        extra = {k: v for k, v in self.t.items() if k not in self.used}
        if extra and not allow_extra:
            k = min(extra)
            raise ConfigError(f"{self.p(k)}: unknown key")
        return extra


def _coerce(v, kind, path):
    if kind == "str":
        if not isinstance(v, str):
            raise ConfigError(f"{path}: expected a string, got {_type_name(v)}")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{path}: expected true/false, got {_type_name(v)}")
        return v
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path}: expected an integer, got {_type_name(v)}")
        _int64(v, path)
        return v
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_type_name(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"{path}: must be finite (got {v})")
        return v
    if kind == "table":
        if not isinstance(v, dict):
            raise ConfigError(f"{path}: expected a table, got {_type_name(v)}")
        return v
    if kind == "list_str":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{path}: expected an array of strings")
        return tuple(v)
    if kind == "list_int":
        if not isinstance(v, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v
        ):
            raise ConfigError(f"{path}: expected an array of integers")
        for i, x in enumerate(v):
            _int64(x, f"{path}[{i}]")
        return tuple(v)
    if kind == "list_table":
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise ConfigError(f"{path}: expected an array of tables ([[{path}]])")
        return v
    raise AssertionError(kind)


def _int64(v: int, path: str) -> None:
    """Integers are stored in SQLite (signed 64-bit) and seed generators: refuse larger ones."""
    if not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise ConfigError(
            f"{path}: integer {v} does not fit in a signed 64-bit integer (|v| < 2^63)"
        )


def _name_check(v: str) -> str | None:
    if not _NAME_RE.match(v):
        return "names use letters, digits and _ . + - only"
    if len(v.encode()) > NAME_MAX_BYTES:
        return (
            f"names are at most {NAME_MAX_BYTES} bytes (they become file names; "
            f"got {len(v.encode())})"
        )
    return None


def _plain_values(d: dict, path: str) -> dict:
    """Check a free-form table holds only TOML scalars/arrays/tables (no datetimes)."""
    for k, v in d.items():
        p = f"{path}.{_k(k)}"
        if isinstance(v, dict):
            _plain_values(v, p)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, dict):
                    _plain_values(x, f"{p}[{i}]")
                elif not isinstance(x, (str, int, float, bool, list)):
                    raise ConfigError(f"{p}[{i}]: unsupported value type {_type_name(x)}")
                elif isinstance(x, int) and not isinstance(x, bool):
                    _int64(x, f"{p}[{i}]")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{p}: must be finite (got {v})")
        elif isinstance(v, int) and not isinstance(v, bool):
            _int64(v, p)
        elif not isinstance(v, (str, int, float, bool)):
            raise ConfigError(f"{p}: unsupported value type {_type_name(v)}")
    return d


def _unique(names: list[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ConfigError(f"{path}[{i}].{what}: duplicate {what} {n!r}")
        seen.add(n)
