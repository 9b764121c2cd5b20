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
# # 07 — The LightGBM baseline on electrophysiology features
#
# The paper compares STS with LightGBM on hand-crafted long-square features. Here the features are
# computed with ipfx from the same sweeps the CNNs see (onset-aligned), or read from published tables
# (`FEATURE_TABLES`); the model is searched (Optuna TPE over the paper's space, 3-fold stratified CV
# balanced accuracy), refit, tested on the same split as the CNNs, and explained with LightGBM's own
# SHAP values.

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
import json

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from sts_utils import baseline, config, evaluation, features, io, plots
from sts_utils.recordings import read_paper_split
from sts_utils.splits import load_split

config.setup_logging()
config.seed_everything(SEED)
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
DDIR = config.dataset_dir(DATASET, DATA_DIR)
if FEATURE_TABLES is None and DATASET == "teeter2018":
    FEATURE_TABLES = [str(config.raw_dir(DATASET, DATA_DIR) / "GLIF_clustering" / "features_7_27_17.csv")]
if FEATURE_TABLES:
    table = features.load_feature_tables(FEATURE_TABLES, FEATURE_SET)
    io.write_csv_atomic(table, DDIR / "features.csv")
    feature_source = "published tables: " + ", ".join(str(p) for p in FEATURE_TABLES)
else:
    computed, qc = features.compute_features(DATASET, DATA_DIR, n_jobs=N_JOBS, seed=SEED)
    table = features.select_features([computed], FEATURE_SET)
    feature_source = "ipfx LongSquareAnalysis on the recordings"
    display(qc["status"].str.split(":").str[0].value_counts().rename("cells").to_frame())
print(f"{table.shape[1] - 1} features for {len(table)} cells ({feature_source}, FEATURE_SET={FEATURE_SET})")

# %%
if SPLIT_FILES:
    split = read_paper_split(*SPLIT_FILES).merge(pd.read_csv(DDIR / "cells.csv")[["specimen_id", "label"]], on="specimen_id")
    split["repeat"] = 0
else:
    split = pd.concat([load_split(DATASET, DATA_DIR, r) for r in sorted(pd.read_csv(DDIR / "splits.csv").repeat.unique())])
split = split[split.label.isin(config.CLASSES)]
preds, models, skipped = [], {}, {}
for repeat, sp in split.groupby("repeat"):
    Xtr, ytr, _, sk_tr = baseline.prepare_xy(table, sp[sp.split == "train"])
    Xte, yte, ids_te, sk_te = baseline.prepare_xy(table, sp[sp.split == "test"])
    skipped[int(repeat)] = {"train": sk_tr, "test": sk_te}
    model, best, trials = baseline.search_lightgbm(Xtr, ytr, n_iter=N_ITER, seed=SEED + int(repeat))
    proba = model.predict_proba(Xte[Xtr.columns])
    preds.append(evaluation.predictions_frame(ids_te, [config.CLASSES[i] for i in yte], proba, "lightgbm", int(repeat)))
    models[int(repeat)] = (model, best, trials, Xtr, Xte)
predictions = pd.concat(preds, ignore_index=True)
model, best, trials, Xtr, Xte = models[0]
io.write_csv_atomic(predictions, DDIR / "baseline" / "predictions.csv")
io.write_csv_atomic(trials, DDIR / "baseline" / "trials.csv")
with io.atomic_path(DDIR / "baseline" / "model.txt") as tmp:
    model.booster_.save_model(str(tmp))  # LightGBM's own text format, no pickle
info = {"weights": "n/a", "image_size": "n/a", "training_cells": int(len(Xtr)),
        "note": f"LightGBM on {Xtr.shape[1]} features ({FEATURE_SET}; {feature_source.split(':')[0]})"}
io.write_text_atomic(DDIR / "baseline" / "config.json", json.dumps({
    "dataset": DATASET, "seed": SEED, "feature_set": FEATURE_SET, "feature_source": feature_source, "n_iter": N_ITER,
    "best_params": best, "features": list(Xtr.columns), "skipped": skipped, "table_info": info}, indent=2, default=str))
display(skipped)

# %% [markdown]
# ## Test results
# Same split and the same evaluation code as notebook 05; this row joins `results_table`.

# %%
res = evaluation.results_table(predictions, {"lightgbm": info}, seed=SEED)
io.write_table(res, FIG / "baseline_results", caption=f"LightGBM baseline on `{DATASET}`{TAG}.")
display(res)
p0 = predictions[predictions.repeat == 0]
plots.save(evaluation.confusion_figure(p0["true"], p0["pred"], f"LightGBM on {DATASET}{TAG}"), FIG / "baseline_confusion.png")

# %% [markdown]
# ## Explanations: SHAP values from LightGBM
# Per class, the features whose contributions move the prediction most (test cells, repeat 0).

# %%
contrib = baseline.shap_contributions(model, Xte[Xtr.columns])
importance = baseline.importance_table(contrib, list(Xtr.columns))
io.write_table(importance, FIG / "baseline_importance", caption=f"Mean |SHAP| per feature and class{TAG}.")
display(importance.head(10))
for k, c in enumerate(config.CLASSES):
    fig = baseline.shap_summary_figure(contrib, Xte[Xtr.columns], k, title=f"{c}: top features{TAG}")
    plots.save(fig, FIG / f"baseline_shap_{c.replace('/', '-')}.png")
lines = []
for c in config.CLASSES:
    top = importance.sort_values(f"mean_abs_shap_{c}", ascending=False).head(3)["feature"].tolist()
    k = config.CLASSES.index(c)
    direction = []
    for f in top:
        j = list(Xtr.columns).index(f)
        r = pd.Series(contrib[:, j, k]).corr(pd.Series(Xte[f].to_numpy(dtype=float)), method="spearman")
        direction.append(f"{f} ({'higher' if r > 0 else 'lower'} values favour {c})" if np.isfinite(r) else f)
    lines.append(f"- **{c}**: " + "; ".join(direction))
display(Markdown("\n".join(lines)))
