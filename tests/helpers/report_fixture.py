"""A fake run directory in the harness-contract layout (results.sqlite + PNGs), for report and
compare tests. The store schema is written here from docs/harness.md, independently of
bench/store.py, so the tests also check that the report reads the contract's schema."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

METRIC_COLS = ("psnr", "ssim", "lpips", "mse", "consistency", "dist_to_map", "rel_dist_to_map",
               "logpost_gap", "err_post_mean")

RESULTS_DDL = """
CREATE TABLE results (
  row_id TEXT PRIMARY KEY, experiment TEXT, solver TEXT, preset TEXT, task TEXT, operator TEXT,
  noise_sigma REAL, sigma_y REAL, dataset TEXT, prior TEXT, image_id TEXT, seed INTEGER,
  status TEXT, message TEXT, seconds REAL, peak_mem_bytes INTEGER, peak_rss_bytes INTEGER,
  nfe INTEGER, vjp INTEGER, device TEXT, torch_version TEXT, batch_size INTEGER,
  config_hash TEXT, code_version TEXT, recon_path TEXT, created REAL,
  psnr REAL, ssim REAL, lpips REAL, mse REAL, consistency REAL, dist_to_map REAL,
  rel_dist_to_map REAL, logpost_gap REAL, err_post_mean REAL)
"""
OTHER_DDL = (
    ("CREATE TABLE set_metrics (experiment TEXT, solver TEXT, preset TEXT, task TEXT, dataset TEXT, "
     "prior TEXT, metric TEXT, value REAL, n INTEGER, note TEXT)"),
    "CREATE TABLE metric_status (metric TEXT PRIMARY KEY, available INTEGER, note TEXT, backbone TEXT)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
)


@dataclass(frozen=True)
class CellSpec:
    solver: str
    preset: str
    task: str
    dataset: str
    prior: str
    psnr_mean: float
    seconds: float
    nfe: int
    vjp: int
    status: str = "ok"            # status of every row, unless fail_rows says otherwise
    message: str = ""
    fail_rows: int = 0            # number of rows (first ones) with status "diverged"
    gpu_mem: int | None = None


# solver labels that must be escaped in every output (docs/reports.md, "Safety of user strings")
HOSTILE = {"pigdm": "<script>alert(1)</script>", "ddrm": r"\input{/etc/passwd}", "dps": "a|b"}

DATASETS = {"tiny": ((3, 16, 16), ["img0", "img1", "img2"]), "gmm8": ((1, 8, 8), ["g0", "g1", "g2", "g3"])}
SEEDS = (0, 1)


def default_cells(labels: dict[str, str] | None = None) -> list[CellSpec]:
    """The default grid; ``labels`` renames solvers (for the escaping test)."""
    L = labels or {}
    s = lambda n: L.get(n, n)
    return [
        CellSpec(s("dps"), "default", "inpaint_box", "tiny", "small-cpu", 24.0, 2.0, 100, 100, gpu_mem=3 << 20),
        CellSpec(s("ddrm"), "default", "inpaint_box", "tiny", "small-cpu", 22.0, 0.2, 20, 0, gpu_mem=2 << 20),
        CellSpec(s("vml_map"), "default", "inpaint_box", "tiny", "small-cpu", 26.0, 1.0, 50, 50, gpu_mem=4 << 20),
        CellSpec(s("vml_map"), "fast", "inpaint_box", "tiny", "small-cpu", 23.0, 0.3, 10, 10, gpu_mem=4 << 20),
        CellSpec(s("pigdm"), "default", "inpaint_box", "tiny", "small-cpu", 25.0, 0.5, 100, 100,
                 fail_rows=2, gpu_mem=3 << 20),
        CellSpec(s("dps"), "default", "phase_retrieval", "tiny", "small-cpu", 18.0, 2.0, 100, 100),
        CellSpec(s("ddrm"), "default", "phase_retrieval", "tiny", "small-cpu", 0, 0, 0, 0, status="skipped",
                 message="ddrm requires svd; operator phase_retrieval does not provide it"),
        CellSpec(s("vml_map"), "default", "sr4_avgpool", "gmm8", "gmm-digits", 30.0, 0.05, 50, 50),
        CellSpec(s("dps"), "default", "sr4_avgpool", "gmm8", "gmm-digits", 27.0, 0.4, 100, 100),
        CellSpec(s("oracle_map"), "default", "sr4_avgpool", "gmm8", "gmm-digits", 31.0, 0.01, 0, 0),
    ]


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.clip(arr, 0, 1)
    a = (a * 255).round().astype(np.uint8)
    a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    Image.fromarray(a).save(path)


def _slug(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()[:10]


def make_run(run_dir: Path, cells: list[CellSpec] | None = None, *, seed: int = 0,
             experiment: str = "fixture", lpips_unavailable: bool = True,
             write_images: bool = True, meta_extra: dict | None = None) -> Path:
    """Create ``run_dir`` with results.sqlite, truth/meas/recon PNGs and meta. Returns run_dir.

    LPIPS numbers are written into ok rows even when ``metric_status`` marks LPIPS unavailable
    (as a buggy runner with stand-in weights would): reports must still show only the note."""
    cells = default_cells() if cells is None else cells
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    truths = {}
    for ds, (shape, ids) in DATASETS.items():
        for iid in ids:
            yy, xx = np.mgrid[0:shape[1], 0:shape[2]] / shape[1]
            base = np.stack([(np.sin(6 * xx + k + len(iid)) * np.cos(4 * yy + int(iid[-1]))) * 0.5 + 0.5
                             for k in range(shape[0])])
            truths[(ds, iid)] = base
            if write_images:
                _png(run_dir / "truth" / ds / f"{iid}.png", base)
    con = sqlite3.connect(run_dir / "results.sqlite")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(RESULTS_DDL)
    for ddl in OTHER_DDL:
        con.execute(ddl)
    cols = None
    for c in cells:
        shape, ids = DATASETS[c.dataset]
        k = 0
        for iid in ids:
            for sd in SEEDS:
                status, message = c.status, c.message
                if status == "ok" and k < c.fail_rows:
                    status, message = "diverged", "non-finite values in x at step 3"
                k += 1
                ok = status == "ok"
                psnr = c.psnr_mean + rng.normal(0, 1.0) if ok else None
                mse = 10 ** (-psnr / 10) if ok else None
                row = {
                    "row_id": _slug(f"{c}{iid}{sd}"), "experiment": experiment, "solver": c.solver,
                    "preset": c.preset, "task": c.task, "operator": c.task, "noise_sigma": 0.025,
                    "sigma_y": 0.05, "dataset": c.dataset, "prior": c.prior, "image_id": iid, "seed": sd,
                    "status": status, "message": message,
                    "seconds": c.seconds * float(np.exp(rng.normal(0, 0.05))) if ok else None,
                    "peak_mem_bytes": c.gpu_mem if ok else None,
                    "peak_rss_bytes": int(500e6 + rng.integers(0, 1e6)) if ok else None,
                    "nfe": c.nfe if ok else None, "vjp": c.vjp if ok else None,
                    "device": "cpu", "torch_version": "2.14.1", "batch_size": 1, "config_hash": "abc123",
                    "code_version": "v0-test", "created": 0.0,
                    "psnr": psnr, "ssim": float(np.clip(0.7 + rng.normal(0, 0.05), 0, 1)) if ok else None,
                    "lpips": float(abs(rng.normal(0.2, 0.05))) if ok else None,
                    "mse": mse, "consistency": float(abs(rng.normal(1.0, 0.1))) if ok else None,
                }
                analytic = c.prior.startswith("gmm")
                for m in ("dist_to_map", "rel_dist_to_map", "logpost_gap", "err_post_mean"):
                    row[m] = float(abs(rng.normal(0.5 if c.solver != "oracle_map" else 1e-3, 0.1))) \
                        if (ok and analytic) else None
                rel = None
                if ok:
                    rel = f"recon/{c.solver}__{c.preset}/{c.task}/{c.dataset}/{c.prior}/{iid}_s{sd}.png"
                    if write_images:
                        noise = rng.normal(0, 10 ** (-c.psnr_mean / 20), size=shape)
                        _png(run_dir / rel, truths[(c.dataset, iid)] + noise)
                        meas = run_dir / "meas" / c.task / c.dataset / f"{iid}_s{sd}.png"
                        if not meas.exists():
                            _png(meas, truths[(c.dataset, iid)] * 0.5)
                row["recon_path"] = rel
                cols = list(row)
                con.execute(f"INSERT INTO results ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                            [row[k] for k in cols])
        if c.status == "ok":
            con.execute("INSERT INTO set_metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (experiment, c.solver, c.preset, c.task, c.dataset, c.prior, "fid", None, 0,
                         "unavailable: inception weights not found at /nonexistent/inception.pt"))
            if c.prior.startswith("gmm"):
                con.execute("INSERT INTO set_metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (experiment, c.solver, c.preset, c.task, c.dataset, c.prior,
                             "sliced_wasserstein", float(abs(rng.normal(0.3, 0.1))), 8, ""))
    con.executemany("INSERT INTO metric_status VALUES (?,?,?,?)", [
        ("psnr", 1, "", ""), ("ssim", 1, "", ""),
        ("lpips", 0 if lpips_unavailable else 1,
         "unavailable: alexnet weights not found at /nonexistent/alex.pth" if lpips_unavailable else "", "alex"),
        ("fid", 0, "unavailable: inception weights not found at /nonexistent/inception.pt", "inception"),
    ])
    meta = {
        "experiment": experiment, "config": '[experiment]\nname = "fixture"\nseeds = [0, 1]\n',
        "config_hash": "abc123", "code_version": "v0-test", "torch_version": "2.14.1",
        "device": "cpu", "python_version": "3.11",
        "units": "pixel [0,1]; noise_sigma pixel units; sigma_y = 2 noise_sigma",
        "protocol": "fixture protocol <b>not bold</b>",
    }
    meta.update(meta_extra or {})
    con.executemany("INSERT INTO meta VALUES (?,?)", list(meta.items()))
    con.commit()
    con.close()
    return run_dir


def alter(run_dir: Path, sql: str, params: tuple = ()) -> None:
    """Run one UPDATE on the results table of ``run_dir``."""
    con = sqlite3.connect(run_dir / "results.sqlite")
    con.execute(sql, params)
    con.commit()
    con.close()
