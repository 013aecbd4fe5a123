# The front door. Every stage target takes DATASET, DATA_ROOT, OUT and DEMO_SIZE.
SHELL := /bin/bash
PY ?= .venv/bin/python
DATASET ?= synthetic
DATA_ROOT ?=
OUT ?= runs
DEMO_SIZE ?=
WORKERS ?= 2

# Common flags every stage understands.
STAGE_ARGS = --dataset $(DATASET) --out $(OUT) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(if $(DEMO_SIZE),--demo-size $(DEMO_SIZE))

.PHONY: help setup test demo index clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: DATASET=synthetic|kitti|cityscapes|folder DATA_ROOT=path OUT=runs DEMO_SIZE=tiny|small WORKERS=2"

.venv/.done: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -r requirements.txt
	touch $@

setup: .venv/.done  ## create .venv and install the pinned requirements

test: .venv/.done  ## run the test suite (what CI runs)
	$(PY) -m pytest -q tests

.PHONY: synth
synth: .venv/.done  ## render the built-in synthetic city (DEMO_SIZE=tiny|small, else 8x40 frames at 384x768)
	$(PY) -m preprocess synth $(STAGE_ARGS)

index: .venv/.done  ## build and summarise the frame index of DATASET
	$(PY) -m preprocess index $(STAGE_ARGS)

demo: .venv/.done  ## the whole pipeline on the built-in synthetic city, CPU, minutes
	$(MAKE) index DATASET=synthetic DEMO_SIZE=$(or $(DEMO_SIZE),small)

clean:  ## remove runs/ (keeps .venv)
	rm -rf runs
