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
# # 05 — The LightGBM baseline on electrophysiology features
#
# The paper compares STS with LightGBM on hand-crafted long-square features. Here the features are
# computed with ipfx from the same sweeps the CNNs see (onset-aligned), or read from published tables
# (`FEATURE_TABLES`; teeter2018 uses its long-square table, another protocol than the CNNs' input);
# the model is searched (Optuna TPE over the paper's space, 3-fold stratified CV balanced accuracy),
# refit, tested on the same split as the CNNs, and explained with LightGBM's own SHAP values.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
FEATURE_TABLES = None    # None: ipfx features from the recordings (teeter2018: its features_7_27_17.csv)
SPLIT_FILES = None       # None: splits.csv of notebook 03; or [train, test] files in the paper's format
FEATURE_SET = "all"      # "all" (onset-free intervals) or "paper" (the paper's 15 columns)
N_ITER = 30              # the paper used 50
N_JOBS = 2

# %%
from sts_utils.stages import baseline, evaluation
from sts_utils.pages import plots
from sts_utils.core.config import CLASSES
from sts_utils.pages.page import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
fit = baseline.run_baseline(DATASET, DATA_DIR, FEATURE_TABLES, SPLIT_FILES, FEATURE_SET, N_ITER, N_JOBS, seed=SEED)
page.say(f"{fit.X_train.shape[1]} features ({fit.feature_source}, `FEATURE_SET={FEATURE_SET}`) for "
         f"{len(fit.X_train)} training and {len(fit.X_test)} test cells; cells skipped per repeat: {fit.skipped}.")
if fit.qc is not None:
    page.show(fit.qc["status"].str.split(":").str[0].value_counts().rename_axis("ipfx").reset_index(name="cells"))

# %% [markdown]
# ## Test results
# Same split and the same evaluation code as notebook 06; this row joins `results_table`.

# %%
res = evaluation.results_table(fit.predictions, {"lightgbm": fit.table_info}, seed=SEED)
page.table(res, "baseline_results", f"LightGBM baseline on `{DATASET}`",
           columns=["model", "balanced_accuracy", "ci_low", "ci_high", "accuracy", *[f"recall_{c}" for c in CLASSES]])
p0 = fit.predictions[fit.predictions.repeat == fit.predictions.repeat.min()]
page.figure(plots.confusion_figure(p0["true"], p0["pred"], f"LightGBM on {DATASET}{page.tag}"), "baseline_confusion.png")

# %% [markdown]
# ## Explanations: SHAP values from LightGBM
# Per class, the features whose contributions move the prediction most (test cells, repeat 0).

# %%
contrib = baseline.shap_contributions(fit.model, fit.X_test)
importance = baseline.importance_table(contrib, list(fit.X_train.columns),
                                       [CLASSES[int(k)] for k in fit.model.classes_])
page.table(importance, "baseline_importance", "Mean |SHAP| per feature and class")
for k, c in enumerate(CLASSES):
    page.figure(plots.shap_summary_figure(contrib, fit.X_test, k, title=f"{c}: top features{page.tag}"),
                f"baseline_shap_{c.replace('/', '-')}.png")
page.say(baseline.shap_reading(contrib, fit.X_test, importance))
