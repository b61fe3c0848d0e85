# nightseg: `make run` and `make test` are all the set-up a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help install run test test-fast gpu-check lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install nightseg (editable) with the dev extra

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the main job on the embedded synthetic data (night2day_inference)
	$(PY) -m nightseg.run strategy=night2day_inference

# Two workers, a test file each at a time (module fixtures are built once), handed out in the order
# tests/conftest.py sorts them (the files of long tests first); see tests/conftest.py.
XDIST := -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest -q $(XDIST)

test-fast: $(STAMP)  ## unit tests only: no Trainer, job or other process (tests marked slow or distributed)
	$(PY) -m pytest -q -m "not slow and not distributed"

gpu-check: $(STAMP)  ## on a GPU (<= 8 min): cuda tests, a smoke run per strategy, bench, loader, scores vs CPU; says so where there is none
	$(PY) -m nightseg.gpu_check

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check nightseg tests

clean:  ## remove the venv, caches and outputs (not the stage cache in .cache/)
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
