"""The problem pipeline: build_problem reproduces a run's rows; draws do not depend on batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from invbench.bench import config, problem, run, store
from invbench.bench import datasets as datasets_mod
from invbench.bench.metrics.image import psnr
from invbench.operators.conventions import model_to_pixel

from invbench import operators, priors, solvers

torch.set_num_threads(1)

CONFIG = """
name = "problem-pipeline"
seeds = [0, 3]
batch_size = 1
device = "cpu"
dtype = "float32"
save_npy = true
{extra}
[[datasets]]
name = "digits"
type = "digits"
split = "test"
limit = 2

[[priors]]
name = "gmm-digits"

[[tasks]]
name = "inpaint_random-50"
operator = "inpaint_random"
noise_sigma = 0.05
params = {{ ratio = 0.5 }}

[[tasks]]
name = "sr4"
operator = "sr4_avgpool"
noise_sigma = 0.05

[[solvers]]
name = "ddrm"
overrides = {{ steps = 3 }}

[metrics]
image = ["psnr"]
"""


def _task(name: str, sigma: float = 0.05, operator: str = "inpaint_random", **params):
    return config.TaskSpec(name=name, operator=operator, noise_sigma=sigma, params=params)


@pytest.mark.parametrize("extra", ["", "data_seed = 7"])
def test_build_problem_reproduces_the_runs_rows(tmp_path, extra):
    exp = config.loads(CONFIG.format(extra=extra), base_dir=tmp_path)
    run.run(run.prepare(exp, tmp_path / "run"), tmp_path / "run")
    df = store.load_results(tmp_path / "run")
    assert len(df) == 2 * 2 * 2 and (df.status == "ok").all()
    ds = datasets_mod.build(exp.datasets[0].build_spec(), exp.base_dir)
    tasks = {t.name: t for t in exp.tasks}
    prior = priors.build("gmm-digits").to(dtype=torch.float32)      # as the run holds it
    for r in df.itertuples():
        data_part = r.seed if exp.data_seed is None else f"data{exp.data_seed}"
        x = ds.get(ds.ids.index(r.image_id))
        p = problem.build_problem(tasks[r.task], r.dataset, r.image_id, x, data_part, r.seed,
                                  device="cpu", dtype=torch.float32)
        assert p.seeds == (r.operator_seed, r.noise_seed, r.solver_seed)
        assert p.sigma_y == r.sigma_y and p.x.dtype == torch.float64 and p.x.shape == (1, 1, 8, 8)
        scored = problem.solve_and_score(solvers.build("ddrm", steps=3), [p], prior)
        stored = np.load(tmp_path / "run" / (r.recon_path[:-4] + ".npy"))
        mine = model_to_pixel(scored.x_hat.to(torch.float64))[0].numpy().astype(stored.dtype)
        assert np.array_equal(mine, stored)              # same operator, y and solver stream
        assert scored.psnr[0] == pytest.approx(r.psnr, rel=1e-12)


def test_seeds_follow_the_declared_scheme():
    t = _task("inpaint")
    p = problem.build_problem(t, "d", "img7", torch.rand(1, 8, 8, dtype=torch.float64), 5, 9)
    ident = ("inpaint", "d", "img7")
    assert p.seeds == (problem.derive_seed(5, "operator", *ident), problem.derive_seed(5, "noise", *ident),
                       problem.derive_seed(9, "solver", *ident))
    assert run.derive_seed(5, "noise", *ident) == p.noise_seed     # the runner uses the same function
    a = problem.problem_seeds("inpaint", "d", "img7", 5, 9)
    assert len(set(a)) == 3
    assert problem.problem_seeds("inpaint", "d", "img8", 5, 9)[0] != a[0]      # per image
    assert problem.problem_seeds("inpaint", "d", "img7", 6, 9)[:2] != a[:2]     # per data part
    assert problem.problem_seeds("inpaint", "d", "img7", 5, 8)[:2] == a[:2]     # solver part: solver only
    g1, g2 = p.solver_generator(), p.solver_generator()
    assert torch.equal(torch.randn(4, generator=g1), torch.randn(4, generator=g2))   # fresh each call


def test_problems_do_not_depend_on_batch_composition():
    t = _task("inpaint")
    g = torch.Generator().manual_seed(0)
    xs = {f"i{k}": torch.rand(1, 8, 8, generator=g, dtype=torch.float64) for k in range(4)}
    alone = {k: problem.build_problem(t, "d", k, x, 0, 0) for k, x in xs.items()}
    again = {k: problem.build_problem(t, "d", k, xs[k], 0, 0) for k in reversed(list(xs))}
    for k in xs:
        assert torch.equal(alone[k].y, again[k].y)
        assert torch.equal(alone[k].operator.mask, again[k].operator.mask)
    masks = {tuple(p.operator.mask.flatten().tolist()) for p in alone.values()}
    assert len(masks) == 4                                  # a random mask per image
    # measure(): image k of a batch gets the noise of its own seed, whatever the batch holds
    op = operators.build("denoise", image_shape=(1, 8, 8))
    xb = torch.stack(list(xs.values())) * 2 - 1
    seeds = [11, 12, 13, 14]
    full = problem.measure(op, xb, 0.1, seeds)
    part = problem.measure(op, xb[[2, 0]], 0.1, [seeds[2], seeds[0]])
    assert torch.equal(full[[2, 0]], part)
    with pytest.raises(ValueError, match="noise seeds"):
        problem.measure(op, xb, 0.1, seeds[:3])


def test_solve_and_score_batches_like_single_solves():
    t = _task("denoise", 0.05, "denoise")
    g = torch.Generator().manual_seed(1)
    probs = [problem.build_problem(t, "d", f"i{k}", torch.rand(1, 8, 8, generator=g, dtype=torch.float64), 0, 0)
             for k in range(3)]
    prior = priors.build("gmm-digits")
    s = solvers.build("oracle_sample")
    batched = problem.solve_and_score(s, probs, prior)
    single = [problem.solve_and_score(s, [p], prior) for p in probs]
    assert batched.x_hat.shape == (3, 1, 8, 8)
    for k, one in enumerate(single):
        assert torch.allclose(batched.x_hat[k], one.x_hat[0], atol=1e-10)
        assert batched.psnr[k] == pytest.approx(one.psnr[0], abs=1e-8)
    want = psnr(model_to_pixel(batched.x_hat), torch.cat([p.x for p in probs]))
    assert batched.psnr == pytest.approx(want.tolist(), rel=1e-12)
    with pytest.raises(ValueError):
        problem.solve_and_score(s, [], prior)


# Folders measured by the guard below; operators/ defines ``measure`` and tests/ may call it.
_SCANNED = ("bench", "solvers", "priors", "assets", "scripts", "invbench")
# Files that still measure in a loop of their own: none (the runner builds its rows through
# build_problem too).
_NOT_YET_ON_THE_PIPELINE: set[str] = set()


def test_one_measuring_function_outside_operators_and_tests():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = sorted(str(p.relative_to(root)) for folder in _SCANNED for p in (root / folder).rglob("*.py")
                   if re.search(r"\.measure\(", p.read_text(encoding="utf-8")))
    assert "bench/problem.py" in calls
    assert set(calls) - _NOT_YET_ON_THE_PIPELINE == {"bench/problem.py"}, calls


def test_solve_and_score_refuses_problems_with_different_operators():
    """Random inpainting draws a mask per image: solving two such problems in one call with the
    first one's operator would score the second against the wrong measurement model."""
    t = _task("inpaint")
    g = torch.Generator().manual_seed(2)
    probs = [problem.build_problem(t, "d", f"i{k}", torch.rand(1, 8, 8, generator=g, dtype=torch.float64), 0, 0)
             for k in range(2)]
    with pytest.raises(ValueError, match="share one operator"):
        problem.solve_and_score(solvers.build("oracle_mean"), probs, priors.build("gmm-digits"))


def test_operator_states_holding_arrays_compare_by_value():
    from invbench.operators.base import _same_state

    a = {"w": np.arange(6.0).reshape(2, 3), "k": 2}
    assert _same_state(a, {"w": np.arange(6.0).reshape(2, 3), "k": 2})
    assert not _same_state(a, {"w": np.arange(6.0).reshape(3, 2), "k": 2})
    assert not _same_state(a, {"w": np.arange(6.0).reshape(2, 3) + 1, "k": 2})


def test_images_naming_one_operator_id_share_its_draw_and_nothing_else():
    """``operator_id``: the images share the operator (mask) draw, while each keeps its own noise
    and solver seeds; the shared draw is that of the id, whatever image asks for it first."""
    t = _task("inpaint")
    g = torch.Generator().manual_seed(3)
    xs = [torch.rand(1, 8, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    shared = [problem.build_problem(t, "d", f"i{k}", x, 0, 0, operator_id="g0") for k, x in enumerate(xs)]
    alone = [problem.build_problem(t, "d", f"i{k}", x, 0, 0) for k, x in enumerate(xs)]
    assert len({p.operator_seed for p in shared}) == 1
    assert all(torch.equal(p.operator.mask, shared[0].operator.mask) for p in shared)
    assert not torch.equal(shared[0].operator.mask, problem.build_problem(
        t, "d", "i0", xs[0], 0, 0, operator_id="g1").operator.mask)
    for s, a in zip(shared, alone):
        assert (s.noise_seed, s.solver_seed) == (a.noise_seed, a.solver_seed)
    first = problem.build_problem(t, "d", "i2", xs[2], 0, 0, operator_id="g0")
    assert torch.equal(first.y, shared[2].y)
    # one batched call over the shared draw equals the images solved one by one
    prior, s = priors.build("gmm-digits"), solvers.build("oracle_sample")
    together = problem.solve_and_score(s, shared, prior).x_hat
    for k, p in enumerate(shared):
        assert torch.allclose(together[k], problem.solve_and_score(s, [p], prior).x_hat[0], atol=1e-10)


def test_further_draws_of_one_image_change_only_the_solver_seed():
    p = problem.build_problem(_task("inpaint"), "d", "i0", torch.rand(1, 8, 8, dtype=torch.float64), 0, 0)
    k1, k2 = p.with_solver_part("s/sample1"), p.with_solver_part("s/sample2")
    assert k1.solver_seed == problem.derive_seed("s/sample1", "solver", "inpaint", "d", "i0")
    assert len({p.solver_seed, k1.solver_seed, k2.solver_seed}) == 3
    assert k1.y is p.y and k1.operator is p.operator and k1.noise_seed == p.noise_seed
    assert p.seed_for("reference", "s") == problem.derive_seed("s", "reference", "inpaint", "d", "i0")


def test_batched_splits_where_the_operator_or_sigma_changes():
    g = torch.Generator().manual_seed(4)
    x = [torch.rand(1, 8, 8, generator=g, dtype=torch.float64) for _ in range(6)]
    a = [problem.build_problem(_task("inpaint"), "d", f"i{k}", x[k], 0, 0, operator_id="A") for k in range(3)]
    b = problem.build_problem(_task("inpaint"), "d", "i3", x[3], 0, 0, operator_id="B")
    c = problem.build_problem(_task("inpaint", 0.1), "d", "i4", x[4], 0, 0, operator_id="A")
    groups = list(problem.batched([*a, b, c]))
    assert [len(gr) for gr in groups] == [3, 1, 1]
    assert [len(gr) for gr in problem.batched(a, batch_size=2)] == [2, 1]
    assert [[it[0] for it in gr] for gr in problem.batched(
        [(k, p) for k, p in enumerate(a)], problem_of=lambda it: it[1])] == [[0, 1, 2]]
