# leadscore: every target sets up what it needs from a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3
PORT ?= 3000

export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install test demo train serve bench bench-service sample clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed  ## create .venv and install leadscore with pinned dependencies

test: install  ## run the whole test suite (unit, property, model, service over HTTP)
	$(PY) -m pytest -q

train: install  ## train on data/sample, print model vs grid vs logistic regression
	$(BIN)/leadscore train --data data/sample --metrics-out .leadscore/metrics.json

serve: install  ## serve the champion model on localhost:$(PORT)
	$(BIN)/leadscore serve --port $(PORT)

demo: train serve  ## from a fresh clone: install, train on data/sample, serve on localhost:3000

sample: install  ## regenerate data/sample (2,000 simulated leads, seed 42)
	$(BIN)/leadscore simulate --leads 2000 --seed 42 --out data/sample

clean:  ## remove the venv and local state (MLflow store, bundles)
	rm -rf $(VENV) .leadscore
