# STS compendium: every figure and table from the notebooks, executed with papermill.
#
#   make paper                      # the whole paper on DATASET (default: demo, simulated), 2 pages at a time
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
	@echo "make paper [DATASET=demo|teeter2018|patchseq|celltypes|allen|<folder dataset>] [JOBS=auto|1|2]  notebooks 01-09 (demo: and 10) -> figures/<dataset>/"
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
# the machine's cores. JOBS=auto: 2 where 2 CPUs and 4 GiB are there, else 1 (two CNN pages in Binder's 2 GB were
# killed for memory). One lock on the data folder is held for the whole run and shared by its pages. Page 10
# (real rig recordings through the demo's models) belongs to the demo's paper.
JOBS ?= auto
paper: | $(STAMP)
	+@$(RUN) --locked $(DATASET) -p DATA_DIR $(DATA_DIR) -- $(MAKE) --no-print-directory \
		-j$(if $(filter auto,$(JOBS)),$$($(PY) -m sts_utils.pages.runner --default-jobs),$(JOBS)) paper-pages
	@echo "paper done: figures and tables in $(F)/, executed notebooks in $(B)/"
	@$(PY) -m sts_utils.pages.runner --timings $(B)/timings.csv
paper-pages: data scalograms splits train-all baseline evaluate saliency comparison new-cells $(if $(filter demo,$(DATASET)),rig-recordings)

train: $(D)/models/$(BACKBONE)/model.pt
train-all: $(MODEL_FILES)

# Each stage depends on (1) its notebook, (2) the package files that notebook imports, derived from the
# imports into $(DEPS_MK), (3) a stamp of its resolved parameters, dated at the stage's last run when its
# parameters are the same and now when one changed (one runner start-up dates them all, once per make
# call; the `+` runs it under `make -n` too, so a dry run plans exactly what a real run would do), (4) its
# inputs. The deps file and the raw-file list are made only when a stage is requested (`make help` is instant).
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
# a stage: its goal, and the page run that makes its target (every page gets BACKBONES; one that does not
# declare it ignores it, as it ignores any parameter it does not declare)
define stage_rule
$(1): $(3)
STAGE_PAGES += $(2)
STAGE_TARGETS += $(3)
$(3): notebooks/$(2).py $$(DEPS_$(2)) $(P)/$(2).json $(4) | $(STAMP)
	$$(RUN) $$< $(B)/$(2).ipynb $$(PARAMS) $$(BACKBONES_PARAM) --target $$@
endef
stage = $(eval $(call stage_rule,$(strip $(1)),$(strip $(2)),$(strip $(3)),$(strip $(4))))
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

# The stages: make goal, page (notebooks/<page>.py), the artifact that marks it done, and its inputs besides the
# page, its package files and its parameter stamp. One rule per row (stage_rule below); training is the pattern
# rule after the table, one run per backbone.
#            goal            page                 target                           inputs
$(call stage,data,           01_data_acquisition, $(D)/cells.csv,                  $(RAW_FILES))
$(call stage,scalograms,     02_scalograms,       $(D)/scalograms/index.csv,       $(D)/cells.csv)
$(call stage,splits,         03_splitting,        $(D)/splits.csv,                 $(D)/scalograms/index.csv)
$(call stage,baseline,       05_baseline,         $(D)/baseline/predictions.csv,   $(D)/splits.csv)
$(call stage,evaluate,       06_testing,          $(F)/results_table.csv,          $(MODEL_FILES) $(D)/baseline/predictions.csv)
$(call stage,saliency,       07_saliency,         $(F)/deletion_table.csv,         $(F)/results_table.csv)
$(call stage,comparison,     08_comparison,       $(F)/comparison_table.csv,       $(F)/results_table.csv)
$(call stage,new-cells,      09_new_cells,        $(F)/new_cells_summary.csv,      $(MODEL_FILES) $(D)/cells.csv $(F)/results_table.csv)
$(call stage,rig-recordings, 10_rig_recordings,   $(F)/rig_recordings_summary.csv, $(F)/new_cells_summary.csv)

$(D)/models/%/model.pt: notebooks/04_finetune.py $(DEPS_04_finetune) $(P)/04_finetune_%.json $(D)/splits.csv | $(STAMP)
	$(RUN) $< $(B)/04_finetune_$*.ipynb $(PARAMS) -p BACKBONE $* --target $@

# Every stage's stamp (training: one per backbone of BACKBONES and BACKBONE) is dated by one grouped rule
# (GNU make 4.3 or later), so one runner start-up checks them all, each with the parameters its recipe passes.
STAMP_BACKBONES = $(sort $(BACKBONES) $(BACKBONE))
STAGE_STAMPS = $(foreach n,$(STAGE_PAGES),$(P)/$(n).json) $(foreach b,$(STAMP_BACKBONES),$(P)/04_finetune_$(b).json)
STAMP_CHECKS = $(foreach n,$(STAGE_PAGES),--check $(P)/$(n).json notebooks/$(n).py 'BACKBONES=$(BACKBONES_VALUE)') \
	$(foreach b,$(STAMP_BACKBONES),--check $(P)/04_finetune_$(b).json notebooks/04_finetune.py BACKBONE=$(b))
$(STAGE_STAMPS) &: FORCE | $(STAMP)
	+@$(RUN) --stamps $(PARAMS) $(STAMP_CHECKS)
# a training stamp of another backbone (a model file asked for by name)
$(P)/04_finetune_%.json: FORCE | $(STAMP)
	+@$(RUN) --stamp $@ notebooks/04_finetune.py $(PARAMS) -p BACKBONE $*
# stamps and targets are never deleted by .DELETE_ON_ERROR or an interrupt (a lost stamp reruns its stage;
# a failed run removes its own target), nor taken for intermediate files of the pattern rule
.PRECIOUS: $(STAGE_STAMPS) $(P)/04_finetune_%.json $(STAGE_TARGETS) $(D)/models/%/model.pt
FORCE:
.PHONY: FORCE

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
