"""One set of defaults per solver: ``Params()`` is the ``"default"`` preset, and every other
preset states only what differs from it, with where its values come from."""

from __future__ import annotations

import dataclasses

import pytest

from invbench import solvers

CLASSES = {name: solvers.get(name) for name in solvers.NAMES}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_params_defaults_are_the_default_preset(name):
    cls = CLASSES[name]
    assert "default" in cls.PRESETS
    assert cls.PRESETS["default"].params == {}, "the default preset restates Params() values"
    assert cls.from_preset("default").params == cls.Params()
    assert cls().params == cls.Params() and cls().preset == "default"
    assert solvers.build(name).params == cls.Params()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_presets_state_only_differences_with_provenance(name):
    cls = CLASSES[name]
    defaults = dataclasses.asdict(cls.Params())
    for preset, spec in cls.PRESETS.items():
        assert spec.provenance.strip(), f"{name}/{preset} has no provenance"
        unknown = set(spec.params) - set(defaults)
        assert not unknown, f"{name}/{preset}: not hyperparameters: {sorted(unknown)}"
        same = sorted(k for k, v in spec.params.items() if defaults[k] == v)
        assert not same, f"{name}/{preset} restates default values of {same}"
        built = cls.from_preset(preset).params
        for field, value in dataclasses.asdict(built).items():
            assert value == spec.params.get(field, defaults[field])


def test_vml_map_presets_keep_their_values():
    """The presets' effective values (documented in docs/solvers-vml-map.md) after stating them
    by difference."""
    cls = CLASSES["vml_map"]
    table = {  # preset: (N, K, γ, preconditioner, loss, transition)
        "default": (100, 10, 1.9, "svd", "vml_s", "map_consistent"),
        "plain": (50, 20, 1.9, "scalar", "vml_s", "ddim"),
        "exact-gaussian": (50, 10, 1.0, "svd", "vml_s", "ddim"),
        "learned": (20, 5, 1.9, "svd", "vml_s", "map_consistent"),
        "fast": (20, 2, 1.9, "svd", "vml_s", "map_consistent"),
        "full": (100, 10, 1.9, "svd", "vml_full", "map_consistent"),
    }
    assert set(table) == set(cls.PRESETS)
    for preset, want in table.items():
        p = cls.from_preset(preset).params
        assert (p.n_levels, p.inner_steps, p.step_size, p.preconditioner, p.loss, p.transition) == want, preset
        assert (p.sigma_max, p.sigma_min, p.rho, p.init) == (80.0, 0.002, 7.0, "noise")
