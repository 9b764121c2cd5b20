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
# cells that have a scalogram, `TEST_FRACTION` of them for testing, optionally `N_REPEATS` times for
# mean ± sd results; or, with `SPLIT_MODE = "kfold"`, `N_REPEATS` stratified folds in which every cell is
# tested once. Every model (CNNs and the LightGBM baseline) reads the same `splits.csv`.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
TEST_FRACTION = 0.2
N_REPEATS = 1            # repeated splits, or folds with SPLIT_MODE "kfold" (e.g. 5)
SPLIT_MODE = "holdout"   # "holdout" or "kfold"

# %%
from sts_utils import plots, splits
from sts_utils.pages import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
result = splits.make_splits(DATASET, DATA_DIR, test_fraction=TEST_FRACTION, n_repeats=N_REPEATS, seed=SEED, mode=SPLIT_MODE)
if result["coverage"]:
    page.show(splits.coverage_table(result["coverage"]))
counts = result["counts"]
page.table(counts, "split_counts", "Cells per class and split (repeat 0)")
page.figure(plots.counts_figure(counts, f"Cells per class and split{page.tag}"), "split_counts.png")
page.say(f"{int(counts['train'].sum())} training and {int(counts['test'].sum())} test cells; "
         f"{result['splits']['repeat'].nunique()} repeat(s), no cell in both splits of a repeat.")
