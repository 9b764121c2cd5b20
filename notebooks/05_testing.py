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
# # 05 — Testing
#
# Every trained backbone predicts the test cells of the split; the LightGBM baseline's predictions
# (notebook 07) join when they exist. Balanced accuracy with a 95 % bootstrap CI, accuracy, per-class
# precision / recall / F1, confusion matrices, and the results table
# `figures/<dataset>/results_table.{csv,md}`. With repeated splits the table also gives mean ± sd.
# The last section checks what the results could be leaning on (source, protocol version, labels).

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
N_BOOT = 1000
DEVICE = None

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from sts_utils import config, evaluation, io, plots
from sts_utils.splits import n_repeats_of

config.setup_logging()
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
DDIR = config.dataset_dir(DATASET, DATA_DIR)
frames = []
trained = [b for b in BACKBONES if (DDIR / "models" / b / "model.pt").exists()]
missing = sorted(set(BACKBONES) - set(trained))
if missing:
    display(Markdown(f"> Not trained yet (skipped): {', '.join(missing)} — run `make train BACKBONE=...`."))
for backbone in trained:
    for repeat in range(n_repeats_of(DATASET, DATA_DIR)):
        pred, _ = evaluation.predict_test_split(DATASET, backbone, DATA_DIR, repeat=repeat, device=DEVICE)
        frames.append(pred)
info = evaluation.collect_model_info(DATASET, DATA_DIR)
baseline_pred = DDIR / "baseline" / "predictions.csv"
if baseline_pred.exists():
    frames.append(pd.read_csv(baseline_pred))
    info["lightgbm"] = json.loads((DDIR / "baseline" / "config.json").read_text())["table_info"]
predictions = pd.concat(frames, ignore_index=True)
io.write_csv_atomic(predictions, DDIR / "predictions.csv")

# %% [markdown]
# ## Results table

# %%
table = evaluation.results_table(predictions, info, seed=SEED, n_boot=N_BOOT)
evaluation.write_results_table(DATASET, table, FIGURES_DIR, n_boot=N_BOOT)
display(table)

# %% [markdown]
# ## Confusion matrices
# Rows: true class (normalised per row), annotated with counts; repeat 0.

# %%
models = list(predictions["model"].unique())
fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
for ax, m in zip(axes[0], models):
    p = predictions[(predictions.model == m) & (predictions.repeat == 0)]
    evaluation.confusion_figure(p["true"], p["pred"], f"{m}: bal. acc. {evaluation.balanced_accuracy(p['true'], p['pred']):.2f}", ax=ax)
    single = evaluation.confusion_figure(p["true"], p["pred"], f"{m} on {DATASET}{TAG}")
    plots.save(single, FIG / f"confusion_{m}.png")
fig.suptitle(f"Test confusion matrices on {DATASET}{TAG}", fontsize=10)
fig.tight_layout()
plots.save(fig, FIG / "confusion_panel.png")

# %% [markdown]
# ## Per class

# %%
reports = []
for m in models:
    p = predictions[(predictions.model == m) & (predictions.repeat == 0)]
    reports.append(evaluation.per_class_report(p["true"], p["pred"]).assign(model=m))
per_class = pd.concat(reports, ignore_index=True)
io.write_table(per_class, FIG / "per_class_report", caption=f"Per-class precision, recall, F1 (test, repeat 0){TAG}.")
display(per_class.pivot(index="class", columns="model", values="f1"))

# %% [markdown]
# ## What could the results lean on?
# Balanced accuracy per source dataset and per protocol version (where the data have them), with counts;
# the leakage probe and label-quality checks are in `sts_utils.audit`.

# %%
from sts_utils import audit

cells = pd.read_csv(DDIR / "cells.csv")
groups = audit.group_table(predictions, cells)
if len(groups):
    io.write_table(groups, FIG / "results_by_group", caption=f"Balanced accuracy per group (test, repeat 0){TAG}.")
    display(groups)
audit_out = audit.run_audit(DATASET, DATA_DIR, predictions, seed=SEED)
io.write_table(audit_out["table"], FIG / "audit_table", caption=f"Confound and label-quality audit{TAG}.")
display(audit_out["table"])
plots.save(audit_out["figure"], FIG / "audit.png")
display(Markdown(audit_out["reading"]))
