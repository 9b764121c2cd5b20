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
# # 06 — Testing
#
# Every trained backbone predicts the test cells of the split, and the LightGBM baseline's predictions
# (notebook 05) join them. Balanced accuracy with a 95 % bootstrap CI, accuracy, per-class precision /
# recall / F1, confusion matrices, and the results table `figures/<dataset>/results_table.{csv,md}`.
# With repeated splits the table also gives mean ± sd. The last section checks what the results could
# be leaning on (source, protocol version, labels).

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
N_BOOT = 1000
DEVICE = None

# %%
import pandas as pd

from sts_utils.stages import audit, evaluation
from sts_utils.compute import metrics
from sts_utils.pages import plots
from sts_utils.core.config import CLASSES
from sts_utils.pages.page import open_page
from sts_utils.data.tables import read_cells

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
predictions, info, missing = evaluation.collect_predictions(DATASET, BACKBONES, DATA_DIR, device=DEVICE)
evaluation.write_predictions(DATASET, predictions, DATA_DIR)
if missing:
    page.say(f"> Not trained yet (skipped): {', '.join(missing)} — run `make train BACKBONE=...`.")

# %% [markdown]
# ## Results table

# %%
table = evaluation.results_table(predictions, info, seed=SEED, n_boot=N_BOOT)
evaluation.write_results_table(DATASET, table, FIGURES_DIR, n_boot=N_BOOT)
page.show(table[["model", "balanced_accuracy", "ci_low", "ci_high", "bacc_mean_over_repeats", "bacc_sd_over_repeats",
                 "scored_on", *[f"recall_{c}" for c in CLASSES], "weights", "image_size"]])
best = table.sort_values("balanced_accuracy", ascending=False).iloc[0]
page.say(f"Best on `{DATASET}`{page.tag}: **{best.model}**, balanced accuracy {best.balanced_accuracy:.3f} "
         f"(95 % CI {best.ci_low:.3f}–{best.ci_high:.3f}, {int(best.test_cells)} test cells, {best.scored_on}"
         + (f"; {best.bacc_mean_over_repeats:.3f} ± {best.bacc_sd_over_repeats:.3f} over {best.n_repeats} repeats"
            if best.n_repeats > 1 else "") + "); "
         + "; ".join(f"{r.model} {r.balanced_accuracy:.3f}" for r in table.itertuples() if r.model != best.model) + ".")

# %% [markdown]
# ## Confusion matrices
# Rows: true class (normalised per row), annotated with counts; on the test cells the results table
# scores (k folds pooled, every cell once; else repeat 0).

# %%
models = list(predictions["model"].unique())
first = pd.concat([metrics.headline_predictions(g)[0] for _, g in predictions.groupby("model", sort=False)])
scored_on = metrics.headline_predictions(predictions[predictions.model == models[0]])[1]
titles = {m: f"{m}: bal. acc. {metrics.balanced_accuracy(first[first.model == m]['true'], first[first.model == m]['pred']):.2f}"
          for m in models}
for m in models:
    p = first[first.model == m]
    plots.save(plots.confusion_figure(p["true"], p["pred"], f"{m} on {DATASET}{page.tag}"), page.figures / f"confusion_{m}.png")
page.figure(plots.confusion_panel_figure(first, titles, f"Test confusion matrices on {DATASET}{page.tag} ({scored_on})"),
            "confusion_panel.png")

# %% [markdown]
# ## Per class

# %%
per_class = pd.concat([metrics.per_class_report(first[first.model == m]["true"], first[first.model == m]["pred"]).assign(model=m)
                       for m in models], ignore_index=True)
page.table(per_class, "per_class_report", f"Per-class precision, recall, F1 (test, {scored_on})",
           columns=["model", "class", "precision", "recall", "f1", "support"])

# %% [markdown]
# ## What could the results lean on?
# Balanced accuracy per source dataset and per protocol version (where the data have them), with
# counts; the leakage probe and label-quality checks of `sts_utils.stages.audit`.

# %%
cells = read_cells(page.data_dir / "cells.csv")
groups = audit.group_table(predictions, cells)
if len(groups):
    page.table(groups, "results_by_group", "Balanced accuracy per group (test, repeat 0)")
audit_out = audit.run_audit(DATASET, DATA_DIR, predictions, seed=SEED)
page.table(audit_out["table"], "audit_table", "Confound and label-quality audit")
page.figure(plots.audit_figure(audit_out["table"], DATASET), "audit.png")
page.say(audit_out["reading"])
