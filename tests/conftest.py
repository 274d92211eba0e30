"""Suite-wide fixtures.

Every test sees an empty invbench weights folder (``INVBENCH_WEIGHTS``), so files that
``invbench fetch`` put in the user's real folder never change what a test measures (the tests
of the real files read the real folder at collection time, before this fixture applies).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_weights_folder(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("INVBENCH_WEIGHTS", str(tmp_path_factory.getbasetemp() / "invbench-weights-empty"))
