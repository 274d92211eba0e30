"""Standalone studies built on the harness's parts, kept apart from the run pipeline.

- :mod:`invbench.bench.studies.exact_posterior` — every solver scored against the closed-form
  posterior of Gaussian-mixture priors (``make validation`` writes ``reports/validation/``);
  :mod:`~invbench.bench.studies.exact_posterior_truth` holds its ground truths and problem ids.
- :mod:`invbench.bench.studies.perf` — ``invbench perf``: solver cost against the
  network-evaluation floor, against deepinv, batching, VML-MAP vs DPS (``reports/perf/``);
  :mod:`~invbench.bench.studies.perf_timing` holds its timing machinery and
  :mod:`~invbench.bench.studies.perf_readme` the template of ``reports/perf/README.md``.

Nothing in the run pipeline (config -> grid -> runner -> store) imports from here.
"""
