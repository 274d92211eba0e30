"""Paired Δ to the best and significance groups (bench/report/paired.py) against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from invbench.bench.report.paired import holm, paired_groups
from scipy import stats


def test_holm_matches_the_step_down_definition():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([np.nan, 0.2])[0]) and holm([np.nan, 0.2])[1] == 0.2
    assert holm([0.9, 0.8]) == [1.0, 1.0]          # 0.8 * 2 capped at 1; 0.9 * 1 raised to the running max


def _rows(values: np.ndarray, seeds=(0,)) -> pd.DataFrame:
    n = len(values) // len(seeds)
    return pd.DataFrame({"image_id": [f"img{i}" for _ in seeds for i in range(n)],
                         "seed": [s for s in seeds for _ in range(n)],
                         "status": "ok", "psnr": values})


def test_groups_and_paired_interval_on_a_known_configuration():
    """A and B differ by 0.01 dB on images with a 3 dB spread (tied), C is 1 dB worse on every
    image (paired: clearly worse, though the unpaired intervals overlap)."""
    rng = np.random.default_rng(0)
    base = rng.normal(25, 3, 12)
    a = base + 1.0 + rng.normal(0, 0.05, 12)
    b = base + 0.99 + rng.normal(0, 0.05, 12)
    c = base + rng.normal(0, 0.05, 12)
    rows = {("A",): _rows(a), ("B",): _rows(b), ("C",): _rows(c)}
    order = sorted(rows, key=lambda k: -rows[k].psnr.mean())
    res = paired_groups(rows, order, "psnr")
    assert res[("A",)].group == res[("B",)].group == 1 and res[("C",)].group == 3
    best = order[0]
    d = c - rows[best].psnr.to_numpy()
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    got = res[("C",)].delta_best
    assert np.isclose(got.mean, d.mean()) and np.isclose(got.low, lo) and np.isclose(got.high, hi)
    assert res[best].delta_best is None
    # the unpaired 95% intervals overlap: ranks by unpaired means could not separate C
    half = [stats.t.ppf(0.975, 11) * stats.sem(v) for v in (a, c)]
    assert a.mean() - half[0] < c.mean() + half[1]


def test_pairs_only_on_shared_images_and_lower_is_better():
    """Only (image, seed) keys both cells have are paired; for a lower-is-better metric the
    better cell has the smaller values."""
    x = np.array([0.10, 0.20, 0.30, 0.40, 0.50, 0.60])
    good = _rows(x).rename(columns={"psnr": "mse"})
    bad = _rows(np.r_[x[:5] + 0.3 + np.array([0.01, -0.02, 0.015, 0.0, -0.01]), 9.0]).rename(columns={"psnr": "mse"})
    bad.loc[5, "image_id"] = "other"         # not shared: excluded from the pairing
    res = paired_groups({("g",): good, ("b",): bad}, [("g",), ("b",)], "mse")
    assert res[("b",)].group == 2 and res[("g",)].group == 1
    assert res[("b",)].delta_best.n == 5 and np.isclose(res[("b",)].delta_best.mean, 0.299)


def test_identical_cells_tie_and_single_image_is_never_significant():
    v = np.array([20.0, 21.0, 22.0, 23.0])
    res = paired_groups({("a",): _rows(v), ("b",): _rows(v.copy())}, [("a",), ("b",)], "psnr")
    assert res[("a",)].group == res[("b",)].group == 1
    one = paired_groups({("a",): _rows(np.array([30.0])), ("b",): _rows(np.array([10.0]))}, [("a",), ("b",)], "psnr")
    assert one[("b",)].group == 1 and np.isnan(one[("b",)].p_best)


def _board(scores: dict[str, float]):
    from types import SimpleNamespace

    from invbench.bench.report.stats import MeanCI

    cells = [SimpleNamespace(solver=s, metrics={"psnr": MeanCI(v, 0.1, 5)}) for s, v in scores.items()]
    cells.append(SimpleNamespace(solver="oracle_map", metrics={"psnr": MeanCI(99.0, 0.1, 5)}))  # excluded
    return SimpleNamespace(primary="psnr", cells=cells)


def test_critical_difference_matches_demsar():
    """k = 4 solvers over N = 8 blocks: the Nemenyi CD at α = 0.05 is q = 2.569 (Demšar 2006,
    Table 5) times sqrt(k(k+1)/(6N)) = 1.658; a solver best in every block has average rank 1."""
    from invbench.bench.report.cd import critical_difference

    rng = np.random.default_rng(3)
    boards = [_board({"a": 30 + rng.normal(), "b": 25 + rng.normal(), "c": 25 + rng.normal(), "d": 20.0})
              for _ in range(8)]
    res = critical_difference(boards)
    assert np.isclose(res.cd, 2.569 * np.sqrt(4 * 5 / 48), atol=2e-3)
    assert res.methods[0] == "a" and res.avg_rank[0] == 1.0 and res.methods[-1] == "d" and res.avg_rank[-1] == 4.0
    assert res.friedman_p < 1e-3 and res.n_blocks == 8 and "oracle_map" not in res.methods
    # b and c (equal in distribution) are joined; a and d (3 ranks apart) are not
    joined = [set(res.methods[i : j + 1]) for i, j in res.cliques]
    assert any({"b", "c"} <= g for g in joined) and not any({"a", "d"} <= g for g in joined)
    assert critical_difference(boards[:1]) is None            # one block: no test
