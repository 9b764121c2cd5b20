# STS compendium: every figure and table from the notebooks, executed with papermill.
#
#   make paper                      # the whole paper on DATASET (default: demo, simulated)
#   make train BACKBONE=densenet121 EPOCHS=5
#   make paper DATASET=teeter2018   # real spike trains (files in data/teeter2018/raw/ or internet)
#   make test                       # pytest, including a smoke run of every notebook
#
# Stage targets are the artifacts themselves, so an interrupted `make paper` resumes and a rerun
# skips what is up to date. Executed notebooks go to build/<dataset>/; sources are never modified.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sts-installed

DATASET ?= demo
SEED ?= 0
DATA_DIR ?= $(or $(STS_DATA_DIR),data)
FIGURES_DIR ?= figures
BACKBONE ?= resnet18
BACKBONES ?= resnet18 inception_v3 densenet121 mobilenet_v2

D := $(DATA_DIR)/$(DATASET)
BUILD_DIR ?= build
B := $(BUILD_DIR)/$(DATASET)
F := $(FIGURES_DIR)/$(DATASET)

# Notebook parameters: DATASET, SEED, DATA_DIR and FIGURES_DIR always; every other one only when set
# on the command line or in the environment (`make train EPOCHS=5`), so the notebook's default holds otherwise.
OPTIONAL_PARAMS := N_CELLS MAX_CELLS N_JOBS SIGNAL OFFSETS_PA PRE_S POST_S N_TIMES N_SCALES F_MIN_HZ F_MAX_HZ \
	STORE_TIMES TEST_FRACTION N_REPEATS PROFILE PRETRAINED FREEZE IMAGE_SIZE EPOCHS BATCH_SIZE LR LR_DECAY \
	DECAY_PERIOD PATIENCE DROPOUT CLASS_WEIGHTS N_TRIALS N_FOLDS TRIAL_EPOCHS DEVICE METHODS \
	IG_STEPS MAX_TEST_CELLS N_BOOT FEATURE_TABLES SPLIT_FILES FEATURE_SET N_ITER N_FI_CELLS
PARAMS = -p DATASET $(DATASET) -p SEED $(SEED) -p DATA_DIR $(DATA_DIR) -p FIGURES_DIR $(FIGURES_DIR) \
	$(foreach v,$(OPTIONAL_PARAMS),$(if $(filter command line environment environment override,$(origin $(v))),-p $(v) '$($(v))'))
comma := ,
empty :=
space := $(empty) $(empty)
BACKBONES_PARAM = -p BACKBONES '[$(subst $(space),$(comma)$(space),$(strip $(BACKBONES)))]'
MODELS = $(foreach b,$(BACKBONES),$(D)/models/$(b)/model.pt)
RUN = STS_DATA_DIR=$(DATA_DIR) $(PY) -m sts_utils.runner

.PHONY: help env paper data scalograms splits train train-all evaluate saliency baseline test test-fast \
	test-integration lab bench clean clean-all

help:
	@echo "make paper [DATASET=demo|teeter2018|patchseq|celltypes|allen]  run notebooks 01-07 -> figures/<dataset>/"
	@echo "make data | scalograms | splits | train BACKBONE=... | baseline | evaluate | saliency"
	@echo "make test   pytest (unit tests + a smoke run of every notebook)"
	@echo "make lab    JupyterLab (the .py notebooks open as notebooks)"
	@echo "make bench  benchmarks/   make clean [DATASET=...]  (keeps downloaded/simulated raw data)"

# ---------------------------------------------------------------------------------------- environment
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lab]'
	$(PY) -m ipykernel install --sys-prefix --name sts --display-name "Python (sts)" >/dev/null
	touch $(STAMP)

env: $(STAMP)

# ------------------------------------------------------------------------------------------- stages
paper: data scalograms splits train-all baseline evaluate saliency
	@echo "paper done: figures and tables in $(F)/, executed notebooks in $(B)/"

data: $(D)/cells.csv
scalograms: $(D)/scalograms/index.csv
splits: $(D)/splits.csv
train: $(D)/models/$(BACKBONE)/model.pt
train-all: $(MODELS)
baseline: $(D)/baseline/predictions.csv
evaluate: $(F)/results_table.csv
saliency: $(F)/deletion_table.csv

$(D)/cells.csv: notebooks/01_data_acquisition.py sts_utils/datasets.py sts_utils/recordings.py sts_utils/simulate.py sts_utils/nwb.py | $(STAMP)
	$(RUN) $< $(B)/01_data_acquisition.ipynb $(PARAMS)

$(D)/scalograms/index.csv: notebooks/02_scalograms.py $(D)/cells.csv sts_utils/scalograms.py sts_utils/sweeps.py | $(STAMP)
	$(RUN) $< $(B)/02_scalograms.ipynb $(PARAMS)

$(D)/splits.csv: notebooks/03_splitting.py $(D)/scalograms/index.csv sts_utils/splits.py | $(STAMP)
	$(RUN) $< $(B)/03_splitting.ipynb $(PARAMS)

$(D)/models/%/model.pt: notebooks/04_finetune.py $(D)/splits.csv sts_utils/models.py sts_utils/training.py | $(STAMP)
	$(RUN) $< $(B)/04_finetune_$*.ipynb $(PARAMS) -p BACKBONE $*

$(D)/baseline/predictions.csv: notebooks/07_baseline.py $(D)/splits.csv sts_utils/features.py sts_utils/baseline.py | $(STAMP)
	$(RUN) $< $(B)/07_baseline.ipynb $(PARAMS)

# the results table has a row per backbone and one for the LightGBM baseline
$(F)/results_table.csv: notebooks/05_testing.py $(MODELS) $(D)/baseline/predictions.csv sts_utils/evaluation.py sts_utils/audit.py | $(STAMP)
	$(RUN) $< $(B)/05_testing.ipynb $(PARAMS) $(BACKBONES_PARAM)

$(F)/deletion_table.csv: notebooks/06_saliency.py $(F)/results_table.csv sts_utils/saliency.py | $(STAMP)
	$(RUN) $< $(B)/06_saliency.ipynb $(PARAMS) $(BACKBONES_PARAM)

# ---------------------------------------------------------------------------------------------- tools
test: $(STAMP)
	$(PY) -m pytest -m "not integration" -q

test-integration: $(STAMP)
	$(PY) -m pytest -m integration -q

lab: $(STAMP)
	$(PY) -m jupyter lab --ServerApp.root_dir=$(CURDIR) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(B) $(F)
	test ! -d $(D) || find $(D) -mindepth 1 -maxdepth 1 ! -name raw -exec rm -rf {} +
	@echo "removed $(B), $(F) and the derived artifacts of $(D); downloaded/simulated $(D)/raw kept"

clean-all: clean
	rm -rf $(VENV)
