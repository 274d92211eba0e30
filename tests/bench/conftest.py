"""Shared fixtures of the bench tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fixture_report(tmp_path_factory):
    """A fake run (contract schema, with hostile solver labels) and its report, built once.

    Returns ``(run_dir, out_dir)``."""
    from invbench.bench.report import write_report

    from tests.helpers.report_fixture import HOSTILE, default_cells, make_run

    base = tmp_path_factory.mktemp("report")
    run_dir = make_run(base / "run", default_cells(HOSTILE))
    out_dir = write_report(run_dir, base / "out")
    return run_dir, out_dir
