"""Each checkout tests its own code: a copy of the source tree imported with this environment
(whose editable install points at another folder) resolves ``invbench.*`` inside the copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("invbench", "operators", "priors", "solvers", "bench")


def test_a_second_checkout_imports_its_own_folders(tmp_path):
    clone = tmp_path / "clone"
    for d in FOLDERS:
        shutil.copytree(REPO / d, clone / d, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (clone / "solvers" / "__init__.py").write_text(
        (clone / "solvers" / "__init__.py").read_text() + "\nCHECKOUT_MARK = 'the clone'\n")
    code = ("import invbench.solvers as s, invbench.bench.report as r, invbench.operators as o; "
            "print(s.__file__); print(r.__file__); print(o.__file__); print(getattr(s, 'CHECKOUT_MARK', 'none'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(clone)           # what pytest's `pythonpath = ["."]` does in the clone
    r = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert all(Path(p).resolve().is_relative_to(clone.resolve()) for p in lines[:3]), lines
    assert lines[3] == "the" or "the clone" in r.stdout


def test_a_module_the_checkout_lacks_is_missing_not_taken_from_another(tmp_path):
    """A clone without ``bench/problem.py`` (say, a branch before it existed) must fail to import
    it, not import the file of the checkout the editable install points at."""
    clone = tmp_path / "clone"
    for d in FOLDERS:
        shutil.copytree(REPO / d, clone / d, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (clone / "bench" / "problem.py").unlink()
    code = "import invbench.bench.problem as p; print(p.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(clone)
    r = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode != 0, r.stdout
    assert "ModuleNotFoundError: No module named 'invbench.bench.problem'" in r.stderr, r.stderr


def test_a_module_that_exists_nowhere_is_left_to_the_finder_protocol():
    """``importlib.util.find_spec`` of a module no checkout has answers None (as for any package),
    it does not raise."""
    import importlib.util

    assert importlib.util.find_spec("invbench.bench.no_such_module") is None
    assert importlib.util.find_spec("invbench.bench.problem") is not None
