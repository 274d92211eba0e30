"""The resolved config as TOML text (the store's meta records it)."""

from __future__ import annotations

import json
import re
from typing import Any


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _toml_key(k: str) -> str:
    return k if re.match(r"^[A-Za-z0-9_\-]+$", k) else json.dumps(k)


def to_toml(d: dict) -> str:
    """Serialise a resolved config (scalars, arrays, inline tables, arrays of tables)."""
    lines = []
    tables = []
    for k, v in d.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables.append((k, v, True))
        elif isinstance(v, dict):
            tables.append((k, v, False))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v, is_array in tables:
        items = v if is_array else [v]
        for item in items:
            lines.append("")
            lines.append(f"[[{k}]]" if is_array else f"[{k}]")
            for kk, vv in item.items():
                lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"
