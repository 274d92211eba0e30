"""Fixtures of the reliability campaign (docs/reliability.md). Helpers live in
``tests/helpers/reliability.py``.

``figures`` records campaign figures (kill points, corpus size, ...) into the JSON file named by
``$INVBENCH_RELIABILITY_FIGURES`` (set by scripts/reliability_report.py); a no-op otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


class _Figures:
    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def record(self, key: str, value) -> None:
        if self.path is None:
            return
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        data[key] = value
        self.path.write_text(json.dumps(data, indent=2, sort_keys=True))


@pytest.fixture(scope="session")
def figures() -> _Figures:
    return _Figures(os.environ.get("INVBENCH_RELIABILITY_FIGURES"))
