"""Fixtures of the cluster tests (``make test-cluster``; marked ``cluster``, outside ``make test``).

``slurm``: a one-node Slurm on 127.0.0.1 (:class:`tests.cluster.slurm.LocalSlurm`) for the whole
session, skipped with the reason where Slurm or munge is not installed. ``SLURM_CONF`` points
every client command of the session (the CLI subprocesses, submitit, the tests) at it. At the
end the fixture checks what the acceptance asks: the queue is empty and none of the daemons it
started is left running.
"""

from __future__ import annotations

import os

import pytest

from tests.cluster.slurm import ClusterError, LocalSlurm, missing_binaries


@pytest.fixture(scope="session")
def slurm():
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed here ({', '.join(missing)} not found; Debian: "
                    "apt-get install slurm-wlm munge)")
    cluster = LocalSlurm()
    try:
        cluster.start()
    except ClusterError as e:
        if os.getuid() != 0:
            pytest.skip(f"the one-node Slurm did not start without root: {str(e).splitlines()[0]}")
        raise
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    procs = dict(cluster.procs)
    try:
        yield cluster
        assert cluster.jobs() == [], f"jobs left in the queue: {cluster.jobs()}"
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
    left = [f"{name} (pid {p.pid})" for name, p in procs.items() if p.poll() is None]
    assert not left, f"daemons left running: {left}"


@pytest.fixture
def fresh_node(slurm):
    """The node idle and in service before and after the test (a test may drain it)."""
    slurm.cancel_all()
    yield slurm
    slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=resume", check=False)
    slurm.cancel_all()
    slurm.wait_idle(60)
