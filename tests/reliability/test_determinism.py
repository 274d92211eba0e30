"""Determinism (docs/reliability.md, "Determinism") with the real solvers on the GMM config, through the full CLI path.

Already covered elsewhere (referenced in docs/reliability.md, not repeated here):
* tests/bench/test_runner.py::test_two_runs_bitwise_identical / ::test_batch_size_invariance
  (DPS, PiGDM, exact posterior sampling; in process);
* tests/bench/test_executors.py (test solvers, submitit debug + local executors, 2 shards);
* resume boundaries: tests/bench/test_resume.py, test_kill_soak.py (SIGKILL + --resume equals an
  uninterrupted run bitwise) and test_bad_inputs.py::test_disk_full_mid_run_exit_1_then_resume.

Here: DDRM, VML-MAP, DPS and posterior sampling; reruns bitwise identical (PNG bytes and float32
.npy), batch size 1 vs 4 within 1e-5 (row ids identical: batch size is not hashed), and
``--executor submitit-debug --shards 2`` bitwise identical to ``--executor local``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from invbench.bench import store

from tests.helpers.reliability import cli, gmm_text

COLS = ["row_id", "status", "psnr", "mse", "consistency", "dist_to_map", "logpost_gap", "nfe", "vjp",
        "operator_seed", "noise_seed", "solver_seed", "recon_path"]


def _run(capsys, tmp: Path, name: str, *, batch_size: int = 1, extra_args=()) -> tuple[Path, object]:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(gmm_text("rel-det", limit=3, seeds="[0]", batch_size=batch_size))
    out = tmp / name
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress", *extra_args])
    assert rc == 0, err
    return out, store.load_results(out).sort_values("row_id").reset_index(drop=True)


def _npy(out: Path, df) -> dict[str, np.ndarray]:
    return {r.row_id: np.load(out / (r.recon_path[:-4] + ".npy")) for r in df.itertuples()}


def _bytes(out: Path, df) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in df.recon_path}


def test_rerun_bitwise_and_batch_size_invariance(tmp_path, capsys, figures):
    a_dir, a = _run(capsys, tmp_path, "a")
    b_dir, b = _run(capsys, tmp_path, "b")
    c_dir, c = _run(capsys, tmp_path, "c", batch_size=4)
    assert set(a.status) == {"ok"} and set(a.solver) == {"dps", "ddrm", "vml_map", "oracle_sample"}
    assert a[COLS].equals(b[COLS])
    na, nb = _npy(a_dir, a), _npy(b_dir, b)
    assert all(np.array_equal(na[k], nb[k]) for k in na) and _bytes(a_dir, a) == _bytes(b_dir, b)
    # batch size: same rows, reconstructions within 1e-5 (SR batches 3 images per call, masks do not)
    assert list(a.row_id) == list(c.row_id) and (c[c.task == "sr"].batch_size == 3).all()
    nc = _npy(c_dir, c)
    dmax = max(float(np.abs(na[k].astype(np.float64) - nc[k]).max()) for k in na)
    assert dmax <= 1e-5
    figures.record("determinism_rerun_bitwise", True)
    figures.record("determinism_batch_max_abs_diff", dmax)


def test_submitit_debug_executor_bitwise_equals_local(tmp_path, capsys, figures):
    l_dir, loc = _run(capsys, tmp_path, "local")
    s_dir, sub = _run(capsys, tmp_path, "sub", extra_args=["--executor", "submitit-debug", "--shards", "2"])
    assert len(list((s_dir / "shards").glob("*/results.sqlite"))) == 2
    assert loc[COLS].equals(sub[COLS])
    nl, ns = _npy(l_dir, loc), _npy(s_dir, sub)
    assert all(np.array_equal(nl[k], ns[k]) for k in nl) and _bytes(l_dir, loc) == _bytes(s_dir, sub)
    figures.record("determinism_submitit_bitwise", True)
