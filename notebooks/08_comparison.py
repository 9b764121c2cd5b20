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
# # 08 — Fair comparisons: does STS beat features on the same input?
#
# The results table (notebook 06) compares CNNs on scalograms with LightGBM on features that may come from
# another protocol (teeter2018's long-square table). Here every comparison is on the same input and the same
# test cells: a **same-input baseline** (Elephant spike-train statistics of the very spike trains the CNN
# sees; ipfx features of the same recordings for voltage data), a **fusion** of the best CNN with those
# features (stacked on out-of-fold probabilities, no test leakage), **paired tests** of every model against
# the same-input baseline and the best model, and a **learning curve**. `sts_utils.stages.comparison` says where
# every number comes from.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
N_ITER = 30              # LightGBM search trials of the same-input baseline
FUSION_FOLDS = 2         # inner folds of the CNN's out-of-fold probabilities and of the stacking
N_RESAMPLES = 10000      # paired permutation test
DEVICE = None

# %%
from sts_utils.stages import comparison
from sts_utils.pages import plots
from sts_utils.pages.page import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
result = comparison.run_comparison(DATASET, BACKBONES, DATA_DIR, n_iter=N_ITER, fusion_folds=FUSION_FOLDS, seed=SEED,
                                   n_resamples=N_RESAMPLES, device=DEVICE)
page.say(f"Same-input features: {result.features_description} ({result.extra['n_features']} features). "
         f"Best CNN: **{result.best_cnn}**.")

# %% [markdown]
# ## One table, the same test cells

# %%
page.table(result.summary, "comparison_table", f"Every model on the same test cells of `{DATASET}`, with the same-input "
           "baseline and the fusion")

# %% [markdown]
# ## Paired differences
# Balanced accuracy of each model minus the reference's, on the same cells; p from a paired permutation
# test over cells (and, with several repeats, the corrected resampled t-test over them).

# %%
page.table(result.paired, "comparison_paired", "Paired comparisons (model − reference)")
page.figure(plots.paired_differences_figure(result.paired, f"Paired comparisons on {DATASET}{page.tag}"),
            "comparison_paired.png")

# %% [markdown]
# ## Learning curve
# The best CNN and the same-input feature model trained on nested stratified subsets of the training cells
# (on all of them the CNN is the model of notebook 04 itself, scored on the same test cells: no refit).

# %%
page.table(result.learning_curve, "learning_curve", "Balanced accuracy against training cells")
page.figure(plots.learning_curve_figure(result.learning_curve, f"Learning curves on {DATASET}{page.tag}"),
            "learning_curve.png")
page.say(comparison.comparison_reading(result))
