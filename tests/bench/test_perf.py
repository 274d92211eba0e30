"""The perf machinery (bench/studies/perf.py, bench/studies/perf_timing.py): the JSON has the right fields, ratios
are computed pair by pair from the measured parts, NFE/VJP are the solvers' formulas, contenders
are interleaved with the warm-up excluded. No timing assertions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from invbench.bench import cli
from invbench.bench.run import nfe_per_image
from invbench.bench.studies import perf, perf_tables
from invbench.bench.studies import perf_timing as pc

from invbench import solvers


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf") / "perf.json"
    md = out.with_suffix(".md")
    rc = perf.main(["--quick", "--reps", "2", "--cases", "floor,throughput,fast_paths", "--json", str(out),
                    "--markdown", str(md), "-q"])
    assert rc == 0
    md2 = out.with_suffix(".again.md")  # re-rendering the saved JSON reproduces the report
    assert perf.main(["--from-json", str(out), "--markdown", str(md2), "-q"]) == 0
    assert md2.read_text() == md.read_text()
    return json.loads(out.read_text()), md.read_text()


# every solver of the package that calls the network runs in the floor and throughput cases
NETWORK_SOLVERS = {n for n in solvers.NAMES if not n.startswith("oracle_")}


def _close(a, b, rel=1e-4):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def test_meta_fields(quick):
    res, _ = quick
    m = res["meta"]
    for k in ("device", "device_name", "torch", "threads", "reps", "warmup_rounds", "prior", "load_avg_before",
              "load_avg_after", "settings", "floor_definition", "command", "wall_seconds"):
        assert k in m, k
    assert m["reps"] == 2 and m["quick"] is True and m["device"] == "cpu"
    assert set(m["prior"]) == {"name", "trained", "weights", "params"}
    if not m["prior"]["trained"]:
        assert pc.WEIGHTS_NOT_TRAINED in m["prior"]["weights"]


def test_floor_ratio_is_pairwise_from_measured_parts(quick):
    res, _ = quick
    rows = {r["solver"]: r for r in res["floor"]}
    assert set(rows) == NETWORK_SOLVERS
    for r in rows.values():
        tf, tfb, ts = r["t_forward"]["values"], r["t_forward_backward"]["values"], r["t_solver"]["values"]
        assert len(tf) == len(tfb) == len(ts) == 2
        floors = [(r["nfe"] - r["vjp"]) * a + r["vjp"] * b for a, b in zip(tf, tfb, strict=True)]
        assert all(_close(x, y) for x, y in zip(floors, r["floor_s"]["values"], strict=True))
        ratios = sorted(t / f for t, f in zip(ts, floors, strict=True))
        assert _close(r["ratio"]["min"], ratios[0]) and _close(r["ratio"]["max"], ratios[-1])
        assert _close(r["ratio"]["median"], sum(ratios) / 2)  # median of two = their mean
        net = r["network_seconds_in_run"]["values"]
        assert all(0 < x < t for x, t in zip(net, ts, strict=True))  # the network runs inside the solve
        assert _close(r["ratio_in_run"]["min"], min(t / x for t, x in zip(ts, net, strict=True)), rel=1e-3)
        lit = [r["nfe"] * a + r["vjp"] * b for a, b in zip(tf, tfb, strict=True)]
        assert _close(r["ratio_literal_formula"]["min"], min(t / f for t, f in zip(ts, lit, strict=True)))


def test_floor_counts_match_solver_formulas(quick):
    res, _ = quick
    cfg = perf.SETTINGS["quick"]["floor"]
    rows = {r["solver"]: r for r in res["floor"]}
    for name in ("dps", "pigdm"):
        n = cfg[name]["overrides"]["steps"]
        assert (rows[name]["nfe"], rows[name]["vjp"]) == (n, n)
    n = cfg["ddrm"]["overrides"]["steps"]
    assert (rows["ddrm"]["nfe"], rows["ddrm"]["vjp"]) == (n, 0)
    N, K = cfg["vml_map"]["overrides"]["n_levels"], cfg["vml_map"]["overrides"]["inner_steps"]
    assert (rows["vml_map"]["nfe"], rows["vml_map"]["vjp"]) == (N * (K + 1), N * K)
    for name in NETWORK_SOLVERS - set(cfg):   # the registry's other solvers, at their QUICK settings
        cls = solvers.get(name)
        assert rows[name]["overrides"] == cls.QUICK
        assert rows[name]["nfe"] == nfe_per_image(cls.from_preset("default", **cls.QUICK)) > 0


def test_throughput_images_per_second_and_memory(quick):
    res, _ = quick
    assert {r["solver"] for r in res["throughput"]} == NETWORK_SOLVERS
    batches = [str(b) for b in perf.SETTINGS["quick"]["throughput_batches"]]
    for r in res["throughput"]:
        assert list(r["batches"]) == batches
        for b in batches:
            cell = r["batches"][b]
            ips = sorted(int(b) / s for s in cell["seconds"]["values"])
            assert _close(cell["images_per_s"]["min"], ips[0]) and _close(cell["images_per_s"]["max"], ips[-1])
            assert cell["memory"]["peak_bytes"] > 0 and cell["memory"]["increase_bytes"] >= 0
            assert "RSS" in cell["memory"]["kind"]


def test_fast_paths_case_default_row_is_exact(quick):
    res, _ = quick
    rows = {r["fast_paths"]: r for r in res["fast_paths"]}
    assert {"default", "bf16", "channels_last"} <= set(rows)
    assert rows["default"]["max_abs_diff_D"] == 0.0
    assert rows["default"]["ratio_to_default"]["values"] == [1.0, 1.0]


def test_markdown_report(quick):
    res, md = quick
    assert res["meta"]["device_name"] in md
    assert "invbench perf --quick" in md  # the regeneration command
    for head in ("Floor ratio", "Throughput", "Fast paths"):
        assert head in md


def test_interleave_order_and_warmup_excluded():
    calls = []
    t = pc.interleave([("a", lambda: calls.append("a")), ("b", lambda: calls.append("b"))], reps=3, device="cpu",
                      warmup=1)
    # 1 warm-up round, then 3 timed rounds with the order reversed every other round
    assert calls == ["a", "b"] + ["a", "b"] + ["b", "a"] + ["a", "b"]
    assert [len(v) for v in t.values()] == [3, 3]


def test_pair_ratios_and_stats():
    st = pc.pair_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 4.0])  # 2, 3, 1
    assert (st["median"], st["min"], st["max"], st["n"]) == (2.0, 1.0, 3.0, 3)
    with pytest.raises(ValueError):
        pc.pair_ratios([1.0], [1.0, 2.0])
    assert pc.floor_seconds(10, 4, 1.0, 3.0) == 6 * 1.0 + 4 * 3.0


def test_perf_clock_counts_like_counting_prior_and_clocks_backward():
    """The perf study clocks the network with the harness's ClockedPrior (one clock for both)."""
    from invbench.bench.cost.netclock import ClockedPrior
    from invbench.priors import CountingPrior

    prior, _ = pc.timing_prior("cpu")
    prob = pc.make_problem("inpaint_random", 1, params={"ratio": 0.5})
    for name, ov in (("dps", {"steps": 2}), ("ddrm", {"steps": 2})):
        tp, cp = ClockedPrior(prior), CountingPrior(prior)
        a = pc.run_solver(name, prob, tp, overrides=ov)
        b = pc.run_solver(name, prob, cp, overrides=ov)
        assert torch.equal(a, b)  # clocking does not change the computation
        assert (tp.nfe, tp.vjp) == (cp.nfe, cp.vjp)
        assert tp._fwd_s > 0 and (tp._bwd_s > 0) == (cp.vjp > 0)
        assert tp.network_seconds() == tp._fwd_s + tp._bwd_s


def test_problems_are_build_problem_s_with_one_operator_per_batch():
    """make_problem builds each image by build_problem (seed parts perf/<seed>, operator id
    "shared"): the batch shares one operator draw (one solver call), noise and solver seeds are
    each image's own, and the first images of a batch are the smaller batch."""
    from invbench.bench import bundled
    from invbench.bench.config.spec import TaskSpec
    from invbench.bench.problem import batched, build_problem

    prob = pc.make_problem("inpaint_random", 3, params={"ratio": 0.5}, seed=1)
    assert [len(b) for b in batched(prob.problems)] == [3]
    task = TaskSpec("inpaint_random", "inpaint_random", 0.05, {"ratio": 0.5})
    crops = bundled.heldout_crops(3, size=32, seed=1, split="test")
    for i, p in enumerate(prob.problems):
        q = build_problem(task, pc.BUNDLED_TEST, f"crop{i:04d}", crops[i], "perf/1", "perf/1",
                          operator_id=pc.SHARED_OPERATOR, dtype=torch.float32)
        assert p.seeds == q.seeds and torch.equal(prob.y[i : i + 1], q.y)
    assert len({p.noise_seed for p in prob.problems}) == 3
    assert len({p.solver_seed for p in prob.problems}) == 3
    assert pc.solver_seeds(prob, 2) == [p.solver_seed for p in prob.problems[:2]]
    assert pc.solver_seeds(prob, 3, seed=1) == pc.solver_seeds(prob, 3)
    small = pc.make_problem("inpaint_random", 2, params={"ratio": 0.5}, seed=1)
    assert torch.equal(small.y, prob.y[:2])
    with pytest.raises(ValueError):
        pc.make_problem("inpaint_random", 1, images=crops)  # given images must be named


def test_vml_vs_dps_without_trained_weights_says_so():
    info = pc.PriorInfo("x", False, "random", 1)
    assert perf.case_vml_vs_dps({"prior_info": info, "prior": None, "device": "cpu",
                                 "cfg": perf.SETTINGS["quick"]}) == {
        "status": pc.WEIGHTS_NOT_TRAINED}


def test_dinv_denoiser_unit_conversion():
    pytest.importorskip("deepinv")
    prior, _ = pc.timing_prior("cpu")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.1, 0.3])
    den = pc.dinv_denoiser(prior, noise_factor=0.5)
    with torch.no_grad():
        got = den(x, s)
        want = (prior.denoise(2 * x - 1, 2 * 0.5 * s) + 1) / 2
    assert torch.equal(got, want) and got.dtype == torch.float32


def test_cli_perf_bad_input(capsys):
    assert cli.main(["perf", "--reps", "2"]) == 2  # < 5 repetitions without --quick
    assert "reps" in capsys.readouterr().err
    assert cli.main(["perf", "--quick", "--cases", "nope"]) == 2
    assert "unknown case" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick_quality():
    pytest.importorskip("deepinv")
    res = perf.run(quick=True, reps=2, cases=("vs_deepinv", "vml_vs_dps"), verbose=False)
    if res["vml_vs_dps"].get("status"):
        pytest.skip(f"small-cpu weights: {res['vml_vs_dps']['status']}")
    return res


def test_vs_deepinv_dps_same_noise_gives_the_same_images(quick_quality):
    """Ours configured as deepinv's DPS (clip to model [-3, 1], deepinv's step schedule), drawing
    from a generator seeded like deepinv's: per image the same PSNR up to float32 rounding (with
    independent noise the two differ by dB at these step counts)."""
    dps = next(r for r in quick_quality["vs_deepinv"] if r["solver"] == "dps")
    q = dps["quality"]
    assert q["common_random_numbers"] and q["n_images"] == perf.SETTINGS["quick"]["quality_images"]["dps"]
    d = [a - b for a, b in zip(q["psnr_ours_per_image"], q["psnr_deepinv_per_image"], strict=True)]
    assert max(abs(v) for v in d) < 0.05, d
    assert dps["nfe_ours"] == dps["nfe_deepinv"] == dps["vjp_ours"] == perf.SETTINGS["quick"]["dps_steps"]
    rows = {r["solver"]: r for r in quick_quality["vs_deepinv"]}
    assert set(rows) == {"dps", "ddrm", "diffpir"}
    dp = rows["diffpir"]   # DiffPIR: one network call per iteration in both, no VJP in ours
    assert dp["nfe_ours"] == dp["nfe_deepinv"] == perf.SETTINGS["quick"]["diffpir_steps"] and dp["vjp_ours"] == 0
    for r in quick_quality["vs_deepinv"]:  # the loop-only (null network) timings are there for both
        assert r["loop_ours"]["n"] == r["loop_deepinv"]["n"] == r["t_ours"]["n"]


def test_vml_vs_dps_rows_and_reference(quick_quality):
    v = quick_quality["vml_vs_dps"]
    cfg = perf.SETTINGS["quick"]
    assert len(v["rows"]) == len(perf.DEMO_TASKS) * (len(cfg["vml_dps_steps"]) + len(cfg["vml_presets"]))
    for task, *_ in perf.DEMO_TASKS:
        ref = perf_tables.vml_reference(v, task)
        assert ref["solver"] == "dps" and ref["budget"]["steps"] == cfg["vml_dps_steps"][0] == v["reference_dps_steps"]
        for r in (r for r in v["rows"] if r["task"] == task and r["solver"] == "vml_map"):
            N, K = r["budget"]["n_levels"], r["budget"]["inner_steps"]
            assert (r["nfe"], r["vjp"]) == (N * (K + 1), N * K)   # counted == the solver's formula
        for r in (r for r in v["rows"] if r["task"] == task and r["solver"] == "dps"):
            assert r["nfe"] == r["vjp"] == r["budget"]["steps"]
    md = perf.render_tables({**quick_quality, "meta": {**quick_quality["meta"], "wall_seconds": 0.0}})
    assert f"time ÷ DPS-{cfg['vml_dps_steps'][0]}" in md and "loop only" in md


def test_null_network_is_restored():
    prior, _ = pc.timing_prior("cpu")
    net = prior.net
    x = torch.randn(1, 3, 32, 32)
    with pc.null_network(prior):
        assert prior.net is not net
        d = prior.denoise(x, torch.tensor([0.5]))
        assert torch.allclose(d, x - 0.5 * 0.1 * x / (1 + 0.25) ** 0.5)
    assert prior.net is net


@pytest.mark.slow
def test_gpu_script_smoke_runs_on_cpu(tmp_path):
    """scripts/gpu_perf.py (the prepared GPU pass) end to end in its --smoke mode on CPU: the real
    ADM (FFHQ-size) architecture at 32×32, every solver, default and bf16: JSON and table written.
    Slow (about 4 minutes on 2 cores): `make test-all`."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "scripts" / "gpu_perf.py"), "--smoke", "--out", str(tmp_path)],
                       cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    js = list(tmp_path.glob("gpu-*-smoke.json"))
    assert len(js) == 1 and js[0].with_suffix(".md").exists()
    res = json.loads(js[0].read_text())
    cells = res["models"][0]["cells"]
    assert {c["fast_paths"] for c in cells} == {"default", "bf16"}
    for c in cells:
        assert set(c["solvers"]) == {"dps", "ddrm", "pigdm", "vml_map"}
        for sv in c["solvers"].values():
            assert sv["seconds_per_image"] > 0 and sv["nfe"] > 0


def test_weights_are_named_relative_to_the_repository():
    """Reports name the small-cpu weights by their path in the repository, not the machine's folders."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert pc._shown(root / "priors" / "data" / "small_cpu.pt") == str(Path("priors") / "data" / "small_cpu.pt")
    assert pc._shown(Path("/elsewhere/w.pt")) == "/elsewhere/w.pt"


@pytest.mark.parametrize("name", ["all-solvers-cpu", "vs-deepinv-cpu"])
def test_committed_reports_render_again_byte_for_byte(name):
    """The committed perf reports are the markdown of their committed JSON: rendering it again
    (perf_tables, no measurement) gives the same bytes."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "reports" / "perf"
    res = json.loads((folder / f"{name}.json").read_text())
    text = perf.render_markdown(res, res["meta"]["command"])
    assert text == (folder / f"{name}.md").read_text()
