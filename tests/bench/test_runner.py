"""Runner: failure isolation, determinism, batch invariance, seeds, cost and metric columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from invbench.bench import config, run, runfiles, store
from invbench.operators.base import same_operator

from tests.helpers import parts

parts.register()
torch.set_num_threads(1)


def _run(tmp_path, text: str, sets=None, out="run", **kw):
    exp = config.loads(text, sets, base_dir=tmp_path)
    p = run.prepare(exp, tmp_path / out)
    run.run(p, tmp_path / out, **kw)
    return store.load_results(tmp_path / out), exp


SOLVERS_ALL = """
[[solvers]]
name = "_test_noisy"

[[solvers]]
name = "_test_noisy"
label = "noisy_nan"
preset = "nan"
tasks = ["sr"]

[[solvers]]
name = "_test_oom"
tasks = ["inpaint"]

[[solvers]]
name = "_test_error"
tasks = ["inpaint"]
"""


def test_failures_are_isolated_per_cell(tmp_path):
    df, _ = _run(tmp_path, parts.toml_config(solvers_=SOLVERS_ALL))
    by = df.groupby(["solver", "task"]).status.agg(lambda s: set(s)).to_dict()
    assert by == {("_test_noisy", "inpaint"): {"ok"}, ("_test_noisy", "sr"): {"ok"},
                  ("noisy_nan", "sr"): {"diverged"}, ("_test_oom", "inpaint"): {"oom"},
                  ("_test_error", "inpaint"): {"error"}}
    err = df[df.status == "error"].message.iloc[0]
    assert err == "RuntimeError: boom"          # one line, type named
    assert "out of memory" in df[df.status == "oom"].message.iloc[0]
    bad = df[df.status != "ok"]
    assert bad.recon_path.isna().all() and bad.psnr.isna().all()
    ok = df[df.status == "ok"]
    assert (ok.message == "").all() and ok.recon_path.notna().all()
    for rel in ok.recon_path:
        assert (tmp_path / "run" / rel).is_file()


def test_skip_reason_recorded(tmp_path):
    tasks = '[[tasks]]\nname = "pr"\noperator = "phase_retrieval"\nnoise_sigma = 0.05\n'
    df, _ = _run(tmp_path, parts.toml_config(tasks=tasks))
    assert set(df.status) == {"skipped"} and len(df) == 3
    assert all("linear" in m for m in df.message)


def test_rows_columns_and_rederivable_measurement(tmp_path):
    from invbench.operators.conventions import model_to_pixel, pixel_to_model

    from invbench import operators

    text = parts.toml_config(extra="save_npy = true", seeds="[0, 3]")
    df, exp = _run(tmp_path, text)
    assert len(df) == 2 * 3 * 2 and df.row_id.is_unique and set(df.status) == {"ok"}
    assert set(df.nfe) == {3} and set(df.vjp) == {3}          # _test_noisy: steps=3, one VJP each
    assert (df.peak_rss_bytes > 0).all() and df.peak_mem_bytes.isna().all()
    assert set(df.torch_version) == {torch.__version__} and all(d.startswith("cpu") for d in df.device)
    assert (df.config_hash == exp.config_hash).all() and (df.seconds > 0).all()
    assert np.allclose(df.sigma_y, 2 * df.noise_sigma)
    # masks differ per image (inpaint_random draws per image), and are re-derivable from operator_seed
    from invbench.bench.datasets import build

    ds = build({"type": "digits", "split": "test", "limit": 3}, tmp_path)
    r = df[(df.task == "inpaint")].iloc[0]
    i = ds.ids.index(r.image_id)
    op = operators.build("inpaint_random", (1, 8, 8), torch.Generator().manual_seed(int(r.operator_seed)), ratio=0.5)
    y = op.measure(pixel_to_model(ds.get(i).float()[None]), r.sigma_y, torch.Generator().manual_seed(int(r.noise_seed)))
    meas = runfiles.read_png(tmp_path / "run" / f"meas/inpaint/digits/{r.image_id}_s{r.seed}.png")
    assert tuple(y.shape[1:]) != (1, 8, 8)   # a vector of observed pixels: visualised as A^+ y
    vis = op.pinv(y)[0]
    assert np.allclose(meas, np.rint(np.clip(model_to_pixel(vis).double().numpy(), 0, 1) * 255) / 255)
    seeds = df[df.task == "inpaint"].operator_seed
    assert seeds.nunique() == len(seeds)
    # stored PSNR / MSE agree with the saved reconstruction and the ground truth
    for _, r in df.iterrows():
        x = np.load(tmp_path / "run" / (r.recon_path[:-4] + ".npy")).astype(np.float64)
        t = ds.get(ds.ids.index(r.image_id)).numpy()
        assert r.mse == pytest.approx(((x - t) ** 2).mean(), rel=1e-4)
        assert r.psnr == pytest.approx(10 * math.log10(1 / ((np.clip(x, 0, 1) - t) ** 2).mean()), abs=1e-3)


def test_cost_counts_match_solver_definition(tmp_path):
    solvers_ = ('[[solvers]]\nname = "dps"\noverrides = { steps = 8 }\n'
                '[[solvers]]\nname = "ddrm"\noverrides = { steps = 5 }\n')
    text = parts.toml_config(solvers_=solvers_, limit=2).replace('"_test-gauss"', '"gmm-digits"')
    df, _ = _run(tmp_path, text)
    assert set(df.status) == {"ok"}
    d = df[df.solver == "dps"]
    assert set(d.nfe) == {8} and set(d.vjp) == {8}   # steps dividing T=1000: N levels exactly
    d = df[df.solver == "ddrm"]
    assert set(d.nfe) == {5} and set(d.vjp) == {0}


GMM_SOLVERS = """
[[solvers]]
name = "dps"
overrides = { steps = 6 }

[[solvers]]
name = "pigdm"
overrides = { steps = 5 }

[[solvers]]
name = "oracle_sample"
"""


def _gmm_text(**kw):
    return parts.toml_config(solvers_=GMM_SOLVERS, extra="save_npy = true", limit=5, **kw).replace('"_test-gauss"',
                                                                                                   '"gmm-digits"')


def _recons(run_dir, df):
    return {r.row_id: np.load(run_dir / (r.recon_path[:-4] + ".npy")) for _, r in df.iterrows()}


def test_two_runs_bitwise_identical(tmp_path):
    a, _ = _run(tmp_path, _gmm_text(), out="a")
    b, _ = _run(tmp_path, _gmm_text(), out="b")
    assert set(a.status) == {"ok"}
    cols = ["row_id", "status", "psnr", "mse", "consistency", "nfe", "vjp", "operator_seed", "noise_seed",
            "solver_seed"]
    assert a[cols].equals(b[cols])
    ra, rb = _recons(tmp_path / "a", a), _recons(tmp_path / "b", b)
    assert all(np.array_equal(ra[k], rb[k]) for k in ra)
    for rel in a.recon_path:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_batch_size_invariance(tmp_path):
    a, _ = _run(tmp_path, _gmm_text(batch_size=1), out="b1")
    b, _ = _run(tmp_path, _gmm_text(batch_size=4), out="b4")
    assert sorted(a.row_id) == sorted(b.row_id)            # batch size is not part of the config hash
    ra, rb = _recons(tmp_path / "b1", a), _recons(tmp_path / "b4", b)
    assert max(float(np.abs(ra[k] - rb[k]).max()) for k in ra) <= 1e-5
    # deterministic operator (sr4_avgpool) is batched, per-image random masks are not
    assert set(b[b.task == "sr"].batch_size) == {4, 1} and set(b[b.task == "inpaint"].batch_size) == {1}
    assert set(a.batch_size) == {1}


def test_cells_cheap_first(tmp_path):
    text = parts.toml_config(solvers_='[[solvers]]\nname = "dps"\noverrides = { steps = 50 }\n'
                              '[[solvers]]\nname = "oracle_map"\n').replace('"_test-gauss"', '"gmm-digits"')
    exp = config.loads(text, base_dir=tmp_path)
    p = run.prepare(exp)
    order = [c.solver for c in p.cells]
    assert order.index("dps") > max(i for i, s in enumerate(order) if s == "oracle_map")
    assert [c.cost for c in p.cells] == sorted(c.cost for c in p.cells)


def test_derive_seed_is_stable():
    assert run.derive_seed(0, "noise", "t", "d", "i") == run.derive_seed(0, "noise", "t", "d", "i")
    assert run.derive_seed(0, "noise", "t", "d", "i") != run.derive_seed(1, "noise", "t", "d", "i")
    assert 0 <= run.derive_seed("x") < 2**63


def test_same_operator():
    from invbench import operators

    g = lambda s: torch.Generator().manual_seed(s)
    a = operators.build("inpaint_random", (1, 8, 8), g(1), ratio=0.5)
    assert same_operator(a, operators.build("inpaint_random", (1, 8, 8), g(1), ratio=0.5))
    assert not same_operator(a, operators.build("inpaint_random", (1, 8, 8), g(2), ratio=0.5))
    sr = [operators.build("sr4_avgpool", (1, 8, 8), g(s)) for s in (1, 2)]
    assert same_operator(*sr)   # deterministic: batched whatever the seed


def _sw_text(extra: str) -> str:
    from tests.helpers.reliability import gmm_text

    text = gmm_text("sw", limit=2, seeds="[0, 1]", extra=extra)
    text = text.replace('image = ["psnr", "mse", "consistency", "posterior"]',
                        'image = ["psnr", "posterior"]\nset = ["sliced_wasserstein"]\n\n'
                        '[metrics.sliced_wasserstein]\nn_projections = 16\nn_reference = 40')
    phase = '[[tasks]]\nname = "phase"\noperator = "phase_retrieval"\nnoise_sigma = 0.05\n\n'
    return text.replace('[[solvers]]\nname = "dps"', phase + '[[solvers]]\nname = "dps"', 1)


def test_posterior_set_metric_compares_each_measurement_with_its_posterior(tmp_path):
    """A set metric that declares ``needs_posterior`` gets, per image, the samples over seeds and
    the exact posterior of that image's one measurement; the stored value is the metric's own
    combination (the mean over images), recomputed here from the stored reconstructions."""
    from invbench.bench.problem import build_problem
    from invbench.bench.run.rows import recon_rel

    exp = config.loads(_sw_text("data_seed = 3"), base_dir=tmp_path)
    p = run.prepare(exp, tmp_path / "run")
    run.run(p, tmp_path / "run")
    sm = store.load_set_metrics(tmp_path / "run").set_index(["solver", "task"])
    cell = next(c for c in p.cells if (c.solver, c.task.name) == ("oracle_sample", "inpaint"))
    metric = p.set_metrics[0]
    vals = []
    for i, iid in enumerate(p.datasets["digits"].ids):
        x = p.image("digits", i)
        pb = build_problem(cell.task, "digits", iid, x, "data3", 0, dtype=p.dtype)
        post = p.priors[cell.prior].inner.posterior(pb.operator, pb.y, cell.task.sigma_y)
        rels = [recon_rel(cell, iid, s, "npy") for s in (0, 1)]
        samples = torch.stack([torch.as_tensor(np.load(tmp_path / "run" / r)).double() for r in rels])
        vals.append(metric.compute(samples, None, posterior=post)[0])
    row = sm.loc[("oracle_sample", "inpaint")]
    assert row.n == 4 and row.note.startswith("mean over 2 images")
    assert row.value == pytest.approx(float(np.mean(vals)), rel=1e-12)
    assert sm.loc[("dps", "phase")].note == "unavailable: exact posterior needs a linear operator"
    # per-image posterior columns: filled for linear operators, NULL for the nonlinear one
    df = store.load_results(tmp_path / "run")
    ok = df[df.status == "ok"]
    assert ok[ok.task != "phase"].dist_to_map.notna().all()
    assert ok[ok.task == "phase"].dist_to_map.isna().all()


def test_posterior_set_metric_needs_one_measurement_per_image(tmp_path):
    exp = config.loads(_sw_text(""), base_dir=tmp_path)
    run.run(run.prepare(exp, tmp_path / "run"), tmp_path / "run")
    notes = set(store.load_set_metrics(tmp_path / "run").note)
    assert "unavailable: needs data_seed and >= 2 seeds (samples for one measurement)" in notes
    assert not any(n.startswith("mean over") for n in notes)


def test_one_label_with_a_preset_per_task(tmp_path):
    """Entries sharing a label on disjoint tasks (e.g. presets tuned per task) run each task with
    their own hyperparameters and read as one solver; a label shared on a common task is refused."""
    per_task = ('[[solvers]]\nname = "dps"\ntasks = ["inpaint"]\noverrides = { steps = 8 }\n'
                '[[solvers]]\nname = "dps"\ntasks = ["sr"]\noverrides = { steps = 5 }\n')
    text = parts.toml_config(solvers_=per_task, limit=2).replace('"_test-gauss"', '"gmm-digits"')
    df, _exp = _run(tmp_path, text)
    assert set(df.status) == {"ok"} and set(df.solver) == {"dps"}
    assert set(df[df.task == "inpaint"].nfe) == {8} and set(df[df.task == "sr"].nfe) == {5}
    clash = per_task.replace('tasks = ["sr"]', 'tasks = ["sr", "inpaint"]')
    with pytest.raises(config.ConfigError, match=r"solvers\[1\]\.label: duplicate label 'dps'.*task 'inpaint'"):
        config.loads(parts.toml_config(solvers_=clash))
