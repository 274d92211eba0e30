"""scripts/tune_vml_map.py and scripts/tune_vml_map_small.py measure their validation problems
through the one problem pipeline (invbench.bench.problem.build_problem): one shared operator draw
per (prior, task), so one solver call and one exact posterior; and the small-prior search never
reuses a CSV row measured under another seeding scheme."""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

import pytest
import torch
from invbench.bench.problem import batched, problem_seeds

from invbench import priors

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gmm_script():
    return _load("tune_vml_map")


@pytest.fixture(scope="module")
def small_script():
    return _load("tune_vml_map_small")


def test_gmm_problems_share_one_operator_and_use_build_problem_seeds(gmm_script):
    prior = priors.build("gmm-synthetic-64")
    probs = gmm_script.prior_problems("gmm-synthetic-64", prior, "inpaint_random", 3)
    assert len(list(batched(probs))) == 1
    for k, p in enumerate(probs):
        s = gmm_script.VALIDATION_SEED_BASE + k
        assert p.seeds == problem_seeds("inpaint_random", "gmm-synthetic-64-validation",
                                        f"prior-sample-{s}", "tune_vml_map", "tune_vml_map",
                                        "shared")
        # the truth is the validation dataset's prior sample
        x0 = prior.sample(1, generator=torch.Generator().manual_seed(s)).to(torch.float64)
        torch.testing.assert_close(p.x_model, x0)
    assert probs[0].sigma_y == gmm_script.SIGMA_Y
    assert len({p.noise_seed for p in probs}) == len({p.solver_seed for p in probs}) == 3


def _row(small_script, seeding: str | None, wsha: str = "w" * 64) -> dict:
    r = dict.fromkeys(small_script.FIELDS, "")
    r |= {"stage": "refs", "solver": "ddrm", "label": "ddrm[default]()", "task": "sr4_avgpool",
          "noise_px": "0.05", "n_images": "4", "psnr_mean": "25.0", "weights_sha256": wsha}
    if seeding is None:
        del r["seeding"]
    else:
        r["seeding"] = seeding
    return r


class _FourImages:
    n_crops, n_seeds = 4, 1


def test_small_resume_reuses_only_rows_under_this_seeding(small_script, tmp_path):
    cfg = {"solver": "ddrm", "preset": "default"}
    out = tmp_path / "tuning.csv"
    old_fields = [f for f in small_script.FIELDS if f != "seeding"]
    with open(out, "w", newline="") as f:  # a file of the layout before the seeding column
        w = csv.DictWriter(f, fieldnames=old_fields)
        w.writeheader()
        w.writerow(_row(small_script, None))
    args = argparse.Namespace(out=str(out), resume=True, max_minutes=0.0)
    runner = small_script.Runner(args, None, _FourImages(), "w" * 64)
    assert runner.find("refs", cfg, "sr4_avgpool", 0.05) is None
    with open(out, newline="") as f:  # rewritten under the new header, the old row kept
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == small_script.FIELDS
        assert [r["seeding"] for r in reader] == [""]
    with open(out, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=small_script.FIELDS).writerow(
            _row(small_script, small_script.SEEDING))
    runner = small_script.Runner(args, None, _FourImages(), "w" * 64)
    found = runner.find("refs", cfg, "sr4_avgpool", 0.05)
    assert found is not None and found["seeding"] == small_script.SEEDING
    assert small_script.Runner(args, None, _FourImages(), "v" * 64).find(
        "refs", cfg, "sr4_avgpool", 0.05) is None
