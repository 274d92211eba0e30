"""On a real run with two seeds per image, every mark of the report agrees with the interval
printed beside it, oracles carry no mark, and the paired n is the number of images (not rows).
The same check runs on fresh runs of both demo configs with the slow tests."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from tests.helpers.reliability import cli, gmm_text

REPO = Path(__file__).resolve().parents[2]


def check_marks(csv_text: str, images: dict[str, int]) -> int:
    """Assert the marks of leaderboard.csv against their own intervals; the number of boards."""
    recs = list(csv.DictReader(io.StringIO(csv_text)))
    boards: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        boards.setdefault((r["dataset"], r["task"]), []).append(r)
    for (ds, _task), rows in boards.items():
        solvers = [r for r in rows if r["is_oracle"] == "False" and r["rank"] != ""]
        oracles = [r for r in rows if r["is_oracle"] == "True"]
        assert all(r["is_best"] == "" and r["tied_with_best"] == "" for r in oracles), "an oracle carries a mark"
        best = [r for r in solvers if r["is_best"] == "True"]
        assert len(best) == 1
        sign = 1 if rows[0]["primary_metric"] in ("psnr", "ssim") else -1
        best_mean = float(best[0][f"{best[0]['primary_metric']}_mean"])
        for r in solvers:
            if r["is_best"] == "True":
                continue
            m = r["primary_metric"]
            assert sign * float(r[f"{m}_mean"]) <= sign * best_mean
            assert int(r["delta_best_n"]) == images[ds], "the paired n is not the number of images"
            lo, hi = float(r["delta_best_ci_low"]), float(r["delta_best_ci_high"])
            m_count = len(solvers) - 1
            assert math.isclose(float(r["delta_best_level"]), 1 - 0.05 / m_count)
            worse = hi < 0 if sign > 0 else lo > 0
            assert (r["tied_with_best"] == "True") == (not worse), (r["solver"], lo, hi, r["tied_with_best"])
    return len(boards)


def _csv(run_dir: Path) -> str:
    from invbench.bench.report.data import load_run
    from invbench.bench.report.summary import build_leaderboards
    from invbench.bench.report.tables import csv_records, write_records

    out = run_dir.parent / "lb.csv"
    write_records(csv_records(build_leaderboards(load_run(run_dir))), out)
    return out.read_text()


def test_marks_agree_with_intervals_on_a_two_seed_run(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(gmm_text(limit=5, seeds="[0, 1]", dps_steps=10))
    rc, _, err = cli(capsys, ["run", cfg, "--out", tmp_path / "run", "--no-progress"])
    assert rc == 0, err
    assert check_marks(_csv(tmp_path / "run"), {"digits": 5}) == 2


@pytest.mark.slow
@pytest.mark.parametrize("config, images, boards", [
    ("demo.toml", {"crops32": 8}, 4),                          # the headline: tuned presets
    ("demo-released.toml", {"crops32": 6, "digits": 8}, 8),    # released presets, digits too
])
def test_marks_agree_with_intervals_on_the_demo(tmp_path, capsys, config, images, boards):
    rc, _, err = cli(capsys, ["run", REPO / "configs" / config, "--out", tmp_path / "run", "--no-progress"])
    assert rc == 0, err
    assert check_marks(_csv(tmp_path / "run"), images) == boards
