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
# # 04 — Fine-tuning a backbone
#
# One ImageNet CNN (`BACKBONE`: resnet18, inception_v3, densenet121 or mobilenet_v2) with a 4-class
# head, fed with the two-channel scalograms (channel 0 copied as the third input channel, as in the
# paper), resized bilinearly and ImageNet-normalised. A Bayesian search (Optuna TPE) picks batch size,
# learning rate, decay, decay period, patience and dropout; the best setting is refit on the training
# split. The model is saved as a state dict with its `config.json`.
#
# `PROFILE` chooses the protocol: `paper` is the STS paper's (its search space, 50 trials, 3-fold CV
# with a held-out 20 % for early stopping, refit for the folds' mean epochs, 224/299 px, ImageNet
# weights, seed 42); `gpu_small` a smaller GPU search; `cpu_small` the CPU configuration of the
# committed demo figures (64/80 px, 8 epochs, 2 search trials of 1 epoch); `cpu_fixed` that of the real datasets'
# committed figures (the same sizes, fixed settings without a search, 12 epochs: 5 folds × 4 backbones
# within 45 minutes on 2 cores). `auto` is `paper` on real data when a GPU is present, `cpu_fixed` on
# real data without one, and `cpu_small` for demo. Every parameter set below (not `None`) overrides the profile.
# A search already run by `make search` (several workers, shared `OPTUNA_STORAGE`) is reused here.

# %% tags=["parameters"]
DATASET = "demo"
SEED = 0
DATA_DIR = None
FIGURES_DIR = None
BACKBONE = "resnet18"
PROFILE = "auto"         # "auto", "cpu_small", "cpu_fixed", "gpu_small" or "paper"
PRETRAINED = None        # None: the profile's (paper "imagenet", else "auto"); "imagenet", "none" or "auto"
FREEZE = None            # None: the profile's ("NONE"); "NONE" or "FULL" (head only)
IMAGE_SIZE = None
EPOCHS = None
BATCH_SIZE = None
LR = None
LR_DECAY = None          # None: the profile's (cpu_small 0.5); 0 means no decay
DECAY_PERIOD = None      # None: the profile's (cpu_small 5)
PATIENCE = None
DROPOUT = None           # None: the profile's (cpu_small 0.0)
CLASS_WEIGHTS = None     # None: the profile's (cpu_small True; paper False, plain cross-entropy)
N_TRIALS = None
N_FOLDS = None
TRIAL_EPOCHS = None
TRAIN_SEED = None        # None: the profile's seed (paper: 42), else SEED
PRUNER = None            # None: the profile's ("none"); "median" or "hyperband"
COMPILE = None           # None: no torch.compile; True compiles the model on CUDA
OPTUNA_STORAGE = None    # None: $OPTUNA_STORAGE, else the journal `make search` made for this study, if any
DEVICE = None            # None: CUDA when available, else CPU

# %%
from sts_utils.pages import plots
from sts_utils.data.models import get_device
from sts_utils.pages.page import open_page
from sts_utils.stages.splits import n_repeats_of
from sts_utils.stages.fit import TrainConfig
from sts_utils.stages.training import resolve_profile, run_finetuning

page = open_page(DATASET, SEED, DATA_DIR, FIGURES_DIR)
run = resolve_profile(PROFILE, DATASET, BACKBONE, {
    "image_size": IMAGE_SIZE, "epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "lr_decay": LR_DECAY,
    "decay_period": DECAY_PERIOD, "patience": PATIENCE, "dropout": DROPOUT, "class_weights": CLASS_WEIGHTS,
    "pretrained": PRETRAINED, "freeze": FREEZE, "n_trials": N_TRIALS, "n_folds": N_FOLDS,
    "trial_epochs": TRIAL_EPOCHS, "seed": TRAIN_SEED, "pruner": PRUNER, "compile": COMPILE, "device": DEVICE},
    default_seed=SEED)
base = TrainConfig.from_run(run, BACKBONE)
page.say(f"**{BACKBONE}** on `{DATASET}`{page.tag}: profile `{run['profile']}`, device `{get_device(DEVICE)}`, "
         f"{run['image_size']} px, "
         + (f"{run['n_trials']} search trials × {run['n_folds']} folds" if run["n_trials"] else "the profile's fixed settings (no search)")
         + f", at most {run['epochs']} epochs, on each of {n_repeats_of(DATASET, DATA_DIR)} split(s).")

# %%
results = [run_finetuning(DATASET, BACKBONE, DATA_DIR, repeat=repeat, base=base, settings=run, storage=OPTUNA_STORAGE)
           for repeat in range(n_repeats_of(DATASET, DATA_DIR))]
first = results[0]
if first["config"]["model"]["warning"]:
    page.say(f"> **Warning:** {first['config']['model']['warning']}")

# %% [markdown]
# ## Search and training curves

# %%
if len(first["trials"]):
    page.show(first["trials"])
weights = first["config"]["model"]["weights"]
page.figure(plots.training_curves_figure(first["history"], f"{BACKBONE} ({weights} init, {run['profile']} profile){page.tag}"),
            f"training_{BACKBONE}.png")
best = first["history"][first["history"]["best"]]
page.say(f"Refit: {len(first['history'])} epochs"
         + (f", best validation balanced accuracy {best['val_balanced_accuracy'].iloc[0]:.3f} at epoch {int(best['epoch'].iloc[0])}"
            if len(best) and best["val_balanced_accuracy"].notna().all() else "") + ".")
