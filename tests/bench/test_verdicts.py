"""The marks of a board agree with their intervals, and the image is the unit of replication
(bench/report/verdicts.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from invbench.bench.report import verdicts as V
from scipy import stats


def _rows(solver: str, values: np.ndarray, seeds: int = 1) -> pd.DataFrame:
    """Rows of one cell: values[i, s] for image i, seed s."""
    n = values.shape[0]
    return pd.DataFrame({"solver": solver, "status": "ok",
                         "image_id": [f"im{i:02d}" for i in range(n) for _ in range(seeds)],
                         "seed": [s for _ in range(n) for s in range(seeds)],
                         "psnr": values.reshape(-1)})


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 7), n=st.integers(2, 30), spread=st.floats(0.05, 3.0))
def test_tied_iff_bonferroni_t_test_does_not_reject(seed, k, n, spread):
    """For random boards: a cell is tied with the best exactly when its printed (adjusted) interval
    reaches 0, which is exactly when the paired t-test against the best, Bonferroni-corrected over
    the k − 1 comparisons, does not reject (scipy's ttest_rel, computed independently)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(25, 3, n)
    cells = {(f"s{j}",): V.image_means(_rows(f"s{j}", (base + rng.normal(-0.3 * j, spread, n))[:, None]), "psnr")
             for j in range(k)}
    ver = V.one_vs_best(cells, "psnr")
    best = next(key for key, v in ver.items() if v.is_best)
    assert all(cells[best].mean() >= c.mean() for c in cells.values())
    m = k - 1
    for key, v in ver.items():
        if v.is_best:
            assert not v.tied_with_best and v.delta is None
            continue
        assert v.delta.n == n and v.m == m
        reaches_zero = v.delta.low <= 0 <= v.delta.high or v.delta.low > 0
        assert v.tied_with_best == reaches_zero
        d = cells[key].to_numpy() - cells[best].to_numpy()
        if np.ptp(d) > 0:
            p = stats.ttest_rel(cells[key].to_numpy(), cells[best].to_numpy()).pvalue
            assert v.tied_with_best == (min(1.0, m * p) >= 0.05) or math.isclose(min(1.0, m * p), 0.05, rel_tol=1e-9)


def test_seeds_are_averaged_per_image_before_the_interval():
    """Two seeds per image: the pairs are images (n = 6, not 12), and the interval equals the
    t-interval of the per-image mean differences."""
    rng = np.random.default_rng(1)
    a = rng.normal(25, 2, (6, 2))
    b = a - 0.5 + rng.normal(0, 0.3, (6, 2))
    cells = {("a",): V.image_means(_rows("a", a, 2), "psnr"), ("b",): V.image_means(_rows("b", b, 2), "psnr")}
    ver = V.one_vs_best(cells, "psnr")
    d = b.mean(axis=1) - a.mean(axis=1)
    assert ver[("b",)].delta.n == 6
    assert ver[("b",)].delta.mean == pytest.approx(d.mean())
    hw = stats.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    assert ver[("b",)].delta.half_width == pytest.approx(hw)
    assert V.seed_spread(_rows("a", a, 2), "psnr") == pytest.approx(np.mean(a.std(axis=1, ddof=1)))


def test_lower_is_better_metrics_mark_on_the_other_side():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.01, 0.02, 10)
    cells = {("good",): pd.Series(x), ("bad",): pd.Series(x + 0.01 + rng.normal(0, 1e-4, 10))}
    ver = V.one_vs_best(cells, "mse")
    assert ver[("good",)].is_best and not ver[("bad",)].tied_with_best and ver[("bad",)].delta.low > 0


def test_non_monotone_pairs_are_found():
    """A wide-interval cell with the lower mean is tied while a tight one with a higher mean is not."""
    rng = np.random.default_rng(3)
    base = rng.normal(25, 2, 8)
    cells = {("best",): pd.Series(base), ("tight",): pd.Series(base - 0.5 + rng.normal(0, 0.01, 8)),
             ("wide",): pd.Series(base - 1.0 + rng.normal(0, 4.0, 8))}
    means = {k: float(v.mean()) for k, v in cells.items()}
    ver = V.one_vs_best(cells, "psnr")
    if ver[("wide",)].tied_with_best and means[("wide",)] < means[("tight",)]:
        assert (("wide",), ("tight",)) in V.non_monotone(ver, means, "psnr")


def test_friedman_over_image_blocks_matches_scipy_and_gates_the_cliques():
    rng = np.random.default_rng(4)
    boards = []
    mats = []
    for _b in range(3):
        base = rng.normal(25, 2, 10)
        cells = {s: pd.Series(base + off + rng.normal(0, 0.5, 10), index=[f"i{i}" for i in range(10)])
                 for s, off in (("a", 0.0), ("b", -0.1), ("c", -0.2), ("d", -2.0))}
        boards.append(("psnr", cells))
        mats.append(np.column_stack([cells[s].to_numpy() for s in "abcd"]))
    r = V.friedman_blocks(boards)
    scores = np.vstack(mats)
    assert r.n_blocks == 30 and r.n_boards == 3
    assert r.friedman_p == pytest.approx(stats.friedmanchisquare(*scores.T).pvalue)
    assert r.methods[-1] == "d"
    assert r.rejects and r.cliques
    # no effect: Friedman does not reject (checked with scipy), and no clique is drawn
    flat = [("psnr", {s: pd.Series(rng.normal(25, 1, 6), index=list("uvwxyz")) for s in "abc"})]
    r0 = V.friedman_blocks(flat)
    if not r0.rejects:
        assert r0.cliques == []


def test_wilcoxon_holm_against_the_best_ranked():
    rng = np.random.default_rng(5)
    s = np.column_stack([rng.normal(0, 1, 40) + off for off in (1.0, 0.9, 0.0)])
    w = V.wilcoxon_vs_best(s, ["a", "b", "c"])
    raw = [stats.wilcoxon(s[:, 0] - s[:, j]).pvalue for j in (1, 2)]
    order = np.argsort(raw)
    holm = np.empty(2)
    holm[order[0]] = min(1, 2 * raw[order[0]])
    holm[order[1]] = max(holm[order[0]], min(1, raw[order[1]]))
    assert [w["b"][1], w["c"][1]] == pytest.approx(list(holm))
