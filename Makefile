# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean slurm-up slurm-down test-slurm

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) run.py

# Two pytest-xdist workers, one per core of the 2-core CI machine: much of the suite waits on
# run.py start-ups and Slurm, which the other worker overlaps (8 minutes instead of 11). The Slurm
# tests share one worker (tests/conftest.py); `pytest -n 0` runs everything in one process.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) benchmarks/bench_surface.py

clean:
	rm -rf outputs multirun wandb .cache

slurm-up:
	bash scripts/slurm-cluster.sh start

slurm-down:
	bash scripts/slurm-cluster.sh stop

test-slurm: $(STAMP)
	$(PY) -m pytest -q -m slurm tests/test_slurm.py
