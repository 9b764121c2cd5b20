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
# # 07 — Explaining the CNNs
#
# Attributions from captum on the test cells — the paper's gradient saliency, Integrated Gradients and
# Grad-CAM on each backbone's last convolutional block — on the scalogram's own axes (time after the
# stimulus onset in s, frequency in Hz, per image channel). Per class, among the explained test cells
# (at most `MAX_TEST_CELLS`, the same number per class): the most confident correct one (the paper's
# example), and the mean map over the correctly classified ones. A deletion test
# measures whether the maps are faithful: removing the top-attributed pixels should hurt the model more
# than removing random ones.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
METHODS = ["saliency", "integrated_gradients", "gradcam"]
IG_STEPS = 16           # Integrated Gradients path steps
MAX_TEST_CELLS = 48      # test cells explained (an equal share per class): class means and the deletion test
DEVICE = None

# %%
import numpy as np

from sts_utils.core import io
from sts_utils.pages import plots
from sts_utils.stages import saliency, scalograms
from sts_utils.core.config import CLASSES
from sts_utils.pages.page import open_page
from sts_utils.data.store import ScalogramStore

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
store = ScalogramStore.load(DATASET, DATA_DIR)
result = saliency.explain_backbones(DATASET, BACKBONES, DATA_DIR, METHODS, IG_STEPS, MAX_TEST_CELLS, seed=SEED, device=DEVICE)
backbones = result.backbones

# %% [markdown]
# ## The paper's figure: one example cell per class
# Channel 0 of the scalogram in grey, the gradient saliency (max over channels) in colour.

# %%
panels = {(b, c): (sid, store.get(sid)[0], np.abs(result.maps[(b, "saliency")]["example"][c]).max(axis=0))
          for b in backbones for c, sid in result.maps[(b, "saliency")]["example_ids"].items()}
page.figure(plots.saliency_examples_figure(panels, backbones, store.freqs_hz, store.times_s,
                                           f"Gradient saliency on the most confident correct test cell per class{page.tag}"),
            "saliency_examples.png")

# %% [markdown]
# ## Class-mean maps for every method and backbone
# Rows: backbone × method; columns: classes. Each map is the mean over correctly classified test cells
# of the normalised attribution, summed over the two channels, drawn over the class-mean scalogram.
# Then the paper's method per channel for the first backbone.

# %%
means = {key: entry["mean"] for key, entry in result.maps.items()}
class_images = {c: img[0] for c, img in store.class_means(CLASSES).items()}
page.figure(plots.saliency_grid_figure(means, class_images, store.freqs_hz, store.times_s,
                                       f"Class-mean attributions{page.tag}"), "saliency_grid.png")
page.figure(plots.saliency_per_channel_figure(result.maps[(backbones[0], "saliency")]["mean"],
                                              scalograms.channel_names(DATASET, DATA_DIR), store.freqs_hz, store.times_s,
                                              f"{backbones[0]} saliency per image channel{page.tag}"),
            "saliency_per_channel.png")

# %% [markdown]
# ## Faithfulness: deletion test
# True-class probability after setting the top-k % attributed pixels to zero power, against the same
# number of random pixels. The area under each curve (lower = the map found what the model uses) is in
# `deletion_table.csv`.

# %%
areas = saliency.deletion_areas(result.curves)
table = result.curves.merge(areas, on=["backbone", "method", "deleted"])
io.write_csv_atomic(table, page.figures / "deletion_table.csv")
pivot = areas.pivot_table(index=["backbone", "method"], columns="deleted", values="area_p_true").reset_index()
page.table(pivot, "deletion_areas", "Area under the deletion curve of the true-class probability")
page.figure(plots.deletion_figure(result.curves, backbones, METHODS, f"Deletion curves{page.tag}"), "saliency_deletion.png")
faithful = pivot[pivot["attribution"] < pivot["random"]]
page.say(f"{len(faithful)} of {len(pivot)} maps (backbone × method) hurt the model more than random deletion: "
         + (", ".join(f"{r.backbone}/{r.method}" for r in faithful.itertuples()) or "none") + ".")

# %% [markdown]
# ## Where the evidence lies, per class
# Computed from the class-mean maps of the paper's method (gradient saliency), averaged over backbones.

# %%
page.table(result.readings, "saliency_readout", "Where the attribution mass lies")
page.say(saliency.saliency_reading(result.readings))
