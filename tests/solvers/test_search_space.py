"""Every tunable solver declares a search space over its own hyperparameters (solvers/search_space.py)."""

from __future__ import annotations

import dataclasses

from invbench import solvers


def test_every_solver_but_the_oracles_declares_a_search_space_of_its_own_fields():
    for name in solvers.NAMES:
        cls = solvers.get(name)
        if name.startswith("oracle_"):
            assert not cls.SEARCH_SPACE, name          # exact posteriors have nothing to tune
            continue
        assert cls.SEARCH_SPACE, f"{name} declares no SEARCH_SPACE"
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        for key, p in cls.SEARCH_SPACE.items():
            assert key in fields, (name, key)
            if p.kind != "categorical":
                assert p.low < p.high and (not p.log or p.low > 0), (name, key)
            cls.from_preset("default", **{key: p.low if p.kind != "categorical" else p.choices[0]})  # accepted
