"""Shared fixtures of the bench tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def fixture_report(tmp_path_factory, worker_id):
    """A fake run (contract schema, with hostile solver labels) and its report, built once per test
    session: under pytest-xdist the first worker that needs it builds it in the session's shared
    temporary folder (under a file lock) and the others read it. Tests only read it.

    Returns ``(run_dir, out_dir)``."""
    from filelock import FileLock
    from invbench.bench.report import write_report

    from tests.helpers.report_fixture import HOSTILE, default_cells, make_run

    def build(base):
        run_dir = make_run(base / "run", default_cells(HOSTILE))
        return run_dir, write_report(run_dir, base / "out")

    if worker_id == "master":                      # not under xdist
        return build(tmp_path_factory.mktemp("report"))
    shared = tmp_path_factory.getbasetemp().parent / "fixture_report"   # one folder for all workers
    with FileLock(str(shared) + ".lock"):
        if not (shared / "complete").exists():
            shutil.rmtree(shared, ignore_errors=True)   # a build interrupted by an error
            shared.mkdir()
            build(shared)
            (shared / "complete").write_text("built\n")
    return shared / "run", shared / "out"
