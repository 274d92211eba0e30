"""The run-level error control of ``invbench compare``, on synthetic calibrated runs whose
per-image values the tests set: one decision per run (Holm over every quality and time test),
paired tests (repeats of one call averaged, units paired by image), no interval below the
minimum n, cells whose cost cannot be judged reported "not gated" with the reason (never "ok"),
no absolute slack that blinds short cells, and a load-shifted cheap-network cell never flagged."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from invbench.bench.gate.compare import main

from tests.helpers import report_fixture
from tests.helpers.report_fixture import CellSpec, make_run

MACHINE = {"cpu_model": "Test CPU", "cpu_capability": "AVX2", "gpu_name": "", "torch_threads": "1",
           "device": "cpu: Test CPU"}
NET = CellSpec("dps", "default", "inpaint", "imgs", "small-cpu", 25.0, 0.2, 10, 10)       # a real network
CHEAP = CellSpec("ddrm", "default", "inpaint", "imgs", "gmm-digits", 25.0, 0.004, 10, 0)   # analytic prior
ORACLE = CellSpec("oracle_map", "default", "inpaint", "imgs", "gmm-digits", 25.0, 0.01, 0, 0)

Row = dict  # row_id, solver, prior, image_id, seed


def synth(run_dir: Path, cells: list[CellSpec], monkeypatch, *, images: int = 12, seeds=(0,)) -> Path:
    """A calibrated run of ``cells`` on ``images`` images × ``seeds``: every row its own timed
    call (``timings``), network share 95 % (real network) / 30 % (analytic) / none (oracle)."""
    monkeypatch.setitem(report_fixture.DATASETS, "imgs", ((1, 8, 8), [f"i{k:02d}" for k in range(images)]))
    monkeypatch.setattr(report_fixture, "SEEDS", tuple(seeds))
    make_run(run_dir, cells, write_images=False)
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        con.execute("ALTER TABLE results ADD COLUMN net_seconds REAL")
        con.execute("ALTER TABLE results ADD COLUMN timings TEXT")
        for k, v in {**MACHINE, "calibration": json.dumps({"small-cpu": {"t_forward_s": 0.01}})}.items():
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, v))
    con.close()
    set_rows(run_dir, lambda r: {"psnr": 25.0 + 0.1 * int(r["image_id"][1:])})
    set_timings(run_dir, lambda r: [_base_seconds(r)])
    return run_dir


def _share(r: Row) -> float:
    return 0.0 if r["solver"].startswith("oracle") else 0.95 if r["prior"] == "small-cpu" else 0.3


def _base_seconds(r: Row) -> float:
    """A per-image time that varies a lot between images (as real images and masks do)."""
    k = int(r["image_id"][1:])
    return (0.2 if r["prior"] == "small-cpu" else 0.004) * (1.0 + 2.0 * (k % 4))


def _rows(run_dir: Path) -> list[Row]:
    con = sqlite3.connect(run_dir / "results.sqlite")
    rows = [dict(zip(("row_id", "solver", "prior", "image_id", "seed"), r, strict=True)) for r in
            con.execute("SELECT row_id, solver, prior, image_id, seed FROM results WHERE status = 'ok'")]
    con.close()
    return rows


def set_rows(run_dir: Path, fn: Callable[[Row], dict]) -> None:
    """Set columns of every ok row to ``fn(row)`` (a dict of column -> value)."""
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        for r in _rows(run_dir):
            for col, v in fn(r).items():
                con.execute(f"UPDATE results SET {col} = ? WHERE row_id = ?", (v, r["row_id"]))
    con.close()


def set_timings(run_dir: Path, fn: Callable[[Row], list[float] | None], share: Callable[[Row], float] = _share) -> None:
    """Every ok row its own call timed ``fn(row)`` (seconds of each repeat; None: unchanged);
    network seconds = ``share(row)`` × seconds."""
    con = sqlite3.connect(run_dir / "results.sqlite")
    with con:
        for r in _rows(run_dir):
            secs = fn(r)
            if secs is None:
                continue
            nets = [share(r) * s for s in secs]
            con.execute("UPDATE results SET seconds = ?, net_seconds = ?, timings = ? WHERE row_id = ?",
                        (secs[0], nets[0], json.dumps({"call": r["row_id"][:16], "seconds": secs, "net_seconds": nets}),
                         r["row_id"]))
    con.close()


def judge(capsys, base: Path, new: Path, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main([str(base), str(new), "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def cell(d: dict, solver: str) -> dict:
    return next(c for c in d["cells"] if c["solver"] == solver)


def _noisy(r: Row, rng: np.random.Generator, jitter: float = 0.02) -> list[float]:
    return [_base_seconds(r) * float(np.exp(rng.normal(0, jitter)))]


# ----------------------------------------------------------------------------- run-level error control


def test_quality_verdict_is_one_decision_per_run_holm_across_cells(tmp_path, monkeypatch, capsys):
    """30 cells whose mean PSNR drops 0.35 dB with per-image noise 0.35 dB (12 images): each
    cell's own one-sided test of "worse by more than 0.1 dB" gives p = 0.016, so a per-cell
    verdict (its 95 % interval beyond the drop) flags every cell and the run; the run's verdict
    over its 30 quality tests (Holm) does not (exit 0). The same drop with little noise is
    flagged in every cell (exit 1)."""
    cells = [CellSpec(f"s{k:02d}", "default", "inpaint", "imgs", "small-cpu", 25.0, 0.2, 10, 10) for k in range(30)]
    base, new = synth(tmp_path / "b", cells, monkeypatch), synth(tmp_path / "n", cells, monkeypatch)
    z = np.random.default_rng(0).normal(0, 1, 12)
    z = (z - z.mean()) / z.std(ddof=1)                       # exactly mean 0, sd 1
    set_rows(new, lambda r: {"psnr": 25.0 + 0.1 * int(r["image_id"][1:]) - 0.35 + 0.35 * z[int(r["image_id"][1:])]})
    code, d = judge(capsys, base, new)
    assert code == 0 and d["regressed"] == 0
    q = [c["quality"] for c in d["cells"]]
    assert all(0.01 < x["p_value"] < 0.025 for x in q)       # each cell alone: "significant"
    assert d["family"]["quality"] == 30 and all(x["p_adjusted"] > 0.05 for x in q)
    set_rows(new, lambda r: {"psnr": 25.0 + 0.1 * int(r["image_id"][1:]) - 0.35 + 0.01 * z[int(r["image_id"][1:])]})
    code, d = judge(capsys, base, new)
    assert code == 1 and d["regressed"] == 30


def test_a_drop_within_the_threshold_is_never_flagged_however_many_images(tmp_path, monkeypatch, capsys):
    """A consistent 0.1 dB drop (the threshold itself) passes; 0.12 dB without noise is flagged."""
    base, new = synth(tmp_path / "b", [NET], monkeypatch), synth(tmp_path / "n", [NET], monkeypatch)
    set_rows(new, lambda r: {"psnr": 25.0 + 0.1 * int(r["image_id"][1:]) - 0.1})
    assert judge(capsys, base, new)[0] == 0
    set_rows(new, lambda r: {"psnr": 25.0 + 0.1 * int(r["image_id"][1:]) - 0.12})
    assert judge(capsys, base, new)[0] == 1


# ----------------------------------------------------------------------------- paired, honest tests


def test_time_is_tested_paired_by_image(tmp_path, monkeypatch, capsys):
    """Per-image times vary ×7 between images; the candidate is ×1.5 slower on every image.
    Unpaired (a rank test of the two samples) they overlap, p = 0.06; paired by image the log
    ratios are all near log 1.5: a regression, with its Hodges–Lehmann ratio and interval."""
    rng = np.random.default_rng(1)
    base, new = synth(tmp_path / "b", [NET], monkeypatch), synth(tmp_path / "n", [NET], monkeypatch)
    set_timings(base, lambda r: _noisy(r, rng))
    set_timings(new, lambda r: [1.5 * s for s in _noisy(r, rng)])
    code, d = judge(capsys, base, new, "--cost", "wall")
    sp = cell(d, "dps")["speed"]
    assert code == 1 and sp["basis"] == "wall" and sp["n"] == 12
    assert 1.4 < sp["ratio"] < 1.6 and sp["ci"][0] > 1.2 and sp["p_adjusted"] <= 0.05


def test_repeats_of_one_call_are_one_unit_not_samples(tmp_path, monkeypatch, capsys):
    """2 images timed 10 times each (timing_repeats = 10), ×3 slower: 2 units, not 20 samples —
    the cell's time is "not gated" (fewer than --min-samples calls), never a regression on
    back-to-back repeats, and no interval is printed for n = 2."""
    base, new = synth(tmp_path / "b", [NET], monkeypatch, images=2), synth(tmp_path / "n", [NET], monkeypatch, images=2)
    set_timings(base, lambda r: [_base_seconds(r) * (1 + 0.01 * k) for k in range(10)])
    set_timings(new, lambda r: [3 * _base_seconds(r) * (1 + 0.01 * k) for k in range(10)],
                share=lambda r: _share(r) / 3)    # x3 outside the network
    code, d = judge(capsys, base, new)
    c = cell(d, "dps")
    assert code == 0 and c["verdict"] == "not gated" and c["speed"]["n"] == 2
    assert c["speed"]["ci"] == [None, None] and c["quality"]["ci"] == [None, None]
    assert any("time not gated: 2 paired timed call(s) < 6" in x for x in c["not_gated"])
    assert main([str(base), str(new), "--fail-not-gated"]) == 3
    text = capsys.readouterr().out
    assert "x3.00 n=2 not gated" in text and "[" not in text.split("x3.00")[1].split("n=2")[0]


# ----------------------------------------------------------------------------- no blind cells, no fooled cells


def test_cheap_network_cell_shifted_by_load_is_not_gated_not_flagged(tmp_path, monkeypatch, capsys):
    """An analytic-prior cell (network 30 % of the solve) whose solver time / network time
    moved ×2.25 on every call under load (the busy-loop pair of the smoke config): the
    normalised cost does not hold for it, so its time is "not gated" with the reason — exit 0,
    never a regression, never "ok"."""
    rng = np.random.default_rng(2)
    base, new = synth(tmp_path / "b", [CHEAP, NET], monkeypatch), synth(tmp_path / "n", [CHEAP, NET], monkeypatch)
    set_timings(base, lambda r: _noisy(r, rng))
    # under load: the solve takes 3x, its network only 1.33x -> normalised ratio x2.25
    set_timings(new, lambda r: [3 * s for s in _noisy(r, rng)],
                share=lambda r: _share(r) / 2.25 if r["prior"] == "gmm-digits" else _share(r))
    code, d = judge(capsys, base, new)
    c = cell(d, "ddrm")
    assert code == 0 and c["verdict"] == "not gated"
    assert c["speed"]["gated"] is False and c["speed"]["ratio"] == pytest.approx(2.25, rel=0.05)
    assert any("network is 30% of the solve time" in x for x in c["not_gated"])
    assert cell(d, "dps")["verdict"] == "ok"


def test_short_oracle_cell_is_never_silently_passed(tmp_path, monkeypatch, capsys):
    """A 16 ms cell without network time, ×3 slower (+32 ms, within the former absolute slack
    of 50 ms): by default its time is "not gated" with the reason (no network time to normalise
    by); with --cost wall it is a regression — no absolute slack hides a short cell."""
    base, new = synth(tmp_path / "b", [ORACLE], monkeypatch), synth(tmp_path / "n", [ORACLE], monkeypatch)
    set_timings(new, lambda r: [3 * _base_seconds(r)])
    code, d = judge(capsys, base, new)
    c = cell(d, "oracle_map")
    assert code == 0 and c["verdict"] == "not gated" and "no network time" in c["not_gated"][0]
    code, d = judge(capsys, base, new, "--cost", "wall")
    assert code == 1 and cell(d, "oracle_map")["speed"]["ratio"] == pytest.approx(3.0)


def test_a_cell_that_can_never_reach_the_run_level_is_left_out_not_counted(tmp_path, monkeypatch, capsys):
    """With 6 timed calls the smallest signed-rank p is 1/64: among 40 quality tests it can never
    pass Holm, so it is left out of the family (Tarone) and its time is "not gated", named."""
    cells = [CellSpec(f"s{k:02d}", "default", "inpaint", "imgs", "small-cpu", 25.0, 0.2, 10, 10) for k in range(40)]
    base, new = (synth(tmp_path / w, cells, monkeypatch, images=6) for w in "bn")
    set_timings(new, lambda r: [2 * _base_seconds(r)])
    code, d = judge(capsys, base, new)
    assert code == 0 and d["family"]["left_out"] == 40 and d["family"]["time"] == 0
    assert all(any("can never reach the run's significance level" in x for x in c["not_gated"]) for c in d["cells"])


def test_a_cell_without_paired_metric_values_is_not_gated_not_ok(tmp_path, monkeypatch, capsys):
    """The new run stored no PSNR for one cell (every value NaN): that cell's quality is "not
    gated", named — not a silent "ok"."""
    base, new = synth(tmp_path / "b", [NET, CHEAP], monkeypatch), synth(tmp_path / "n", [NET, CHEAP], monkeypatch)
    set_rows(new, lambda r: {"psnr": None} if r["solver"] == "dps" else {})
    code, d = judge(capsys, base, new)
    c = cell(d, "dps")
    assert code == 0 and c["verdict"] == "not gated"
    assert "quality not gated: no image has a finite psnr in both runs" in c["not_gated"]
