"""`invbench` CLI: bad inputs give one line on stderr, exit 2 and no files; list/run/check work."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from invbench.bench import cli, store
from invbench.bench.datasets import make_manifest
from PIL import Image

from tests.helpers import parts

parts.register()

FOLDER_DS = """
[[datasets]]
name = "imgs"
type = "folder"
root = "imgs"
manifest = "imgs/MANIFEST.sha256"
"""


def _folder(tmp_path, arrays: dict[str, np.ndarray], png: dict[str, np.ndarray] | None = None):
    root = tmp_path / "imgs"
    root.mkdir()
    for name, a in arrays.items():
        np.save(root / name, a)
    for name, a in (png or {}).items():
        Image.fromarray(a).save(root / name)
    (root / "MANIFEST.sha256").write_text(make_manifest(root))
    return root


def _main(capsys, argv):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _expect_bad(capsys, tmp_path, text: str, needle: str, sets=(), out="out"):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    argv = ["run", str(cfg), "--out", str(tmp_path / out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    rc, _, err = _main(capsys, argv)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("invbench: error:") and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert not (tmp_path / out).exists()
    return lines[0]


BASE = parts.toml_config()


@pytest.mark.parametrize(
    "text, sets, needle",
    [
        (BASE + "\n[[[", (), "malformed TOML"),
        (BASE.replace("[metrics]", "bogus = 1\n[metrics]"), (), "priors[0].bogus"),
        (BASE.replace("image = ", "bogus = 1\nimage = "), (), "metrics.bogus"),
        (BASE, ("solvers[0].preset_x=1",), "solvers[0].preset_x"),
        (BASE, ('solvers[0].name="nosuch"',), "unknown solver 'nosuch'"),
        (BASE, ('solvers[0].preset="nosuch"',), "unknown preset 'nosuch'"),
        (BASE, ("solvers[0].overrides.nosuch=1",), "nosuch"),
        (BASE, ('tasks[0].operator="nosuch"',), "unknown operator preset 'nosuch'"),
        (BASE, ('priors[0].name="nosuch"',), "unknown prior 'nosuch'"),
        (BASE, ("tasks[0].noise_sigma=-0.1",), "tasks[0].noise_sigma"),
        (BASE, ("tasks[0].params.ratio=2.0",), "ratio"),
        (BASE, ('metrics.image=["nosuch"]',), "nosuch"),
        (BASE, ('device="cuda:7"',), "device"),
        (BASE, ('datasets[0].type="nosuch"',), "unknown dataset type"),
    ],
)
def test_bad_config_inputs(capsys, tmp_path, text, sets, needle):
    _expect_bad(capsys, tmp_path, text, needle, sets)


def test_wrong_channels_prior_dataset(capsys, tmp_path):
    text = BASE.replace('name = "_test-gauss"', 'name = "_test-gauss"\ndatasets = ["crops"]') + (
        '\n[[datasets]]\nname = "crops"\ntype = "bundled"\nn = 1\nsize = 8\n')
    _expect_bad(capsys, tmp_path, text, "(1, 8, 8)")


def test_nan_in_image(capsys, tmp_path):
    a = np.full((1, 8, 8), 0.5)
    a[0, 3, 3] = np.nan
    _folder(tmp_path, {"good.npy": np.full((1, 8, 8), 0.5), "bad.npy": a})
    text = BASE.replace('[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 3\n',
                        FOLDER_DS + "channels = 1\n")
    _expect_bad(capsys, tmp_path, text, "bad.npy")


def test_wrong_channels_in_folder(capsys, tmp_path):
    _folder(tmp_path, {}, png={"rgb.png": np.zeros((8, 8, 3), np.uint8)})
    text = BASE.replace('[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 3\n',
                        FOLDER_DS + "channels = 1\n")
    _expect_bad(capsys, tmp_path, text, "rgb.png")


def test_manifest_hash_mismatch(capsys, tmp_path):
    root = _folder(tmp_path, {"a.npy": np.full((1, 8, 8), 0.5)})
    np.save(root / "a.npy", np.full((1, 8, 8), 0.25))  # changed after the manifest was written
    text = BASE.replace('[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 3\n',
                        FOLDER_DS + "channels = 1\n")
    _expect_bad(capsys, tmp_path, text, "a.npy")


def test_missing_checkpoint(capsys, tmp_path):
    text = BASE.replace('name = "_test-gauss"', 'name = "adm-ffhq"\ncheckpoint = "nope/ffhq_10m.pt"')
    _expect_bad(capsys, tmp_path, text, "ffhq_10m.pt")


def test_unwritable_output_dir(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    _expect_bad(capsys, tmp_path, BASE, "afile", out="afile/run")


def test_existing_run_needs_resume_and_same_config(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    out = tmp_path / "run"
    rc, o, err = _main(capsys, ["run", str(cfg), "--out", str(out), "--no-progress"])
    assert rc == 0, err
    assert "6 rows" in o
    before = (out / "results.sqlite").read_bytes()
    rc, _, err = _main(capsys, ["run", str(cfg), "--out", str(out), "--no-progress"])
    assert rc == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _main(capsys, ["run", str(cfg), "--out", str(out), "--resume", "--set", "tasks[0].noise_sigma=0.07"])
    assert rc == 2 and "different config" in err
    assert (out / "results.sqlite").read_bytes() == before
    rc, o, err = _main(capsys, ["run", str(cfg), "--out", str(out), "--resume", "--no-progress"])
    assert rc == 0 and "6 already done" in o


def test_debug_shows_traceback(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + "\n[[[")
    from invbench.bench.config import ConfigError

    with pytest.raises(ConfigError):
        cli.main(["--debug", "run", str(cfg), "--out", str(tmp_path / "o")])


def test_usage_errors_exit_2(capsys):
    rc, _, err = _main(capsys, ["nosuch"])
    assert rc == 2 and err.startswith("invbench: error:")
    rc, _, err = _main(capsys, ["run"])
    assert rc == 2


def test_list_json(capsys):
    rc, out, _ = _main(capsys, ["list", "--json"])
    info = json.loads(out)
    assert rc == 0
    from invbench import operators, priors, solvers

    assert set(info["solvers"]) == set(solvers.names()) and info["operators"] == list(operators.PRESETS)
    assert set(info["priors"]) == set(priors.names())
    assert "default" in info["solvers"]["_test_noisy"]["presets"]
    assert info["solvers"]["lmaps"]["fidelity"] == "reconstruction, no public code"
    assert info["solvers"]["ddrm"]["fidelity"] == ""   # a port of released code


def test_check_reports_sha256(capsys, tmp_path):
    ck = tmp_path / "fake.pt"
    ck.write_bytes(b"abc")
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace('name = "_test-gauss"', 'name = "adm-ffhq"\ncheckpoint = "fake.pt"'))
    rc, out, _ = _main(capsys, ["check", "--config", str(cfg), "--json"])
    info = json.loads(out)
    row = next(r for r in info["files"] if r["path"] == str(ck))
    assert rc == 0 and row["present"]
    assert row["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert {m["metric"] for m in info["metrics"]} >= {"psnr", "lpips", "fid"}
    ck.unlink()
    rc, out, _ = _main(capsys, ["check", "--config", str(cfg)])
    assert rc == 1 and "MISSING" in out


def test_console_script_subprocess(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace("batch_size = 1", "batch_size = 0"))
    r = parts.cli_run(["run", str(cfg), "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "batch_size" in r.stderr
    assert not (tmp_path / "o").exists()


def test_report_and_compare_are_wired(capsys, tmp_path, monkeypatch):
    import sys
    import types

    calls = {}
    fake_report = types.ModuleType("invbench.bench.report")
    fake_report.write_report = lambda run_dir, out_dir, reference=None, zoom=None, matched_nfe=None: \
        calls.setdefault("report", (run_dir, out_dir, reference, zoom)) and out_dir
    fake_compare = types.ModuleType("invbench.bench.gate.compare")
    fake_compare.main = lambda argv: calls.setdefault("compare", argv) and 1
    monkeypatch.setitem(sys.modules, "invbench.bench.report", fake_report)
    monkeypatch.setitem(sys.modules, "invbench.bench.gate.compare", fake_compare)
    from invbench.bench import gate

    from invbench import bench

    monkeypatch.setattr(bench, "report", fake_report, raising=False)
    monkeypatch.setattr(gate, "compare", fake_compare, raising=False)
    rc, _, err = _main(capsys, ["report", str(tmp_path)])
    assert rc == 2 and "results.sqlite" in err        # not a run dir
    with store.Store(tmp_path / "results.sqlite"):
        pass
    rc, _, err = _main(capsys, ["report", str(tmp_path), "--zoom", "0.5,0.6,0.5"])
    assert rc == 2 and "--zoom" in err and "report" not in calls   # region outside the image
    rc, _out, _ = _main(capsys, ["report", str(tmp_path), "--out", str(tmp_path / "rep"), "--reference", "dps",
                                 "--zoom", "0,0.5,0.25"])
    assert rc == 0 and calls["report"] == (tmp_path, tmp_path / "rep", "dps", (0.0, 0.5, 0.25))
    rc, _, _ = _main(capsys, ["compare", "a", "b", "--psnr-drop", "0.5"])
    assert rc == 1 and calls["compare"] == ["a", "b", "--psnr-drop", "0.5"]


_AUDIT = r"""
import socket, sys
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
        sys.stderr.write(f"NETWORK-ATTEMPT {event}\n")
        raise RuntimeError(f"network access attempted: {event} {args!r:.200}")
sys.addaudithook(hook)
from tests.helpers import parts; parts.register()
from invbench.bench.cli import main
rc = main(%r)
from invbench import bench
df = bench.load_results(%r)
ms = bench.load_metric_status(%r)
print("ROWS", len(df), "STATUSES", sorted(set(df.status)))
sys.exit(rc)
"""


def _offline_run(tmp_path, cfg, out):
    import subprocess
    import sys

    code = _AUDIT % (["run", str(cfg), "--out", str(out), "--no-progress"], str(out), str(out))
    env = parts.subprocess_env(OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                          check=False)


def test_run_makes_no_network_access(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace('"mse", "consistency"]', '"mse", "consistency", "lpips", "ssim"]\nset = ["fid"]'))
    r = _offline_run(tmp_path, cfg, tmp_path / "o")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "NETWORK-ATTEMPT" not in r.stderr
    assert "ROWS 6 STATUSES ['ok']" in r.stdout


@pytest.mark.slow
def test_smoke_config_offline_one_ok_row_per_cell(tmp_path):
    """Acceptance: configs/smoke.toml under a network audit hook; every cell one ok row per image
    with every metric column filled or recorded unavailable."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "priors" / "data" / "small_cpu.pt").exists():
        pytest.skip("small-cpu weights not trained yet (priors/data/small_cpu.pt)")
    cfg = repo / "configs" / "smoke.toml"
    out = tmp_path / "smoke"
    r = _offline_run(tmp_path, cfg, out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "NETWORK-ATTEMPT" not in r.stderr
    df = store.load_results(out)
    assert set(df.status) == {"ok"} and df.row_id.is_unique
    assert set(df.solver) == {"vml_map", "dps", "ddrm", "pigdm", "oracle_map", "oracle_mean", "oracle_sample"}
    assert df.task.nunique() >= 3 and set(df.prior) == {"gmm-digits", "small-cpu"}
    cells = df.groupby(["solver", "preset", "task", "dataset", "prior"]).size()
    assert (cells
            == df.groupby("dataset").image_id.nunique().reindex(cells.index.get_level_values("dataset")).values).all()
    for c in ["seconds", "peak_rss_bytes", "nfe", "vjp", "device", "torch_version", "batch_size"]:
        assert df[c].notna().all(), c
    ms = store.load_metric_status(out).set_index("metric")
    for col in ["psnr", "ssim", "mse", "consistency", "lpips"]:
        if ms.loc[col, "available"]:
            assert df[col].notna().all(), col
        else:
            assert ms.loc[col, "note"].startswith("unavailable") and df[col].isna().all()
    gmm = df[df.prior == "gmm-digits"]
    assert gmm.dist_to_map.notna().all() and df[df.prior == "small-cpu"].dist_to_map.isna().all()
    sm = store.load_set_metrics(out)
    assert len(sm) == len(cells) and (sm.value.notna() | sm.note.str.startswith("unavailable")).all()


def _subcommands() -> list[str]:
    ap = cli._parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_subcommand_answers_help_with_exit_0(capsys):
    """``invbench CMD -h`` and ``--help`` print CMD's usage and return 0, for every subcommand
    (including those that parse their own options: compare, perf)."""
    names = _subcommands()
    assert {"run", "report", "compare", "perf", "fetch", "demo", "list", "check"} <= set(names)
    for name in names:
        for flag in ("-h", "--help"):
            rc = cli.main([name, flag])
            out = capsys.readouterr().out
            assert rc == 0, (name, flag)
            assert f"invbench {name}" in out and "usage" in out.lower(), (name, flag, out[:200])


def test_compare_usage_errors_are_exit_2(capsys):
    assert cli.main(["compare"]) == 2
    assert "BASE_RUN" in capsys.readouterr().err


def test_demo_writes_run_and_report_under_its_out_folder_only(tmp_path, monkeypatch, capsys):
    """``invbench demo`` puts the run and its report under ``--out`` (``RUN/report/``) and writes
    nothing into the source tree: the committed reports/demo/ is refreshed only by
    ``make demo-reference``."""
    root = tmp_path / "src"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "demo.toml").write_text(BASE.replace('name = "t"', 'name = "demo"', 1))
    (root / "configs" / "demo-released.toml").write_text(BASE.replace('name = "t"', 'name = "demo-released"', 1))
    monkeypatch.setattr(cli, "_repo_root", lambda: root)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, _out, err = _main(capsys, ["demo", "--out", "runs/demo", "--no-progress"])
    assert rc == 0, err
    assert (work / "runs" / "demo" / "report" / "index.html").is_file()
    assert (work / "runs" / "demo" / "report" / "leaderboard.csv").is_file()
    # the released presets' demo beside it, with its own report
    assert (work / "runs" / "demo-released" / "report" / "index.html").is_file()
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["demo", "demo-released"]
    assert sorted(p.name for p in work.iterdir()) == ["runs"]          # no reports/ in the working dir
    assert sorted(p.name for p in root.iterdir()) == ["configs"]       # nor in the source tree
