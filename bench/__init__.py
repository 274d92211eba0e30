"""Benchmark harness: experiment files, datasets, metrics, cost meters, store, runner, CLI."""
