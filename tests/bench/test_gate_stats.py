"""The statistics of ``invbench compare`` (bench.gate.stats) and the cost units it reads
(bench.gate.cost), checked against scipy and exact enumeration: the signed-rank p-value and the
Walsh-average interval of the paired time test, the one-sided paired t test of the quality
test, Holm's adjusted p-values with Tarone's choice of the family; units are timed calls
(repeats averaged), paired across runs by the rows they solved."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from invbench.bench.gate.cost import (
    has_calibration,
    network_share,
    network_work,
    paired_units,
    timing_samples,
)
from invbench.bench.gate.stats import (
    MIN_CI_UNITS,
    holm_tarone,
    paired_drop_test,
    paired_ratio_test,
    signed_rank_greater,
)
from scipy import stats


def _lognormal(rng, n, median, spread=0.15):
    return median * np.exp(rng.normal(0.0, spread, n))


@pytest.mark.parametrize("n", [1, 4, 7, 12, 19])
def test_signed_rank_p_equals_scipy_exact(n):
    rng = np.random.default_rng(n)
    x = rng.normal(0.3, 1.0, n)
    assert signed_rank_greater(x) == pytest.approx(stats.wilcoxon(x, alternative="greater", method="exact").pvalue)


def test_signed_rank_p_with_ties_and_zeros_equals_enumeration():
    """Tied magnitudes get mid-ranks and the exact distribution of those ranks; zeros are dropped."""
    x = np.array([1.0, 1.0, 2.0, -2.0, 3.0, 0.5, -0.5, 4.0, 0.0])
    v = x[x != 0]
    r = stats.rankdata(np.abs(v))
    w = r[v > 0].sum()
    hits = sum(r[np.array(s, dtype=bool)].sum() >= w for s in itertools.product([0, 1], repeat=v.size))
    assert signed_rank_greater(x) == pytest.approx(hits / 2 ** v.size)
    assert signed_rank_greater([0.0, 0.0]) == 1.0


def test_walsh_interval_covers_at_its_level():
    """The 95 % interval of the Hodges–Lehmann ratio covers the true ratio in about 95 % of
    samples (exact for a symmetric continuous distribution), and is absent below 6 units."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        b = _lognormal(rng, 10, 1.0, 0.5)
        t = paired_ratio_test(b, 1.3 * b * np.exp(rng.normal(0, 0.1, 10)), max_ratio=1.2)
        hits += t.ci_low <= 1.3 <= t.ci_high
    assert 0.92 <= hits / 400 <= 0.99
    assert MIN_CI_UNITS == 6
    t5 = paired_ratio_test(np.ones(5), np.full(5, 2.0), max_ratio=1.2)
    assert math.isnan(t5.ci_low) and math.isnan(t5.ci_high) and t5.ratio == pytest.approx(2.0)


def test_time_test_is_of_the_threshold_not_of_any_change():
    """p is the signed-rank p of log(new/base) - log(max_ratio): a clear x1.5 is beyond x1.2
    (p = 2^-n when every unit is), a clear x1.1 is not (p near 1)."""
    rng = np.random.default_rng(1)
    b = _lognormal(rng, 10, 0.5)
    n = 1.5 * b * np.exp(rng.normal(0, 0.02, 10))
    t = paired_ratio_test(b, n, max_ratio=1.2)
    assert t.p_value == pytest.approx(stats.wilcoxon(np.log(n / b) - math.log(1.2), alternative="greater").pvalue)
    assert t.p_value == t.min_p == 2.0 ** -10 and t.n == 10 and t.ci_low > 1.2
    assert paired_ratio_test(b, 1.1 * b, max_ratio=1.2).p_value == 1.0
    empty = paired_ratio_test([], [math.nan], max_ratio=1.2)
    assert empty.n == 0 and math.isnan(empty.ratio)


def test_false_alarm_rate_of_the_time_test_at_the_threshold():
    """Units exactly x1.2 slower with log-normal noise: the test rejects "ratio <= x1.2" in at
    most alpha of the samples (its level holds at the boundary of the null)."""
    rng = np.random.default_rng(2)
    rej = sum(paired_ratio_test(b := _lognormal(rng, 12, 1.0, 0.3), 1.2 * b * np.exp(rng.normal(0, 0.2, 12)),
                                max_ratio=1.2).p_value <= 0.05 for _ in range(600))
    assert rej / 600 <= 0.05 + 0.02


def test_quality_test_is_scipys_one_sided_t_against_the_drop():
    rng = np.random.default_rng(3)
    d = rng.normal(-0.3, 0.2, 9)
    t = paired_drop_test(d, max_drop=0.1, direction=1)
    assert t.p_value == pytest.approx(stats.ttest_1samp(d, -0.1, alternative="less").pvalue)
    lo, hi = stats.t.interval(0.95, 8, loc=d.mean(), scale=stats.sem(d))
    assert (t.ci_low, t.ci_high) == pytest.approx((lo, hi))
    up = paired_drop_test(-d, max_drop=0.1, direction=-1)     # lower-is-better metric: worse = higher
    assert up.p_value == pytest.approx(t.p_value)
    short = paired_drop_test(d[:3], max_drop=0.1, direction=1, min_n=6)
    assert math.isnan(short.ci_low) and short.n == 3


def test_quality_without_spread_is_decided_exactly():
    assert paired_drop_test(np.full(8, -0.2), max_drop=0.1, direction=1).p_value == 0.0
    assert paired_drop_test(np.full(8, 0.3 - 0.2 - 0.2), max_drop=0.1, direction=1).p_value == 1.0   # -0.1, round-off
    assert paired_drop_test(np.zeros(8), max_drop=0.0, direction=1).p_value == 1.0


def test_holm_adjusted_p_values_and_tarones_family():
    """Holm: adjusted p_(j) = max over i <= j of (m - i + 1) p_(i); Tarone: a test whose smallest
    attainable p exceeds alpha / K is left out of the count K."""
    adj, testable, k = holm_tarone([0.01, 0.04, 0.03, 0.005], [0, 0, 0, 0], 0.05)
    assert k == 4 and all(testable)
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # three t tests and two signed-rank tests with 6 units (smallest p 1/64 > 0.05/4)
    adj, testable, k = holm_tarone([0.001, 0.5, 0.02, 1 / 64, 1 / 64], [0, 0, 0, 1 / 64, 1 / 64], 0.05)
    assert testable == [True, True, True, False, False] and k == 3
    assert adj[0] == pytest.approx(0.003) and math.isnan(adj[3])
    assert holm_tarone([], [], 0.05) == ([], [], 0)


def test_holm_keeps_the_family_wise_error_rate():
    """20 true nulls (uniform p): the run is flagged in at most alpha of the runs."""
    rng = np.random.default_rng(4)
    runs = [holm_tarone(list(rng.uniform(size=20)), [0] * 20, 0.05)[0] for _ in range(2000)]
    assert sum(min(a) <= 0.05 for a in runs) / 2000 <= 0.05 + 0.015


def _row(call, secs, nets, nfe=10, vjp=10):
    return {"seconds": secs[0], "net_seconds": nets[0], "nfe": nfe, "vjp": vjp,
            "timings": json.dumps({"call": call, "seconds": secs, "net_seconds": nets})}


def test_samples_are_calls_and_normalised_by_network_time():
    rows = pd.DataFrame([
        _row("a", [2.0, 2.2], [1.0, 1.0]),   # two rows of one batched call
        _row("a", [2.0, 2.2], [1.0, 1.0]),
        _row("b", [3.0], [2.0]),
    ])
    assert sorted(timing_samples(rows, "wall")) == [2.0, 2.2, 3.0]
    assert sorted(timing_samples(rows, "normalised")) == pytest.approx([1.5, 2.0, 2.2])
    # no network time (an oracle): no normalised sample
    oracle = pd.DataFrame([_row("c", [0.1, 0.1], [0.0, 0.0], nfe=0, vjp=0)])
    assert timing_samples(oracle, "normalised").size == 0 and timing_samples(oracle, "wall").size == 2
    assert network_work(rows) == (10.0, 10.0)
    with pytest.raises(ValueError, match="basis"):
        timing_samples(rows, "cpu")


def test_rows_without_timings_give_one_sample_per_row():
    legacy = pd.DataFrame({"seconds": [1.0, 2.0, np.nan], "nfe": [5, 5, 5], "vjp": [0, 0, 0]})
    assert sorted(timing_samples(legacy, "wall")) == [1.0, 2.0]
    assert timing_samples(legacy, "normalised").size == 0


def test_has_calibration():
    assert has_calibration({"calibration": json.dumps({"p": {"t_forward_s": 0.01}})})
    assert not has_calibration({"calibration": json.dumps({"p": {"error": "boom"}})})
    assert not has_calibration({"calibration": "not json"}) and not has_calibration({})


def test_units_are_calls_repeats_averaged_and_paired_by_rows():
    """Two runs batching alike: one unit per call, its repeats' geometric mean; batching that
    differs merges the calls linked through a row into one unit."""
    base = pd.DataFrame([_row("a", [1.0, 4.0], [0.5, 2.0]), _row("a", [1.0, 4.0], [0.5, 2.0]),
                         _row("b", [3.0], [1.0]), _row("c", [2.0], [1.0])])
    new = pd.DataFrame([_row("x", [2.0, 8.0], [0.5, 2.0]), _row("x", [2.0, 8.0], [0.5, 2.0]),
                        _row("y", [6.0], [1.0]), _row("z", [4.0], [1.0])])
    b, n = paired_units(base, new, "wall")
    assert sorted(b) == pytest.approx([2.0, 2.0, 3.0]) and sorted(n / b) == pytest.approx([2.0, 2.0, 2.0])
    b, n = paired_units(base, new, "normalised")
    assert sorted(b) == pytest.approx([2.0, 2.0, 3.0]) and np.allclose(n / b, 2.0)
    rebatched = pd.DataFrame([_row("p", [2.0], [1.0]), _row("q", [2.0, 2.0], [1.0, 1.0]),
                              _row("q", [2.0, 2.0], [1.0, 1.0]), _row("r", [4.0], [1.0])])
    b, n = paired_units(base, rebatched, "wall")
    assert len(b) == 2     # rows 0-2 linked through call "a" (base) and "q" (new): one unit
    assert network_share(base) == pytest.approx(np.median([0.5, 1 / 3, 0.5]))
    assert math.isnan(network_share(pd.DataFrame([_row("o", [1.0], [0.0], nfe=0, vjp=0)])))
