# The front door. Every stage target takes DATASET, DATA_ROOT, OUT and DEMO_SIZE.
SHELL := /bin/bash
PY ?= .venv/bin/python
DATASET ?= synthetic
DATA_ROOT ?=
OUT ?= runs
DEMO_SIZE ?=
# Worker processes of the CPU stages: the machine's cores unless given. The trainers' data loaders keep
# their own defaults (chosen to feed a GPU) unless WORKERS is given on the command line or in the environment.
ifeq ($(origin WORKERS),undefined)
WORKERS := $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
endif
LOADER_WORKERS = $(if $(filter command line environment environment override,$(origin WORKERS)),--workers $(WORKERS))

# DATASET=video's frame selection, the same for every stage: STRIDE=N or FPS=F, START and END in seconds.
STRIDE ?=
FPS ?=
START ?=
END ?=
# Common flags every stage understands.
STAGE_ARGS = --dataset $(DATASET) --out $(OUT) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(if $(DEMO_SIZE),--demo-size $(DEMO_SIZE)) \
	$(if $(STRIDE),--stride $(STRIDE)) $(if $(FPS),--fps $(FPS)) $(if $(START),--start $(START)) $(if $(END),--end $(END))
# Where this DATASET/DEMO_SIZE's outputs live; each stage records its current output as <stage>/<name>.current.
RUN_DIR = $(OUT)/$(DATASET)$(if $(DEMO_SIZE),-$(DEMO_SIZE))
# Depth for regions/proposals: DEPTH if given; ground truth on the synthetic city; otherwise the
# trained depth network, trained first (`make depth`) when none is recorded yet (a pointer holds a
# path relative to its own folder; older ones an absolute path).
# Each DATASET/DEMO_SIZE has its own run folder: when it has no depth model, say so, name any other run
# folder's model (DEPTH=model:... reuses it), then train one.
RESOLVE_DEPTH = depth="$(DEPTH)"; if [ -z "$$depth" ] && [ "$(DATASET)" != synthetic ]; then \
	  if ! test -f $(RUN_DIR)/depth/model.current; then \
	    echo "depth: run folder $(RUN_DIR)/ (DATASET=$(DATASET)$(if $(DEMO_SIZE), DEMO_SIZE=$(DEMO_SIZE))) has no depth model yet: training one"; \
	    for other in $(OUT)/$(DATASET)/depth/model.current $(OUT)/$(DATASET)-*/depth/model.current; do \
	      [ -f "$$other" ] && [ "$$other" != $(RUN_DIR)/depth/model.current ] && \
	        echo "  another run folder has one: $$other (DEPTH=model:<the checkpoint it names> uses it instead)"; done; \
	    $(MAKE) --no-print-directory depth || exit 1; fi; \
	  ckpt=$$(cat $(RUN_DIR)/depth/model.current); case "$$ckpt" in /*) ;; *) ckpt=$(RUN_DIR)/depth/$$ckpt;; esac; \
	  depth="model:$$ckpt"; echo "regions: depth from the trained network ($$depth)"; fi;

.PHONY: help setup test demo index clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{ n = split($$2, w, " "); line = ""; first = 1; \
	  for (i = 1; i <= n; i++) { if (length(line) + length(w[i]) > 72) { printf (first ? "  make %-15s %s\n" : "  %-20s %s\n"), (first ? $$1 : ""), line; line = ""; first = 0 } \
	  line = line (line == "" ? "" : " ") w[i] } printf (first ? "  make %-15s %s\n" : "  %-20s %s\n"), (first ? $$1 : ""), line }'
	@echo "  variables: DATASET=synthetic|kitti|cityscapes|folder|kitti-semantic|video DATA_ROOT=path OUT=runs"
	@echo "             video: STRIDE=N | FPS=F, START=s END=s"
	@echo "             DEMO_SIZE=tiny|small WORKERS=$(WORKERS) DEMO_DEPTH=model|gt DEMO_SEEDS=\"0 1 2\""

.venv/.done: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -r requirements.txt
	touch $@

# The optional engines of --backend dask|ray (about 300 MB); the tests start them, so `make test` installs them.
.venv/.scale-done: requirements-scale.txt .venv/.done
	.venv/bin/pip install -r requirements-scale.txt
	touch $@

setup: .venv/.done  ## create .venv and install the pinned requirements

test: .venv/.done .venv/.scale-done  ## run the test suite (what CI runs; installs requirements-scale.txt too)
	$(PY) -m pytest -q tests

.PHONY: synth
synth: .venv/.done  ## render the built-in synthetic city (DEMO_SIZE=tiny|small, else 8x40 frames at 384x768; SYNTH_ARGS=...)
	$(PY) -m preprocess synth $(STAGE_ARGS) --workers $(WORKERS) $(SYNTH_ARGS)

.PHONY: depth depth-infer
depth: .venv/.done  ## train the self-supervised depth network on DATASET's videos (resumes; DEPTH_ARGS=...)
	$(PY) -m train depth-train $(STAGE_ARGS) $(LOADER_WORKERS) $(DEPTH_ARGS)

depth-infer: .venv/.done  ## write per-frame depth .npy of DATASET with the current depth model (INFER_ARGS=...)
	$(PY) -m preprocess depth-infer $(STAGE_ARGS) --workers $(WORKERS) $(INFER_ARGS)

.PHONY: depth-eval
depth-eval: .venv/.done  ## depth metrics of the current depth model vs the mean-depth baseline, frames with depth ground truth (DEPTH_EVAL_ARGS=...)
	$(PY) -m evaluate depth-eval $(STAGE_ARGS) $(DEPTH_EVAL_ARGS)

index: .venv/.done  ## build and summarise the frame index of DATASET
	$(PY) -m preprocess index $(STAGE_ARGS)

.PHONY: regions proposals
regions: .venv/.done  ## coherent depth regions -> region store (DEPTH=gt|files:DIR|model:CKPT, PROPOSALS=depth|felzenszwalb|gt, REGIONS_ARGS=...)
	@$(RESOLVE_DEPTH) $(PY) -m preprocess regions $(STAGE_ARGS) --workers $(WORKERS) $${depth:+--depth $$depth} $(if $(PROPOSALS),--proposals $(PROPOSALS)) $(REGIONS_ARGS)

proposals: .venv/.done  ## region-proposal quality report vs SLIC / Felzenszwalb baselines on labelled frames (DEPTH=..., PROPOSALS_ARGS=...)
	@# without DEPTH, a recorded region store's own depth source is scored (the command says which)
	@if [ -z "$(DEPTH)" ] && [ -f $(RUN_DIR)/regions/$(or $(PROPOSALS),depth).current ]; then depth=; \
	else $(RESOLVE_DEPTH) true; fi; $(PY) -m evaluate proposals $(STAGE_ARGS) --workers $(WORKERS) $${depth:+--depth $$depth} $(PROPOSALS_ARGS)
# `make proposals` scores the grouping `make regions` makes: the same PROPOSALS and REGIONS_ARGS (--depth-kind,
# --depth-scale, grouping knobs), then PROPOSALS_ARGS, which win where both set an option.
override PROPOSALS_ARGS := $(if $(PROPOSALS),--proposals $(PROPOSALS)) $(REGIONS_ARGS) $(PROPOSALS_ARGS)

.PHONY: proposals-sweep
proposals-sweep: .venv/.done  ## proposal benchmark: every method over a sweep of region counts, synthetic city (exact / weak / learnt depth) + DATASET's labelled frames (DEPTH=..., SWEEP_ARGS=...)
	@$(RESOLVE_DEPTH) $(PY) -m evaluate proposals-sweep $(STAGE_ARGS) --workers $(WORKERS) $${depth:+--depth $$depth} $(REGIONS_ARGS) $(SWEEP_ARGS)

.PHONY: shards inspect
shards: .venv/.done  ## copy-paste groups -> WebDataset shards, reused when present; makes the regions first if missing (PROPOSALS=depth, SHARDS_ARGS=...)
	@test -f $(RUN_DIR)/regions/$(or $(PROPOSALS),depth).current || $(MAKE) regions PROPOSALS=$(or $(PROPOSALS),depth)
	$(PY) -m preprocess shards $(STAGE_ARGS) --workers $(WORKERS) --proposals $(or $(PROPOSALS),depth) $(SHARDS_ARGS)

inspect: .venv/.done  ## PNG contact sheet of one group of the current shards (GROUP=e00_g0000000, INSPECT_ARGS=...)
	$(PY) -m preprocess inspect $(STAGE_ARGS) --proposals $(or $(PROPOSALS),depth) $(if $(GROUP),--key $(GROUP)) $(INSPECT_ARGS)

.PHONY: train
train: .venv/.done  ## dense SwAV pre-training from the shard set of `make shards` (resumes; TRAIN_ARGS=...)
	@test -f $(RUN_DIR)/shards/$(or $(PROPOSALS),depth).current || $(MAKE) --no-print-directory shards
	$(PY) -m train contrastive $(STAGE_ARGS) $(LOADER_WORKERS) $(if $(PROPOSALS),--proposals $(PROPOSALS)) $(TRAIN_ARGS)

.PHONY: picie
picie: .venv/.done  ## PiCIE (Cho et al. 2021) on the frames and network of `make train`, the peer `make eval` scores beside ours (resumes; PICIE_ARGS=...)
	$(PY) -m train picie $(STAGE_ARGS) $(LOADER_WORKERS) $(PICIE_ARGS)

.PHONY: report
.PHONY: ablate
ablate: .venv/.done  ## the paper's ablation grid: proposals x lambda x M x seeds, pre-trained, clustered, fine-tuned; tables + plots; reruns reuse (ABLATE_ARGS=...)
	$(PY) -m evaluate ablate $(STAGE_ARGS) --workers $(WORKERS) $(ABLATE_ARGS)

report: .venv/.done  ## one HTML page of everything the stages wrote for DATASET/DEMO_SIZE (REPORT_ARGS=...)
	$(PY) -m evaluate report $(STAGE_ARGS) $(REPORT_ARGS)

.PHONY: eval
eval: .venv/.done  ## unsupervised segmentation of the latest `make train` checkpoint vs random init + report (EVAL_ARGS=...)
	@test -f $(RUN_DIR)/train/model.current || $(MAKE) --no-print-directory train
	$(PY) -m evaluate unsupervised $(STAGE_ARGS) $(EVAL_ARGS)

# Fine-tuning: TASK=semantic|instance, LABEL_FRACTION=1/16 (or a frame count), INIT=pretrained|scratch|PATH,
# FINETUNE_ARGS=... (e.g. --folds 5 --repeats 3), TORCHVISION=PATH adds a torchvision ResNet to finetune-compare.
TASK ?= semantic
LABEL_FRACTION ?=
INIT ?= pretrained
TORCHVISION ?=
FINETUNE_ARGS ?=
FINETUNE_EVAL_ARGS ?=
FT_FLAGS = --task $(TASK) $(if $(LABEL_FRACTION),--label-fraction $(LABEL_FRACTION)) $(FINETUNE_ARGS)
# INIT=pretrained needs the `make train` model of this DATASET/DEMO_SIZE: train it first when none is recorded
# (KITTI semantics fine-tunes the model of DATASET=kitti: train that one yourself).
# The run a pointer names: pointers hold paths relative to their own folder (the tree can move).
FT_RUN = $$(r=$$(cat $(RUN_DIR)/finetune/$(TASK).current); case "$$r" in /*) echo "$$r";; *) echo "$(RUN_DIR)/finetune/$$r";; esac)
NEED_PRETRAINED = test -f $(RUN_DIR)/train/model.current || [ "$(DATASET)" = kitti-semantic ] || \
	  $(MAKE) --no-print-directory train || exit 1;

.PHONY: finetune finetune-compare
finetune: .venv/.done  ## fine-tune on LABEL_FRACTION of the labels and score it (TASK, INIT=pretrained|scratch|PATH, FINETUNE_ARGS=...)
	@$(if $(filter pretrained,$(INIT)),$(NEED_PRETRAINED)) start=$$(date +%s); set -e; \
	$(PY) -m train finetune $(STAGE_ARGS) $(LOADER_WORKERS) --init $(INIT) $(FT_FLAGS); \
	$(PY) -m evaluate finetune-eval $(STAGE_ARGS) --task $(TASK) --runs "$(FT_RUN)" $(FINETUNE_EVAL_ARGS); \
	echo "finetune: done in $$(( $$(date +%s) - start )) s"

finetune-compare: .venv/.done  ## scratch vs pretrained (vs TORCHVISION=PATH) with the same frames, seeds and budget: one table
	@$(NEED_PRETRAINED) start=$$(date +%s); set -e; runs=""; \
	for init in scratch pretrained $(TORCHVISION); do \
	  $(PY) -m train finetune $(STAGE_ARGS) $(LOADER_WORKERS) --init $$init $(FT_FLAGS); \
	  runs="$$runs$${runs:+,}$(FT_RUN)"; \
	done; \
	$(PY) -m evaluate finetune-eval $(STAGE_ARGS) --task $(TASK) --runs "$$runs" $(FINETUNE_EVAL_ARGS); \
	echo "finetune-compare: done in $$(( $$(date +%s) - start )) s"

DEMO ?= $(or $(DEMO_SIZE),tiny)
# The demo's regions come from the depth network it has just trained; DEMO_DEPTH=gt uses the exact depth.
DEMO_DEPTH ?= model
# Pre-training seeds of the demo: small trains three so that `make eval` (which scores every finished
# run of the same settings) reports pre-trained vs random init with a seed spread.
DEMO_SEEDS ?= $(if $(filter small,$(DEMO)),0 1 2,0)
# Torch threads per demo process. One: on a 2-core machine shared with other work, two threads per
# process spin against each other (the tiny depth step measured 4 CPU-seconds at 2 threads, 0.8 at 1).
DEMO_THREADS ?= 1
demo: export OMP_NUM_THREADS = $(DEMO_THREADS)
demo: .venv/.done  ## the whole pipeline on the built-in synthetic city, CPU, minutes (DEMO_SIZE=tiny default, or small; DEMO_DEPTH=model|gt)
	@start=$$(date +%s.%N); set -e; run=$(OUT)/synthetic-$(DEMO); times=""; \
	for target in index depth depth-eval regions proposals shards inspect train eval finetune report; do \
	  t0=$$(date +%s.%N); depth=; \
	  case $$target in regions|proposals|shards) \
	    depth=gt; if [ "$(DEMO_DEPTH)" = model ] && [ -f $$run/depth/model.current ]; then \
	      ckpt=$$(cat $$run/depth/model.current); case "$$ckpt" in /*) ;; *) ckpt=$$run/depth/$$ckpt;; esac; depth="model:$$ckpt"; fi;; \
	  esac; \
	  echo "=== make $$target DATASET=synthetic DEMO_SIZE=$(DEMO)$${depth:+ DEPTH=$$depth}"; \
	  seeds=0; [ $$target = train ] && seeds="$(DEMO_SEEDS)"; \
	  for seed in $$seeds; do \
	    $(MAKE) --no-print-directory $$target DATASET=synthetic DEMO_SIZE=$(DEMO) DATA_ROOT= OUT=$(OUT) $${depth:+DEPTH=$$depth} \
	      $$([ $$target = train ] && echo TRAIN_ARGS=--seed=$$seed); \
	  done; \
	  times="$$times $$target $$(echo "$$(date +%s.%N) $$t0" | awk '{printf "%.1f", $$1 - $$2}')"; \
	done; \
	echo "demo: seconds per stage:$$(echo $$times | awk '{for (i = 1; i < NF; i += 2) printf " %s %s%s", $$i, $$(i + 1), (i + 2 < NF ? "," : "")}')"; \
	load=$$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime | sed 's/.*average[s]*: //'); cores=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); \
	echo "demo: finished in $$(echo "$$(date +%s.%N) $$start" | awk '{printf "%.0f", $$1 - $$2}') s, load average $$load on $$cores cores; outputs under $(OUT)/synthetic-$(DEMO)/"; \
	if awk -v l="$${load%% *}" -v c="$$cores" 'BEGIN {exit !(l > c)}'; then \
	  echo "demo: the machine is busy (load $${load%% *} > $$cores cores): the times above measure the load as much as the demo"; fi

clean:  ## remove runs/ (keeps .venv)
	rm -rf runs
