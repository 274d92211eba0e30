# Every target creates .venv first when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: venv test test-all test-cluster demo demo-reference bench-perf lint validation reliability clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -x -n 2 --durations=15

test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m "" --durations=25

# the tests on a one-node Slurm started for them (tests/cluster; skipped where Slurm is not installed)
test-cluster: $(VENV)/.installed
	$(PY) -m pytest -q -m cluster tests/cluster --durations=15

demo: $(VENV)/.installed
	$(VENV)/bin/invbench demo

# refresh the committed reference reports (reports/demo/, reports/demo-released/) from the demo runs
demo-reference: demo
	$(VENV)/bin/invbench report runs/demo --out reports/demo
	$(VENV)/bin/invbench report runs/demo-released --out reports/demo-released
	$(PY) scripts/readme_table.py

bench-perf: $(VENV)/.installed
	$(PY) -m pytest tests/perf -m "" --benchmark-enable --benchmark-autosave

validation: $(VENV)/.installed
	$(PY) scripts/validation_table.py

reliability: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) scripts/reliability_report.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check invbench assets operators priors solvers bench tests scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
