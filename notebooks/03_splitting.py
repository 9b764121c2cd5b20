# ---
# jupyter:
#   jupytext:
#     formats: py:percent
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
# mean ± sd results. Every model (CNNs and the LightGBM baseline) reads the same `splits.csv`.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
TEST_FRACTION = 0.2
N_REPEATS = 1

# %%
from IPython.display import display

from sts_utils import config, io, plots
from sts_utils.splits import make_splits

config.setup_logging()
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
result = make_splits(DATASET, DATA_DIR, test_fraction=TEST_FRACTION, n_repeats=N_REPEATS, seed=SEED)
if result["coverage"]:
    display(result["coverage"])
counts = result["counts"]
io.write_table(counts, FIG / "split_counts", caption=f"Cells per class and split (repeat 0){TAG}.")
display(counts)
plots.save(plots.counts_figure(counts, f"Cells per class and split{TAG}"), FIG / "split_counts.png")

# %%
splits = result["splits"]
assert not splits.groupby("repeat")["specimen_id"].apply(lambda s: s.duplicated().any()).any(), "a specimen is in two splits"
