"""Suite-wide fixtures.

Every test sees an empty invbench weights folder (``INVBENCH_WEIGHTS``), so files that
``invbench fetch`` put in the user's real folder never change what a test measures. The real
folder stays reachable through ``REAL_WEIGHTS_DIR`` for the tests that check the real files.
"""

from __future__ import annotations

import pytest

from invbench.bench.weights import cache_dir

REAL_WEIGHTS_DIR = cache_dir()


@pytest.fixture(autouse=True)
def _isolated_weights_folder(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("INVBENCH_WEIGHTS", str(tmp_path_factory.getbasetemp() / "invbench-weights-empty"))
