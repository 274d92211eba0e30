"""Holm's correction and Nemenyi's critical difference of bench/report/verdicts.py against their
definitions (Holm 1979; Demšar 2006)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from invbench.bench.report.verdicts import friedman_blocks, holm


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


def test_critical_difference_matches_demsar():
    """k = 4 solvers over N = 8 blocks: the Nemenyi CD at α = 0.05 is q = 2.569 (Demšar 2006,
    Table 5) times sqrt(k(k+1)/(6N)) = 1.658; a solver best in every block has average rank 1."""
    rng = np.random.default_rng(3)
    idx = [f"i{k}" for k in range(8)]
    cells = {"a": 30 + 0.3 * rng.normal(size=8), "b": 25 + rng.normal(size=8), "c": 25 + rng.normal(size=8),
             "d": np.full(8, 20.0)}
    res = friedman_blocks([("psnr", {s: pd.Series(v, index=idx) for s, v in cells.items()})])
    assert np.isclose(res.cd, 2.569 * np.sqrt(4 * 5 / 48), atol=2e-3)
    assert res.methods[0] == "a" and res.avg_rank[0] == 1.0 and res.methods[-1] == "d" and res.avg_rank[-1] == 4.0
    assert res.friedman_p < 1e-3 and res.n_blocks == 8 and res.rejects
    # b and c (equal in distribution) are joined; a and d (3 ranks apart) are not
    joined = [set(res.methods[i : j + 1]) for i, j in res.cliques]
    assert any({"b", "c"} <= g for g in joined) and not any({"a", "d"} <= g for g in joined)
    one = friedman_blocks([("psnr", {s: pd.Series(v[:1], index=idx[:1]) for s, v in cells.items()})])
    assert one is None            # one block: no test
