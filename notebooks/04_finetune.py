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
# # 04 — Fine-tuning a backbone
#
# One ImageNet CNN (`BACKBONE`: resnet18, inception_v3, densenet121 or mobilenet_v2) with a 4-class
# head, fed with the two-channel scalograms (channel 0 copied as the third input channel, as in the
# paper), resized bilinearly and ImageNet-normalised. A Bayesian search (Optuna TPE) scored by inner
# stratified CV on the training split picks batch size, learning rate, decay, decay period, patience and
# dropout; the best setting is refit on the whole training split with early stopping on a validation
# part. The model is saved as a state dict with its `config.json`.
#
# `PROFILE="auto"` runs the paper configuration on real data when a GPU is present, and otherwise a
# small **demo configuration** (smaller images, few epochs and trials) so that all four backbones
# train in minutes on a laptop CPU. Every parameter set below (not `None`) overrides the profile.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONE = "resnet18"
PROFILE = "auto"         # "auto", "demo" or "paper"
PRETRAINED = "auto"      # "imagenet", "none" or "auto" (ImageNet when the file is cached, else random + warning)
FREEZE = "NONE"          # "NONE" or "FULL" (head only)
IMAGE_SIZE = None
EPOCHS = None
BATCH_SIZE = None
LR = None
LR_DECAY = 0.5
DECAY_PERIOD = 5
PATIENCE = None
DROPOUT = 0.0
CLASS_WEIGHTS = True
N_TRIALS = None
N_FOLDS = None
TRIAL_EPOCHS = None
DEVICE = None            # None: CUDA when available, else CPU

# %%
from IPython.display import Markdown, display

from sts_utils import config, io, plots
from sts_utils.models import get_device
from sts_utils.splits import n_repeats_of
from sts_utils.training import TrainConfig, resolve_profile, run_finetuning

config.setup_logging()
FIG = config.figures_dir(DATASET, FIGURES_DIR)
TAG = config.simulated_tag(DATASET)
run = resolve_profile(PROFILE, DATASET, BACKBONE, {
    "image_size": IMAGE_SIZE, "epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "patience": PATIENCE,
    "n_trials": N_TRIALS, "n_folds": N_FOLDS, "trial_epochs": TRIAL_EPOCHS})
display(Markdown(f"**{BACKBONE}** on `{DATASET}`{TAG}, profile `{run['profile']}`, device `{get_device(DEVICE)}`: {run}"))
base = TrainConfig(backbone=BACKBONE, image_size=run["image_size"], pretrained=PRETRAINED, freeze=FREEZE, dropout=DROPOUT,
                   batch_size=run["batch_size"], lr=run["lr"], lr_decay=LR_DECAY, decay_period=DECAY_PERIOD,
                   epochs=run["epochs"], patience=run["patience"], class_weights=CLASS_WEIGHTS, seed=SEED, device=DEVICE)

# %%
results = []
for repeat in range(n_repeats_of(DATASET, DATA_DIR)):
    config.seed_everything(SEED + repeat)
    results.append(run_finetuning(DATASET, BACKBONE, DATA_DIR, repeat=repeat, base=base, n_trials=run["n_trials"],
                                  n_folds=run["n_folds"], trial_epochs=run["trial_epochs"],
                                  extra_config={"profile": run["profile"]}))
first = results[0]
if first["config"]["model"]["warning"]:
    display(Markdown(f"> **Warning:** {first['config']['model']['warning']}"))

# %% [markdown]
# ## Search and training curves

# %%
if len(first["trials"]):
    display(first["trials"])
display(first["history"])
weights = first["config"]["model"]["weights"]
plots.save(plots.training_curves_figure(first["history"], f"{BACKBONE} ({weights} init, {run['profile']} profile){TAG}"),
           FIG / f"training_{BACKBONE}.png")
