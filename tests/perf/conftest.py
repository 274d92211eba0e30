"""pytest-benchmark suite (``make bench-perf``). In the default test run the benchmarks are
disabled by ``--benchmark-disable`` (pyproject addopts): each body then runs once, untimed, as a
smoke test. See docs/reports.md for saving and comparing baselines."""


def pytest_configure(config):
    config.addinivalue_line("markers", "perf: pytest-benchmark timing (timed only by `make bench-perf`)")
