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
# # 06 — Explaining the CNNs
#
# Attributions from captum on the test cells — the paper's gradient saliency, Integrated Gradients and
# Grad-CAM on each backbone's last convolutional block — on the scalogram's own axes (time after the
# stimulus onset in s, frequency in Hz, per sweep channel). Per class: the most confident correct test
# cell (the paper's example), and the mean map over correctly classified test cells. A deletion test
# measures whether the maps are faithful: removing the top-attributed pixels should hurt the model more
# than removing random ones.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
METHODS = ["saliency", "integrated_gradients", "gradcam"]
IG_STEPS = 32
MAX_TEST_CELLS = 200     # cells used for class means and the deletion test
DEVICE = None

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from sts_utils import config, io, plots, saliency
from sts_utils.models import get_device, load_checkpoint
from sts_utils.scalograms import ScalogramStore

config.setup_logging()
config.seed_everything(SEED)
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
DDIR = config.dataset_dir(DATASET, DATA_DIR)
store = ScalogramStore.load(DATASET, DATA_DIR)
predictions = pd.read_csv(DDIR / "predictions.csv")
stim_end_s = float(store.times_s[-1] - store.params["params"]["post_s"])
device = get_device(DEVICE)
BACKBONES = [b for b in BACKBONES if (DDIR / "models" / b / "model.pt").exists()]

# %%
maps, curves, readings = {}, [], []
for backbone in BACKBONES:
    model, cfg = load_checkpoint(DDIR / "models" / backbone, device)
    pred = predictions[(predictions.model == backbone) & (predictions.repeat == 0)].sort_values("specimen_id")
    pred = pred.merge(store.index[["specimen_id", "row"]], on="specimen_id").head(MAX_TEST_CELLS)
    x = np.asarray(store.images[pred["row"].to_numpy()], dtype=np.float32)
    y = np.array([config.CLASSES.index(c) for c in pred["true"]])
    correct = (pred["true"] == pred["pred"]).to_numpy()
    examples = saliency.example_cells(pred)
    random_curve = None  # deleting random pixels does not depend on the method: computed once per backbone
    for method in METHODS:
        attr = saliency.attribute(model, x, y, method, ig_steps=IG_STEPS)
        means = saliency.class_mean_maps(attr, list(pred["true"]), correct)
        ex = {c: attr[pred["specimen_id"].to_numpy() == sid][0] for c, sid in examples.items()}
        maps[(backbone, method)] = {"mean": means, "example": ex, "example_ids": examples}
        curve = saliency.deletion_curve(model, x, y, attr, seed=SEED, random_curve=random_curve)
        random_curve = curve[curve.deleted == "random"]
        curve = curve.assign(backbone=backbone, method=method)
        curves.append(curve)
        for c, m in means.items():
            readings.append({"backbone": backbone, "method": method, "class": c, **saliency.describe_map(m, store.freqs_hz, store.times_s, stim_end_s)})

# %% [markdown]
# ## The paper's figure: one example cell per class
# Scalogram of the first channel (rheobase + 40 pA for voltage data) in grey, the gradient saliency
# (max over channels) in colour.

# %%
classes = [c for c in config.CLASSES if any(c in maps[(b, "saliency")]["example"] for b in BACKBONES)]
fig, axes = plt.subplots(len(BACKBONES), len(classes), figsize=(3.3 * len(classes), 2.4 * len(BACKBONES)), squeeze=False)
for i, b in enumerate(BACKBONES):
    entry = maps[(b, "saliency")]
    for j, c in enumerate(classes):
        if c in entry["example"]:
            sid = entry["example_ids"][c]
            saliency.overlay(axes[i, j], store.get(sid)[0], np.abs(entry["example"][c]).max(axis=0), store.freqs_hz, store.times_s,
                             f"{b}: {c} (cell {sid})")
for ax in axes[-1]:
    ax.set_xlabel("time from onset (s)")
for ax in axes[:, 0]:
    ax.set_ylabel("Hz")
fig.suptitle(f"Gradient saliency on the most confident correct test cell per class{TAG}", fontsize=10)
fig.tight_layout()
plots.save(fig, FIG / "saliency_examples.png")

# %% [markdown]
# ## Class-mean maps for every method and backbone
# Rows: backbone × method; columns: classes. Each map is the mean over correctly classified test cells
# of the normalised attribution, summed over the two sweep channels.

# %%
rows = [(b, m) for b in BACKBONES for m in METHODS]
fig, axes = plt.subplots(len(rows), len(config.CLASSES), figsize=(3.2 * len(config.CLASSES), 1.9 * len(rows)), squeeze=False)
for i, (b, m) in enumerate(rows):
    for j, c in enumerate(config.CLASSES):
        ax = axes[i, j]
        mean = maps[(b, m)]["mean"].get(c)
        if mean is None:
            ax.set_axis_off()
            continue
        img = np.asarray(store.images[store.index[store.index.label == c].row.to_numpy()], dtype=np.float32).mean(axis=0)[0]
        saliency.overlay(ax, img, mean.sum(axis=0), store.freqs_hz, store.times_s, f"{b} / {m}: {c}")
        ax.tick_params(labelsize=6)
fig.suptitle(f"Class-mean attributions{TAG}", fontsize=10)
fig.tight_layout()
plots.save(fig, FIG / "saliency_grid.png")
# per-channel (per-sweep) maps of the paper's method for the first backbone
fig, axes = plt.subplots(2, len(config.CLASSES), figsize=(3.2 * len(config.CLASSES), 4.2), squeeze=False)
for j, c in enumerate(config.CLASSES):
    mean = maps[(BACKBONES[0], "saliency")]["mean"].get(c)
    for ch in range(2):
        if mean is not None:
            plots.scalogram_axes(axes[ch, j], mean[ch], store.freqs_hz, store.times_s, f"{c}: channel {ch}", cmap="inferno")
fig.suptitle(f"{BACKBONES[0]} saliency per sweep channel{TAG}", fontsize=10)
fig.tight_layout()
plots.save(fig, FIG / "saliency_per_channel.png")

# %% [markdown]
# ## Faithfulness: deletion test
# True-class probability after setting the top-k % attributed pixels to zero power, against the same
# number of random pixels. The area under each curve (lower = the map found what the model uses) is in
# `deletion_table.csv`.

# %%
curves = pd.concat(curves, ignore_index=True)
areas = saliency.deletion_areas(curves)
table = curves.merge(areas, on=["backbone", "method", "deleted"])
io.write_csv_atomic(table, FIG / "deletion_table.csv")
io.write_table(areas.pivot_table(index=["backbone", "method"], columns="deleted", values="area_p_true").reset_index(),
               FIG / "deletion_areas", caption=f"Area under the deletion curve of the true-class probability{TAG}.")
fig, axes = plt.subplots(1, len(BACKBONES), figsize=(3.6 * len(BACKBONES), 3), squeeze=False, sharey=True)
for ax, b in zip(axes[0], BACKBONES):
    for k, m in enumerate(METHODS):
        g = curves[(curves.backbone == b) & (curves.method == m) & (curves.deleted == "attribution")]
        ax.plot(g.fraction, g.p_true, "-o", ms=3, color=f"C{k}", label=f"top-attributed: {m}")
    g = curves[(curves.backbone == b) & (curves.method == METHODS[0]) & (curves.deleted == "random")]
    ax.plot(g.fraction, g.p_true, ":", color="grey", label="random pixels")
    ax.set_title(b, fontsize=9)
    ax.set_xlabel("fraction of pixels deleted")
axes[0, 0].set_ylabel("mean true-class probability")
axes[0, -1].legend(fontsize=6)
fig.suptitle(f"Deletion curves{TAG}", fontsize=10)
fig.tight_layout()
plots.save(fig, FIG / "saliency_deletion.png")
display(areas.pivot_table(index=["backbone", "method"], columns="deleted", values="area_p_true"))

# %% [markdown]
# ## Where the evidence lies, per class
# Computed from the class-mean maps of the paper's method (gradient saliency), averaged over backbones.

# %%
readings = pd.DataFrame(readings)
io.write_table(readings, FIG / "saliency_readout", caption=f"Where the attribution mass lies{TAG}.")
sal = readings[readings.method == "saliency"].groupby("class").mean(numeric_only=True)
text = []
for c, r in sal.iterrows():
    text.append(f"- **{c}**: half the saliency lies below {r.median_freq_hz:.0f} Hz and before {r.median_time_s:.2f} s after onset; "
                f"{r.share_first_100ms:.0%} in the first 100 ms of the step, {r.share_after_step:.0%} after it, "
                f"{r.share_above_100hz:.0%} above 100 Hz, {r.share_channel0:.0%} on channel 0.")
display(Markdown("\n".join(text)))
