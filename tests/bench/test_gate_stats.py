"""The speed statistics of ``invbench compare`` (bench.gate_stats) and the cost samples it reads
(bench.gate_cost), on synthetic timings: identical distributions -> no regression, a clear
shift -> regression, too few samples -> inconclusive; samples are timed calls, normalised by
the network time of the same call."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from invbench.bench.gate_cost import has_calibration, network_work, timing_samples
from invbench.bench.gate_stats import ratio_test
from scipy import stats


def _lognormal(rng, n, median, spread=0.15):
    return median * np.exp(rng.normal(0.0, spread, n))


def test_identical_distributions_rarely_regress():
    """150 pairs of samples from one distribution: with a small spread (3 %) the ratio never
    passes x1.2; with a wide one (15 % log-spread, 12 samples) a false alarm needs both the ratio
    beyond x1.2 and p < alpha, so the rate stays below alpha = 5 %."""
    rng = np.random.default_rng(0)
    tight = [ratio_test(_lognormal(rng, 12, 0.5, 0.03), _lognormal(rng, 12, 0.5, 0.03), max_ratio=1.2).verdict
             for _ in range(150)]
    assert tight.count("regression") == 0
    wide = [ratio_test(_lognormal(rng, 12, 0.5), _lognormal(rng, 12, 0.5), max_ratio=1.2).verdict
            for _ in range(150)]
    assert wide.count("regression") <= 0.05 * len(wide)


def test_clear_shift_is_a_regression_with_its_ci_and_p():
    rng = np.random.default_rng(1)
    b, n = _lognormal(rng, 10, 0.5, 0.05), _lognormal(rng, 10, 0.75, 0.05)
    t = ratio_test(b, n, max_ratio=1.2)
    assert t.verdict == "regression"
    assert t.ratio == pytest.approx(np.median(n) / np.median(b))
    assert t.ci_low < t.ratio < t.ci_high and t.ci_low > 1.2
    assert t.p_value == pytest.approx(stats.mannwhitneyu(n, b, alternative="greater").pvalue)
    assert (t.n_base, t.n_new) == (10, 10)
    # the same shift is within a x1.6 threshold
    assert ratio_test(b, n, max_ratio=1.6).verdict == "ok"


def test_shift_without_significance_is_not_a_regression():
    """A ratio of medians above the threshold that the rank test does not support (two
    overlapping wide samples) is noise, not a regression."""
    b = np.array([1.0, 1.1, 3.0, 3.2, 0.9, 2.9, 1.0])
    n = np.array([1.0, 3.1, 3.3, 3.1, 3.0, 1.05, 0.95])
    t = ratio_test(b, n, max_ratio=1.2)
    assert t.ratio > 1.2 and t.p_value >= 0.05 and t.verdict == "ok"


@pytest.mark.parametrize("k", [1, 2, 4])
def test_too_few_samples_is_inconclusive_never_regression(k):
    b, n = np.full(k, 1.0), np.full(k, 3.0)   # x3 slower, but only k timings each
    t = ratio_test(b, n, max_ratio=1.2, min_n=5)
    assert t.verdict == "inconclusive" and t.n == k
    assert ratio_test(np.full(5, 1.0) + np.arange(5) * 1e-3, np.full(5, 3.0), max_ratio=1.2).verdict == "regression"


def test_absolute_slack_and_faster_runs():
    b = np.linspace(0.010, 0.011, 8)
    assert ratio_test(b, 2 * b, max_ratio=1.2, min_abs=0.05).verdict == "ok"      # +10 ms < 50 ms slack
    assert ratio_test(b, 2 * b, max_ratio=1.2, min_abs=0.0).verdict == "regression"
    assert ratio_test(b, b / 2, max_ratio=1.2).verdict == "ok"                     # faster is never flagged
    empty = ratio_test([], [math.nan, -1.0], max_ratio=1.2)
    assert empty.verdict == "ok" and math.isnan(empty.ratio)


def test_bootstrap_ci_is_deterministic():
    rng = np.random.default_rng(3)
    b, n = _lognormal(rng, 9, 1.0), _lognormal(rng, 9, 1.1)
    assert ratio_test(b, n, max_ratio=1.2) == ratio_test(b, n, max_ratio=1.2)


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
