# STS compendium: every figure and table from the notebooks, executed with papermill.
#
#   make paper                      # the whole paper on DATASET (default: demo, simulated)
#   make train BACKBONE=densenet121 EPOCHS=5
#   make paper DATASET=teeter2018   # real spike trains (files in data/teeter2018/raw/ or internet)
#   make paper DATASET=mylab        # your own recordings, registered by data/mylab/dataset.yaml (README)
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

BUILD_DIR ?= build
# make splits file names at spaces, so a folder with one cannot be a target: refused before anything runs
# (not written into ./data by half-parsed paths)
$(foreach v,DATA_DIR FIGURES_DIR BUILD_DIR DATASET,$(if $(word 2,$($(v))),$(error $(v)="$($(v))" has a space, \
	which make cannot use in file names; give a path without spaces, e.g. a link: ln -s "$($(v))" ~/sts-link \
	and $(v)=~/sts-link)))
D := $(DATA_DIR)/$(DATASET)
B := $(BUILD_DIR)/$(DATASET)
F := $(FIGURES_DIR)/$(DATASET)

# Notebook parameters: DATASET, SEED, DATA_DIR and FIGURES_DIR always, and every other variable given on the
# command line (`make train EPOCHS=5`) except make's own below; the runner checks each name against the pages'
# `parameters` cells (a name no page declares is refused in one line) and gives each page the ones it declares,
# so the notebook's default holds otherwise. The pages' cells are the only list of parameters.
MAKE_VARS := DATASET SEED DATA_DIR FIGURES_DIR BUILD_DIR BACKBONE BACKBONES VENV PYTHON MODELS INPUT OUT FIGURES \
	CELLS N_WORKERS TRIALS_PER_GPU UPGRADE LAB_ARGS JOBS
PAGE_VARS = $(filter-out $(MAKE_VARS),$(sort $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v)))))
PARAMS = -p DATASET $(DATASET) -p SEED $(SEED) -p DATA_DIR $(DATA_DIR) -p FIGURES_DIR $(FIGURES_DIR) \
	$(foreach v,$(PAGE_VARS),-p $(v) '$($(v))')
comma := ,
empty :=
space := $(empty) $(empty)
BACKBONES_VALUE = [$(subst $(space),$(comma)$(space),$(strip $(BACKBONES)))]
BACKBONES_PARAM = -p BACKBONES '$(BACKBONES_VALUE)'
MODEL_FILES = $(foreach b,$(BACKBONES),$(D)/models/$(b)/model.pt)
RUN = STS_DATA_DIR=$(DATA_DIR) $(PY) -m sts_utils.pages.runner

.PHONY: help env lock paper paper-pages data scalograms splits train train-all evaluate saliency comparison new-cells export predict baseline search readme test \
	rig-recordings test-integration update-references lab bench clean clean-all

help:
	@echo "make paper [DATASET=demo|teeter2018|patchseq|celltypes|allen|<folder dataset>]  notebooks 01-09 (demo: and 10) -> figures/<dataset>/"
	@echo "make data | scalograms | splits | train BACKBONE=... | baseline | evaluate | saliency | comparison | new-cells | rig-recordings"
	@echo "make export BACKBONE=...|all   model bundles;   make predict MODELS='...' INPUT=... OUT=...   classify new recordings"
	@echo "make search BACKBONE=... N_WORKERS=k [OPTUNA_STORAGE=...]  hyperparameter search by k workers sharing one study"
	@echo "make test   pytest (unit tests + a smoke run of every notebook);  make test-integration  the tiny paper vs tests/references/"
	@echo "make update-references     rewrite the tiny paper's reference tables (after a change that moves results on purpose)"
	@echo "make book [DATASET=demo]   executed notebooks -> build/<dataset>/book/index.html (Sphinx + myst-nb)"
	@echo "make check-browser         the book, JupyterLab and optuna-dashboard checked in the system Chromium"
	@echo "make lab    JupyterLab (the .py notebooks open as notebooks)"
	@echo "make bench  benchmarks/   make clean [DATASET=...]  (keeps downloaded/simulated raw data)"
	@echo "make env    .venv with exactly the pins of requirements/lock.txt;   make lock [UPGRADE=1]  regenerate it"

# ---------------------------------------------------------------------------------------- environment
# `make env` installs exactly the pins of $(LOCK) (every package, hash-checked), then the package itself
# without resolving anything; `make lock` regenerates the lock from pyproject.toml's ranges (keeping the
# pins that still satisfy them; UPGRADE=1 takes the newest allowed) and the Binder/conda files from it.
LOCK := requirements/lock.txt
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name sts --display-name "Python (sts)" >/dev/null
	$(JUPYTEXT_VIEWER) >/dev/null
	touch $(STAMP)

env: $(STAMP)

lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/pip-compile || $(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --allow-unsafe --generate-hashes --strip-extras --extra test,lab,browser,book,postgres,dashboard \
		--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) -o $(LOCK) pyproject.toml
	$(PY) tools/sync_pins.py --lock $(LOCK)

# ------------------------------------------------------------------------------------------- stages
# A failed recipe deletes the target it was making, so a half-made stage never looks done; for a stage that
# is the runner's job (--target: it removes the target only when its own failed run wrote it), never make's,
# which would also delete a target that another run rewrote while this one was refused by the folder's lock.
.DELETE_ON_ERROR:

# `make paper` runs JOBS pages at once where the stages allow it (the four trainings and the baseline; then
# saliency, comparison and new cells), each single-threaded in torch, so the numbers do not depend on JOBS or on
# the machine's cores; JOBS=1 runs one page at a time (Binder's 2 GB hold one CNN page, not two). One lock on the
# data folder is held for the whole run and shared by its pages. Page 10 (real rig recordings through the demo's
# models) belongs to the demo's paper.
JOBS ?= 2
paper: | $(STAMP)
	+@$(RUN) --locked $(DATASET) -p DATA_DIR $(DATA_DIR) -- $(MAKE) --no-print-directory -j$(JOBS) paper-pages
	@echo "paper done: figures and tables in $(F)/, executed notebooks in $(B)/"
	@$(PY) -m sts_utils.pages.runner --timings $(B)/timings.csv
paper-pages: data scalograms splits train-all baseline evaluate saliency comparison new-cells $(if $(filter demo,$(DATASET)),rig-recordings)

data: $(D)/cells.csv
scalograms: $(D)/scalograms/index.csv
splits: $(D)/splits.csv
train: $(D)/models/$(BACKBONE)/model.pt
train-all: $(MODEL_FILES)
baseline: $(D)/baseline/predictions.csv
evaluate: $(F)/results_table.csv
saliency: $(F)/deletion_table.csv
comparison: $(F)/comparison_table.csv
new-cells: $(F)/new_cells_summary.csv
rig-recordings: $(F)/rig_recordings_summary.csv

# Each stage depends on (1) its notebook, (2) the package files that notebook imports, derived from the
# imports into $(DEPS_MK), (3) a stamp of its resolved parameters, dated at the stage's last run when its
# parameters are the same and now when one changed (one runner start-up dates them all, once per make
# call; the `+` runs it under `make -n` too, so a dry run plans exactly what a real run would do), (4) its
# inputs. The deps file and the raw-file list are made only when a stage is requested (`make help` is instant).
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
DEPS_MK := $(BUILD_DIR)/deps.mk
STAGE_GOALS := paper-pages data scalograms splits train train-all baseline evaluate saliency comparison new-cells rig-recordings search
P := $(B)/.params
ifneq ($(filter $(STAGE_GOALS),$(MAKECMDGOALS)),)
$(DEPS_MK): $(NOTEBOOKS) $(wildcard sts_utils/*.py sts_utils/*/*.py) | $(STAMP)
	@mkdir -p $(@D)
	@$(PY) -m sts_utils.pages.runner --deps $(NOTEBOOKS) > $@.tmp && mv $@.tmp $@
-include $(DEPS_MK)
# raw files the project made or downloaded (a changed or corrupted one reruns acquisition, which re-verifies
# it); the stage's own records of them are left out. `raw/` (with a slash: a folder dataset's raw is a link to
# its recordings) and a folder dataset's registration and label file
RAW_FILES := $(wildcard $(D)/dataset.yaml $(D)/labels.csv) $(shell test -d $(D)/raw && find $(D)/raw/ -type f ! -name verified.json ! -name hashes.lock.json \
	! -name demo_files.json ! -name '*.part*' 2>/dev/null)
endif

# every stage's stamp (training: one per backbone of BACKBONES and BACKBONE), each checked with the parameters
# its stage's recipe passes; one grouped rule (GNU make 4.3 or later), so one start-up dates them all
STAMP_BACKBONES = $(sort $(BACKBONES) $(BACKBONE))
STAGE_STAMPS = $(foreach n,01_data_acquisition 02_scalograms 03_splitting 05_baseline 06_testing 07_saliency \
	08_comparison 09_new_cells 10_rig_recordings,$(P)/$(n).json) $(foreach b,$(STAMP_BACKBONES),$(P)/04_finetune_$(b).json)
STAMP_CHECKS = $(foreach n,01_data_acquisition 02_scalograms 03_splitting 05_baseline,--check $(P)/$(n).json notebooks/$(n).py) \
	$(foreach n,06_testing 07_saliency 08_comparison 09_new_cells 10_rig_recordings,--check $(P)/$(n).json notebooks/$(n).py 'BACKBONES=$(BACKBONES_VALUE)') \
	$(foreach b,$(STAMP_BACKBONES),--check $(P)/04_finetune_$(b).json notebooks/04_finetune.py BACKBONE=$(b))
$(STAGE_STAMPS) &: FORCE | $(STAMP)
	+@$(RUN) --stamps $(PARAMS) $(STAMP_CHECKS)
# a training stamp of another backbone (a model file asked for by name)
$(P)/04_finetune_%.json: FORCE | $(STAMP)
	+@$(RUN) --stamp $@ notebooks/04_finetune.py $(PARAMS) -p BACKBONE $*
# never deleted by .DELETE_ON_ERROR or an interrupt (a lost stamp reruns its stage), nor taken for
# intermediate files of the pattern rule
.PRECIOUS: $(STAGE_STAMPS) $(P)/04_finetune_%.json
FORCE:
.PHONY: FORCE

STAGE_TARGETS = $(D)/cells.csv $(D)/scalograms/index.csv $(D)/splits.csv $(D)/models/%/model.pt \
	$(D)/baseline/predictions.csv $(F)/results_table.csv $(F)/deletion_table.csv $(F)/comparison_table.csv \
	$(F)/new_cells_summary.csv $(F)/rig_recordings_summary.csv
.PRECIOUS: $(STAGE_TARGETS)

$(D)/cells.csv: notebooks/01_data_acquisition.py $(DEPS_01_data_acquisition) $(P)/01_data_acquisition.json $(RAW_FILES) | $(STAMP)
	$(RUN) $< $(B)/01_data_acquisition.ipynb $(PARAMS) --target $@

$(D)/scalograms/index.csv: notebooks/02_scalograms.py $(DEPS_02_scalograms) $(P)/02_scalograms.json $(D)/cells.csv | $(STAMP)
	$(RUN) $< $(B)/02_scalograms.ipynb $(PARAMS) --target $@

$(D)/splits.csv: notebooks/03_splitting.py $(DEPS_03_splitting) $(P)/03_splitting.json $(D)/scalograms/index.csv | $(STAMP)
	$(RUN) $< $(B)/03_splitting.ipynb $(PARAMS) --target $@

$(D)/models/%/model.pt: notebooks/04_finetune.py $(DEPS_04_finetune) $(P)/04_finetune_%.json $(D)/splits.csv | $(STAMP)
	$(RUN) $< $(B)/04_finetune_$*.ipynb $(PARAMS) -p BACKBONE $* --target $@

$(D)/baseline/predictions.csv: notebooks/05_baseline.py $(DEPS_05_baseline) $(P)/05_baseline.json $(D)/splits.csv | $(STAMP)
	$(RUN) $< $(B)/05_baseline.ipynb $(PARAMS) --target $@

# the results table has a row per backbone and one for the LightGBM baseline
$(F)/results_table.csv: notebooks/06_testing.py $(DEPS_06_testing) $(P)/06_testing.json $(MODEL_FILES) $(D)/baseline/predictions.csv | $(STAMP)
	$(RUN) $< $(B)/06_testing.ipynb $(PARAMS) $(BACKBONES_PARAM) --target $@

$(F)/deletion_table.csv: notebooks/07_saliency.py $(DEPS_07_saliency) $(P)/07_saliency.json $(F)/results_table.csv | $(STAMP)
	$(RUN) $< $(B)/07_saliency.ipynb $(PARAMS) $(BACKBONES_PARAM) --target $@

$(F)/comparison_table.csv: notebooks/08_comparison.py $(DEPS_08_comparison) $(P)/08_comparison.json $(F)/results_table.csv | $(STAMP)
	$(RUN) $< $(B)/08_comparison.ipynb $(PARAMS) $(BACKBONES_PARAM) --target $@

$(F)/new_cells_summary.csv: notebooks/09_new_cells.py $(DEPS_09_new_cells) $(P)/09_new_cells.json $(MODEL_FILES) $(D)/cells.csv $(F)/results_table.csv | $(STAMP)
	$(RUN) $< $(B)/09_new_cells.ipynb $(PARAMS) $(BACKBONES_PARAM) --target $@

# real recordings of other rigs (RIG_DIR, default ../shared/data/rig_recordings) through the bundles page 09 exported
$(F)/rig_recordings_summary.csv: notebooks/10_rig_recordings.py $(DEPS_10_rig_recordings) $(P)/10_rig_recordings.json $(F)/new_cells_summary.csv | $(STAMP)
	$(RUN) $< $(B)/10_rig_recordings.ipynb $(PARAMS) $(BACKBONES_PARAM) --target $@

# Model bundles (state dict, bundle.json, MODEL_CARD.md) and new recordings classified by them
#   make export DATASET=demo BACKBONE=resnet18|all [OUT=folder]
#   make predict MODELS='data/demo/bundles/resnet18 ...' INPUT=<file or folder> OUT=<folder> [FIGURES=1]
export: $(STAMP)
	STS_DATA_DIR=$(DATA_DIR) $(PY) -m sts_utils.stages.bundle --dataset $(DATASET) --backbone $(BACKBONE) --data-dir $(DATA_DIR) \
		--figures-dir $(FIGURES_DIR) $(if $(OUT),--out $(OUT))
predict: $(STAMP)
	$(if $(and $(MODELS),$(INPUT),$(OUT)),,$(error usage: make predict MODELS='<bundle folder> ...' INPUT=<file or folder of .nwb/.abf/.ibw> OUT=<folder> [FIGURES=1] [CELLS=<file,specimen_id csv>]))
	$(PY) -m sts_utils.stages.predict --models $(MODELS) --input $(INPUT) --out $(OUT) $(if $(FIGURES),--figures) \
		$(if $(DEVICE),--device $(DEVICE)) $(if $(N_JOBS),--n-jobs $(N_JOBS)) $(if $(CELLS),--cells $(CELLS))

# Hyperparameter search by N_WORKERS processes (one per visible GPU when there are GPUs) sharing one Optuna study
# in OPTUNA_STORAGE (a journal file path, or an RDB URL such as postgresql://...); the same command on other
# machines with the same storage adds workers. `make train` then refits from the finished study.
search: $(D)/splits.csv | $(STAMP)
	STS_DATA_DIR=$(DATA_DIR) $(PY) -m sts_utils.stages.search --dataset $(DATASET) --backbone $(BACKBONE) --data-dir $(DATA_DIR) \
		--seed $(SEED) $(if $(N_WORKERS),--n-workers $(N_WORKERS)) $(if $(TRIALS_PER_GPU),--trials-per-gpu $(TRIALS_PER_GPU)) \
		$(foreach v,$(PAGE_VARS),--param $(v)='$($(v))')

# ---------------------------------------------------------------------------------------------- tools
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not integration" -q

test-integration: $(STAMP)
	$(PY) -m pytest -m integration -q

# the reference tables of the tiny paper (tests/references/tiny_demo/) that tests/test_integration.py compares
# with: rewrite them on purpose, after a change that moves results (commit them with the change)
update-references: $(STAMP)
	$(PY) tools/references.py update

# JupyterLab opens Python files with jupytext's notebook view (a settings override in the venv's Lab app
# dir, as binder/postBuild does); the notebook headers keep an unedited save byte-identical
JUPYTEXT_VIEWER = $(VENV)/bin/jupytext-config --settings-file \
	"$$($(PY) -c 'from jupyterlab.commands import get_app_dir; print(get_app_dir())')/settings/overrides.json" \
	set-default-viewer python

lab: $(STAMP)
	@$(JUPYTEXT_VIEWER) >/dev/null
	$(PY) -m jupyter lab --ServerApp.root_dir=$(CURDIR)/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

.PHONY: book check-browser

# web book of the executed notebooks in $(B)/ -> $(B)/book/index.html (Sphinx + myst-nb, no re-execution; offline)
book: $(STAMP)
	$(PY) -m sts_utils.pages.book --dataset $(DATASET) --build-dir $(BUILD_DIR) --figures-dir $(FIGURES_DIR) --data-dir $(DATA_DIR)

# the book, JupyterLab and optuna-dashboard (on a small finished study) checked in the system Chromium
# (playwright-python; `apt-get install chromium`); CHECK_BROWSER_ARGS=--skip-dashboard (or --skip-lab, ...) leaves one out
check-browser: book
	$(PY) tools/check_browser.py --dataset $(DATASET) --build-dir $(BUILD_DIR) $(CHECK_BROWSER_ARGS)

# README's result tables from figures/<dataset>/results_table.csv (tests/test_report.py fails when they disagree)
readme: $(STAMP)
	$(PY) -m sts_utils.pages.report

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(B) $(F)
	test ! -d $(D) || find $(D) -mindepth 1 -maxdepth 1 ! -name raw -exec rm -rf {} +
	@echo "removed $(B), $(F) and the derived artifacts of $(D); downloaded/simulated $(D)/raw kept"

clean-all: clean
	rm -rf $(VENV)
