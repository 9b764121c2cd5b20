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
# # 09 — Classify new cells
#
# The trained models leave the compendium as *bundles* (`data/<dataset>/bundles/<backbone>/`: the state dict,
# `bundle.json` with everything needed to rebuild the model and its scalograms, and a model card), and classify
# cells that no model saw, through the same sweep choice and transform as training
# (`python -m sts_utils.stages.predict`, used here through `sts_utils.stages.predict.predict_cells`).
#
# * `demo`: a fresh simulated cohort (another seed). Its balanced accuracy should agree with the test split's 95 % CI.
# * `teeter2018` (and other real datasets): the cells the 4-class mapping leaves out (label `Unsure`: Cre lines
#   Htr3a-Cre_NO152 and Nkx2-1-CreERT2 in teeter2018), and what the models call them.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
N_NEW_CELLS = 20
DEVICE = None
N_JOBS = 2

# %%
import pandas as pd

from sts_utils.pages import plots
from sts_utils.stages import acquisition, bundle, new_cells, predict
from sts_utils.core.config import require
from sts_utils.core.io import write_csv_atomic
from sts_utils.pages.page import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
bundles = bundle.export_all(DATASET, DATA_DIR, figures_root=FIGURES_DIR, backbones=BACKBONES, device=DEVICE)
missing = sorted(set(BACKBONES) - {b.name for b in bundles})
page.show(bundle.bundle_summary(bundles))
page.say(f"{len(bundles)} bundle(s) exported to `data/{DATASET}/bundles/`"
         + (f"; not trained yet (skipped): {', '.join(missing)} — run `make train BACKBONE=...`." if missing else "."))

# %% [markdown]
# ## Cells no model saw

# %%
new_dir = page.data_dir / "new_cells"
if DATASET == "demo":
    # generate_demo_cohort numbers its cells from 900000000 whatever the seed: these ids repeat the training
    # cells' ids, so the new cohort lives in its own folder and its ids are only meaningful there
    design = acquisition.generate_demo_cohort(new_dir / "raw", n_cells_per_class=N_NEW_CELLS, seed=SEED + 1000,
                                              batch_size=max(1, N_NEW_CELLS), n_jobs=N_JOBS)
    input_path, group = new_dir / "raw", "true_class"
    groups = design[["specimen_id", "label"]].rename(columns={"label": group})
    page.say(f"A new simulated cohort{page.tag}: {len(design)} cells ({N_NEW_CELLS} per class), seed {SEED + 1000} "
             f"instead of {SEED}, in `data/demo/new_cells/raw/`. Its specimen ids (from 900000000) repeat the training "
             "cohort's ids, but not its cells: the ids are only meaningful within each folder.")
else:
    input_path, unsure = new_cells.unlabelled_cells(DATASET, DATA_DIR, new_dir)
    group = "cre_line" if "cre_line" in unsure.columns else "label_source"
    groups = unsure[["specimen_id", group]]
    page.say(f"{len(unsure)} cells of `{DATASET}` that the 4-class mapping leaves out (label `Unsure`), by {group}: "
             + ", ".join(f"{k} {v}" for k, v in groups[group].value_counts().items()) + ".")
# a dataset whose every cell is labelled (a registered folder, say) leaves nothing to classify
predictions = predict.predict_cells(bundles, input_path, new_dir / "predictions", device=DEVICE, n_jobs=N_JOBS) \
    if len(groups) else new_cells.no_predictions()
predictions = predictions.merge(groups, on="specimen_id", how="left")
# the paper's table names each cell by its file inside the input folder, never by a path of this machine; the step
# windows and sweep QC of each cell stay in predictions.csv (the page's table keeps its published columns)
page_columns = ["source", *[c for c in predict.STEP_COLUMNS if c in predictions.columns]]
write_csv_atomic(predictions.drop(columns=page_columns), page.figures / "new_cells_predictions.csv")
n_skipped = int((predictions["status"] != "ok").sum())
page.show(predictions[[group, "specimen_id", "status", "reason", "ensemble_class", "ensemble_probability"]].head(12))
if n_skipped:
    page.show(predictions.loc[predictions["status"] != "ok", [group, "specimen_id", "reason"]])

# %% [markdown]
# ## Agreement with the test split (demo)
# Balanced accuracy of every model and of the ensemble (mean probability) on the new cells, with a 95 % bootstrap
# CI, beside the test split's from `results_table.csv`.

# %%
if DATASET == "demo":
    results = pd.read_csv(require(page.figures / "results_table.csv"))
    truth = design.set_index("specimen_id")["label"]
    if len(predictions) < len(design):
        page.say(f"{len(design) - len(predictions)} simulated cells never spiked and got no file (as in training).")
    agreement = new_cells.agreement_table(predictions, truth, results, seed=SEED)
    page.table(agreement, "new_cells_agreement", "Balanced accuracy on a new simulated cohort vs the test split")
    page.say(new_cells.agreement_reading(agreement, n_skipped, page.tag))
else:
    page.say("No labels for these cells: the section below shows what the models call them, not whether they are right.")

# %% [markdown]
# ## Predicted classes
# Share of each predicted class (ensemble) per group, and the ensemble's probability of the class it predicts.

# %%
summary = new_cells.class_distribution(predictions, group)
page.figure(plots.distribution_figure(predictions, group, f"New cells of {DATASET}: predicted class by {group}{page.tag}"),
            "new_cells.png")
page.table(summary, "new_cells_summary", f"Predicted classes of new cells of `{DATASET}` by {group} (ensemble of "
           f"{', '.join(b.name for b in bundles)}; confidence = its probability of the predicted class)")
page.say(new_cells.distribution_reading(summary, group, page.tag))
