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
# # 10 — Real recordings from other rigs
#
# Real current-step recordings as labs save them (`../shared/data/rig_recordings/`: Igor waves of rat L5
# pyramidal cells, Axon ABF files, NWB 2 of other writers; its README says what each set is) go through what a
# training cell went through (`sts_utils.stages.predict`: channels by units, the step from the recorded current, the
# same sweep choice and transform) and the bundles of notebook 09 classify them. One cell per set is shown, the
# QC counts per set, and every readable cell's class probabilities.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
RIG_DIR = None
DEVICE = None
N_JOBS = 2

# %%
from sts_utils.pages import plots
from sts_utils.stages import rig_recordings
from sts_utils.core.config import CLASSES, require
from sts_utils.pages.page import open_page

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
folder = rig_recordings.rig_dir(RIG_DIR)
present = folder.is_dir()
if present:
    bundles = [require(page.data_dir / "bundles" / b) for b in BACKBONES]
    table = rig_recordings.classify(bundles, folder, page.data_dir / "rig_recordings", device=DEVICE, n_jobs=N_JOBS)
    summary = rig_recordings.set_summary(table)
    page.say(f"{len(table)} recordings in {len(summary)} sets of `{rig_recordings.shown_path(folder)}`, classified by "
             f"{', '.join(b.name for b in bundles)} (trained on `{DATASET}`{page.tag}).")
else:
    summary = rig_recordings.absent_summary(folder)
    page.say(f"**The real recordings are not on this machine** (no `{rig_recordings.shown_path(folder)}`). They come from "
             f"{rig_recordings.ORIGIN}; put the folder there (or pass `RIG_DIR=`) and rerun `make rig-recordings`.")

# %% [markdown]
# ## One cell per set
# The two sweeps the selection chose (the step window it read from the current shaded) and their scalogram.

# %%
if present:
    page.figure(plots.rig_examples_figure(rig_recordings.examples(table, bundles, folder),
                                          f"Real recordings through the {DATASET} models{page.tag}"), "rig_recordings.png")

# %% [markdown]
# ## QC and predicted classes per set

# %%
page.table(summary, "rig_recordings_summary", f"Real rig recordings per set: cells read, classified and skipped, "
           f"sweeps ok, predicted classes and mean ensemble probabilities (models trained on `{DATASET}`)")
if present:
    cols = ["set", "cell", "known_type", "status", "reason", "ensemble_class", "ensemble_probability",
            *[f"ensemble_p_{c}" for c in CLASSES], "sweeps_used", "rheobase_note"]
    page.table(table[[c for c in cols if c in table.columns]], "rig_recordings_cells",
               "Every real recording: its class probabilities (ensemble) or why it was skipped")

# %% [markdown]
# ## Reading

# %%
if present:
    page.say(rig_recordings.reading(table, DATASET))
