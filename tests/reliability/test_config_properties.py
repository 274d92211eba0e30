"""Property-based tests of the config loader (docs/reliability.md, "Bad-input corpus"; hypothesis).

Random single mutations of a valid experiment (an unknown key at a random table, a wrong-typed
value at a schema leaf, an out-of-range number) always raise ``ConfigError`` whose message is one
printable line naming the key path; arbitrary mutations anywhere (free-form tables included) and
arbitrary ``--set`` items never raise anything but ``ConfigError``.
tests/bench/test_config.py::test_errors_name_the_key_path holds the hand-picked examples.
"""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invbench.bench import config
from invbench.bench.config import ConfigError

from tests.helpers import parts

BASE_TEXT = parts.toml_config(extra="warmup = 0\ndata_seed = 3") + """
[solvers.resources]
timeout_min = 10

[execution]
shards = 2

[execution.resources]
mem_gb = 4
"""
BASE = tomllib.loads(BASE_TEXT)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _key(k: str) -> str:
    """How the loader writes a key in a path (bare when plain, JSON-quoted otherwise)."""
    return k if re.match(r"^[A-Za-z0-9_\-]+$", k) else json.dumps(k)


def _load(raw: dict):
    return config.parse(copy.deepcopy(raw), base_dir="/tmp")


def _check_message(e: ConfigError, path: str | None) -> None:
    msg = str(e)
    assert "\n" not in msg and msg.isprintable(), repr(msg)
    if path is not None:
        assert msg.startswith(path + ":") or f"{path}:" in msg or f"{path}[" in msg, (path, msg)


def test_base_is_valid():
    exp = _load(BASE)
    assert exp.execution.shards == 2 and exp.solvers[0].resources == {"timeout_min": 10}


# tables whose keys are all schema keys (unknown ones are errors at load time); dataset tables are
# passed to invbench.bench.datasets (checked at prepare time), option/override/params tables are free-form
STRICT_TABLES = {
    "": set(BASE), "priors[0]": {"name", "label", "checkpoint", "datasets", "options"},
    "tasks[0]": {"name", "operator", "noise_sigma", "params"},
    "tasks[1]": {"name", "operator", "noise_sigma", "params"},
    "solvers[0]": {"name", "preset", "label", "overrides", "task_presets", "tasks", "priors", "resources"},
    "execution": {"shards", "folder", "resources"}, "solvers[0].resources": set(config.RESOURCE_KEYS),
    "execution.resources": set(config.RESOURCE_KEYS), "metrics": {"image", "set"},
}


def _table(raw: dict, path: str) -> dict:
    cur = raw
    for seg in filter(None, path.split(".")):
        m = re.match(r"^(\w+)(?:\[(\d+)\])?$", seg)
        cur = cur[m.group(1)]
        if m.group(2) is not None:
            cur = cur[int(m.group(2))]
    return cur


scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12))
values = st.recursive(scalars,
                      lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
                      max_leaves=6)


@SETTINGS
@given(where=st.sampled_from(sorted(STRICT_TABLES)), key=st.text(min_size=1, max_size=15), value=values)
def test_unknown_key_anywhere_is_named(where, key, value):
    if key in STRICT_TABLES[where]:
        return
    if where == "metrics" and isinstance(value, dict):
        value = 1          # a table under [metrics] is a metric's option table (checked at prepare time)
    raw = copy.deepcopy(BASE)
    _table(raw, where)[key] = value
    path = f"{where}.{_key(key)}" if where else _key(key)
    with pytest.raises(ConfigError) as e:
        _load(raw)
    _check_message(e.value, path)


# leaf path -> a predicate "this value has the right type" (mutations that keep the type are skipped)
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


LEAVES = {
    "name": lambda v: isinstance(v, str), "description": lambda v: isinstance(v, str),
    "seeds": lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "batch_size": _is_int,
    "device": lambda v: isinstance(v, str), "dtype": lambda v: isinstance(v, str),
    "save_npy": lambda v: isinstance(v, bool),
    "warmup": _is_int, "data_seed": _is_int, "datasets[0].name": lambda v: isinstance(v, str),
    "datasets[0].type": lambda v: isinstance(v, str), "datasets[0].limit": _is_int,
    "priors[0].name": lambda v: isinstance(v, str), "priors[0].options": lambda v: isinstance(v, dict),
    "tasks[0].operator": lambda v: isinstance(v, str),
    "tasks[1].noise_sigma": lambda v: _is_int(v) or isinstance(v, float),
    "tasks[0].params": lambda v: isinstance(v, dict), "solvers[0].name": lambda v: isinstance(v, str),
    "solvers[0].overrides": lambda v: isinstance(v, dict),
    "solvers[0].tasks": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "metrics.image": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "execution.shards": _is_int, "solvers[0].resources.timeout_min": _is_int, "execution.resources.mem_gb": _is_int,
}


def _set_leaf(raw: dict, path: str, value) -> None:
    head, _, last = path.rpartition(".")
    _table(raw, head)[last] = value


@SETTINGS
@given(leaf=st.sampled_from(sorted(LEAVES)), value=values)
def test_wrong_type_is_named(leaf, value):
    if LEAVES[leaf](value):
        return
    raw = copy.deepcopy(BASE)
    _set_leaf(raw, leaf, value)
    with pytest.raises(ConfigError) as e:
        _load(raw)
    _check_message(e.value, leaf)


RANGES = {
    "batch_size": st.integers(-10**9, 0), "warmup": st.integers(-10**9, -1), "data_seed": st.integers(-10**9, -1),
    "datasets[0].limit": st.integers(-10**9, 0), "execution.shards": st.integers(-10**9, 0),
    "tasks[0].noise_sigma": st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.0000001),
                                      st.sampled_from([math.nan, math.inf, -math.inf])),
    "seeds": st.one_of(st.lists(st.integers(-10**6, -1), min_size=1, max_size=3), st.just([]),
                       st.integers(0, 99).map(lambda s: [s, s])),
    "solvers[0].resources.mem_gb": st.integers(-10**6, -1),
}


@SETTINGS
@given(data=st.data())
def test_out_of_range_is_named(data):
    leaf = data.draw(st.sampled_from(sorted(RANGES)))
    value = data.draw(RANGES[leaf])
    raw = copy.deepcopy(BASE)
    _set_leaf(raw, leaf, value)
    with pytest.raises(ConfigError) as e:
        _load(raw)
    _check_message(e.value, leaf)


def _paths(node, prefix=""):
    """Every (container, key) pair of the document, for arbitrary mutations."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield node, k
            yield from _paths(v)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield node, i
            yield from _paths(v)


@SETTINGS
@given(data=st.data())
def test_any_mutation_is_accepted_or_a_one_line_config_error(data):
    raw = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        slots = list(_paths(raw))
        container, key = data.draw(st.sampled_from(slots))
        op = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            container[key] = data.draw(values)
        elif op == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[data.draw(st.text(max_size=8))] = data.draw(values)
        else:
            container.append(data.draw(values))
    try:
        _load(raw)
    except ConfigError as e:
        _check_message(e, None)


@SETTINGS
@given(items=st.lists(st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["seeds", "solvers[0].overrides.steps", "tasks[1].noise_sigma",
                                                        "datasets[0].limit", "x.y[3]", "solvers[9].name", "a..b", ""]),
              st.text(max_size=20))), max_size=3))
def test_set_overrides_never_raise_anything_else(items):
    try:
        config.loads(BASE_TEXT, items, base_dir="/tmp")
    except ConfigError as e:
        _check_message(e, None)
