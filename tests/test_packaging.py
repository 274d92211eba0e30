"""Packaging: one top-level import name (``invbench``), its subpackages mapped from the
repository's folders, package data included, and a wheel that works outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"assets": "invbench.assets", "operators": "invbench.operators", "priors": "invbench.priors",
           "solvers": "invbench.solvers", "bench": "invbench.bench"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_under_the_namespace():
    """Each folder with an ``__init__.py`` under the four roots is an ``invbench.*`` package in
    pyproject.toml (a forgotten subpackage would be missing from the wheel)."""
    cfg = _pyproject()["tool"]["setuptools"]
    listed = set(cfg["packages"])
    want = {"invbench"}
    for folder, dotted in FOLDERS.items():
        assert cfg["package-dir"][dotted] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            want.add(".".join((dotted, *rel)))
    assert listed == want
    assert all(name == "invbench" or name.startswith("invbench.") for name in listed)
    assert _pyproject()["project"]["scripts"]["invbench"] == "invbench.bench.cli:main"


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source tree (build/, *.egg-info): build from a copy, so the test
    # writes nothing into the checkout
    src = tmp_path_factory.mktemp("src") / "invbench"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "tests"))
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(src)], check=True, env=env, capture_output=True, timeout=300)
    (whl,) = out.glob("invbench-*.whl")
    return whl


def test_wheel_has_one_top_level_name_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"invbench"}
    for data in ("invbench/priors/data/small_cpu.pt", "invbench/priors/data/gmm_digits.npz",
                 "invbench/bench/data/ffhq1k.txt", "invbench/bench/data/imagenet1k.txt"):
        assert data in names, data
    assert "invbench/bench/studies/perf.py" in names


@pytest.mark.slow  # a fresh venv and a pip install (~15 s); the wheel's contents are checked above
def test_wheel_installs_and_runs_outside_the_checkout(wheel, tmp_path):
    """Install the wheel into a fresh virtual environment (its dependencies borrowed from this
    one through a .pth file, so nothing is downloaded), then run ``invbench list`` and a tiny
    run from a directory outside the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "invbench_test_deps.pth").write_text(deps + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = ("import importlib.util as u, invbench, invbench.solvers, invbench.operators, invbench.priors, "
             "invbench.bench; print(invbench.__file__); "
             "print([m for m in ('operators', 'priors', 'solvers', 'bench') if u.find_spec(m)])")
    r = _run([str(py), "-c", probe], work, env)
    assert r.returncode == 0, r.stderr
    where, stray = r.stdout.strip().splitlines()
    assert Path(where).is_relative_to(site), where
    assert stray == "[]", f"top-level modules installed: {stray}"

    cli = venv / "bin" / "invbench"
    r = _run([str(cli), "list"], work, env)
    assert r.returncode == 0, r.stderr
    assert "vml_map" in r.stdout and "small-cpu" in r.stdout

    (work / "tiny.toml").write_text(
        'name = "tiny"\nseeds = [0]\n'
        '[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 1\n'
        '[[priors]]\nname = "gmm-digits"\ndatasets = ["digits"]\n'
        '[[tasks]]\nname = "denoise"\noperator = "denoise"\nnoise_sigma = 0.1\n'
        '[[solvers]]\nname = "ddrm"\noverrides = { steps = 4 }\n'
        '[[solvers]]\nname = "oracle_mean"\n'
        '[metrics]\nimage = ["psnr"]\n')
    r = _run([str(cli), "run", "tiny.toml", "--out", "run"], work, env)
    assert r.returncode == 0, r.stderr
    read = ("from invbench.bench import load_results; df = load_results('run'); "
            "print(sorted(df.solver), sorted(set(df.status)))")
    r = _run([str(py), "-c", read], work, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['ddrm', 'oracle_mean'] ['ok']"
