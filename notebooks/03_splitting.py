# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (sts)
#     language: python
#     name: sts
# ---

# %% [markdown]
# # 03 — Splitting
#
# The paper's split where the dataset has one (`allen`), otherwise a seeded stratified split of the
# cells that have a scalogram: with `SPLIT_MODE = "kfold"` (the default for real datasets), `N_REPEATS`
# stratified folds (5) in which every cell is tested once, so every result is a mean ± sd over folds;
# with `"holdout"` (the default for the simulated demo), `TEST_FRACTION` of the cells for testing,
# optionally `N_REPEATS` times. Every model (CNNs and the LightGBM baseline) reads the same `splits.csv`.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
TEST_FRACTION = 0.2
SPLIT_MODE = None        # None: "kfold" for real datasets, "holdout" for demo
N_REPEATS = None         # None: 5 folds for "kfold", 1 split for "holdout"

# %%
from sts_utils.pages import plots
from sts_utils.stages import splits
from sts_utils.pages.page import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
result = splits.make_splits(DATASET, DATA_DIR, test_fraction=TEST_FRACTION, n_repeats=N_REPEATS, seed=SEED, mode=SPLIT_MODE)
if result["coverage"]:
    page.show(splits.coverage_table(result["coverage"]))
counts = result["counts"]
page.table(counts, "split_counts", "Cells per class and split (repeat 0)")
page.figure(plots.counts_figure(counts, f"Cells per class and split{page.tag}"), "split_counts.png")
page.say(splits.split_reading(result))
