"""Run profiles and search spaces of the hyperparameter search, and the names of its studies.

What a run of notebook 04 or of ``python -m sts_utils.stages.search`` sets, without Optuna or torch: the
LightGBM stage draws its own space with :func:`suggest`, the CNN search (:mod:`sts_utils.stages.training`)
resolves its run from :data:`PROFILES`, and a study's name pins the data and the settings
(:func:`study_name`). The storage, studies and workers are :mod:`sts_utils.data.studies`.

Profiles
    :data:`PROFILES` are the run settings of notebook 04. ``paper`` is the paper's protocol (its code,
    ``source/sts_pipeline.py`` of smilies-polito/spike-train-scalograms): 50 iterations of a Bayesian
    search over batch size {32, 64}, learning rate log-uniform in [1e-3, 0.08], ``lr_decay`` in
    {0, 0.01, 0.1} (``lr *= lr_decay`` at the start of every ``decay_period``-th epoch, 0 = constant),
    ``decay_period`` 5-20, early-stopping patience 10-20 on validation loss (an epoch counts as an
    improvement only below 0.95 x the best loss so far), dropout {0, 0.3, 0.5, 0.7}; each setting is scored
    by 3-fold ``StratifiedKFold(shuffle=True, random_state=42)`` balanced accuracy, each fold's model trained
    with Adam and plain cross-entropy for at most 1,000 epochs on 80 % of the fold's training part with
    early stopping on the other 20 %; the final model is trained on the whole training split, without a
    validation set, for the rounded mean of the folds' epoch counts; 224 px images (299 for
    inception_v3), channel map (0, 1, 0), no freezing, ImageNet weights, seed 42. ``gpu_small`` is a
    smaller GPU configuration; ``cpu_small`` (a 2-trial search) and ``cpu_fixed`` (no search, the profile's
    fixed settings, for the 5 folds of a real dataset) the minutes-on-a-CPU configurations of the committed
    figures of demo and of the real datasets.
"""
from __future__ import annotations

import hashlib
import json
import os

from sts_utils.core.config import DEFAULT_IMAGE_SIZE, check_backbone, check_choice, dataset_dir
from sts_utils.core.io import file_sha256

#: Search spaces: ``name -> (kind, ...)`` with kind ``categorical`` (values), ``log`` / ``float`` / ``int`` (low, high).
SPACES: dict[str, dict[str, tuple]] = {
    # the compendium's own small space (cpu_small and gpu_small profiles)
    "compendium": {
        "batch_size": ("categorical", [8, 16, 32]),
        "lr": ("log", 1e-5, 1e-2),
        "lr_decay": ("float", 0.1, 0.9),
        "decay_period": ("int", 2, 10),
        "patience": ("int", 3, 10),
        "dropout": ("float", 0.0, 0.5),
    },
    # the paper's param_space (sts_pipeline.py): learning_rate Real(0.001, 0.1 * 0.8, 'log-uniform'),
    # lr_decay_period -> decay_period, early_stopping -> patience, dropout_rate -> dropout
    "paper": {
        "batch_size": ("categorical", [32, 64]),
        "lr": ("log", 1e-3, 0.08),
        "lr_decay": ("categorical", [0.0, 0.01, 0.1]),
        "decay_period": ("int", 5, 20),
        "patience": ("int", 10, 20),
        "dropout": ("categorical", [0.0, 0.3, 0.5, 0.7]),
    },
}

#: Settings of a run that go to :class:`sts_utils.stages.fit.TrainConfig`; the rest steer the search and refit.
TRAIN_KEYS = ("image_size", "pretrained", "freeze", "dropout", "batch_size", "lr", "lr_decay", "decay_period", "epochs",
              "patience", "class_weights", "val_fraction", "seed", "device", "lr_schedule", "min_improvement",
              "restore_best", "compile", "channel_map")

_PROTOCOL_COMPENDIUM = {
    "space": "compendium", "protocol": "fold_val", "fold_seed": None, "inner_val_fraction": None, "refit": "early_stopping",
    "refit_epochs": "best", "pruner": "none", "n_startup_trials": 5, "lr_decay": 0.5, "decay_period": 5,
    "dropout": 0.0, "class_weights": True, "freeze": "NONE", "pretrained": "auto", "seed": None, "val_fraction": 0.15,
    "lr_schedule": "step", "min_improvement": 0.0, "restore_best": True, "compile": False, "channel_map": (0, 1, 0),
    "device": None,
}

#: Run profiles of notebook 04 and of ``python -m sts_utils.stages.search``.
PROFILES: dict[str, dict] = {
    # all four backbones within minutes on 2 CPU cores, with a 2-trial search: the committed demo figures
    "cpu_small": {**_PROTOCOL_COMPENDIUM,
             "image_size": {"resnet18": 64, "inception_v3": 80, "densenet121": 64, "mobilenet_v2": 64},
             "epochs": 8, "batch_size": 16, "lr": 1e-3, "patience": 5, "n_trials": 2, "n_folds": 2, "trial_epochs": 1},
    # real data on a CPU: cpu_small's sizes with the profile's fixed settings (no search) and at most 12 epochs,
    # so that 5 folds x 4 backbones of teeter2018 (make paper) fit within 45 minutes on 2 CPU cores
    "cpu_fixed": {**_PROTOCOL_COMPENDIUM,
                  "image_size": {"resnet18": 64, "inception_v3": 80, "densenet121": 64, "mobilenet_v2": 64},
                  "epochs": 12, "batch_size": 16, "lr": 1e-3, "patience": 4, "n_trials": 0, "n_folds": 2,
                  "trial_epochs": 4},
    # the compendium's former "paper" settings: paper image sizes, a small search (a few GPU hours)
    "gpu_small": {**_PROTOCOL_COMPENDIUM, "image_size": dict(DEFAULT_IMAGE_SIZE),
                  "epochs": 50, "batch_size": 16, "lr": 1e-4, "patience": 7, "n_trials": 20, "n_folds": 3,
                  "trial_epochs": 15},
    # the paper's protocol (see the module docstring); searched values are drawn per trial
    "paper": {
        "space": "paper", "protocol": "inner_holdout", "fold_seed": 42, "inner_val_fraction": 0.2,
        "refit": "mean_epochs", "refit_epochs": "stopped", "pruner": "none", "n_startup_trials": 10,
        "image_size": dict(DEFAULT_IMAGE_SIZE), "epochs": 1000, "batch_size": 32, "lr": 1e-3, "lr_decay": 0.0,
        "decay_period": 10, "patience": 10, "dropout": 0.0, "class_weights": False, "freeze": "NONE",
        "pretrained": "imagenet", "seed": 42, "val_fraction": 0.2, "lr_schedule": "paper", "min_improvement": 0.05,
        "restore_best": False, "compile": False, "channel_map": (0, 1, 0), "device": None,
        "n_trials": 50, "n_folds": 3, "trial_epochs": None,
    },
}
PRUNERS = ("none", "median", "hyperband")

#: Parameters of the training page that are not settings of a run: the page's place and the search's storage.
PAGE_ONLY_PARAMETERS = ("DATASET", "SEED", "DATA_DIR", "FIGURES_DIR", "BACKBONE", "PROFILE", "OPTUNA_STORAGE")


def settings_key(parameter: str) -> str:
    """The key of a run's settings that a training-page parameter sets: its name in lower case
    (``EPOCHS`` -> ``epochs``), except ``TRAIN_SEED`` -> ``seed`` (``SEED`` is the compendium's)."""
    return "seed" if parameter == "TRAIN_SEED" else parameter.lower()


#: Settings that change neither the data nor the search, so they are left out of the study name.
_NOT_IN_NAME = ("n_trials", "device", "compile", "profile")


def suggest(trial, space: dict) -> dict:
    """Draw one value per entry of ``space`` from an Optuna trial (in the space's order)."""
    out = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "categorical":
            out[name] = trial.suggest_categorical(name, spec[1])
        elif kind == "log":
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif kind == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2])
        elif kind == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2])
        else:
            raise ValueError(f"unknown kind {kind!r} of search-space entry {name!r}; expected categorical, log, float, int")
    return out


# ------------------------------------------------------------------------------------------- profiles
def resolve_profile(profile: str, dataset: str, backbone: str, overrides: dict | None = None,
                    cuda_available: bool = False, default_seed: int = 0) -> dict:
    """Settings of one run: the profile's values with the overrides that are not ``None`` on top.

    ``auto`` is ``paper`` for real datasets when ``cuda_available``, ``cpu_fixed`` for real datasets on a CPU
    (no search: their k folds must fit a CPU budget) and ``cpu_small`` for ``demo``. The seed is
    the ``seed`` override (notebook ``TRAIN_SEED``), else the profile's own (``paper``: 42), else
    ``default_seed`` (notebook ``SEED``). The result is flat: :data:`TRAIN_KEYS` plus ``profile``,
    ``space`` (the spec itself), ``n_trials``, ``n_folds``, ``trial_epochs`` and the protocol keys.
    """
    check_backbone(backbone)
    if profile == "auto":
        # the paper's protocol on real data; without CUDA it would take weeks, so small sizes are used there
        profile = "cpu_small" if dataset == "demo" else "paper" if cuda_available else "cpu_fixed"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected auto, {', '.join(PROFILES)}")
    run = dict(PROFILES[profile])
    run["image_size"] = run["image_size"][backbone]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(run) - {"space"})
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; expected some of {', '.join(sorted(run))}")
    seed = overrides.pop("seed", None)
    run.update(overrides)
    run["seed"] = int(seed if seed is not None else run["seed"] if run["seed"] is not None else default_seed)
    if isinstance(run["space"], str):
        check_choice(run["space"], SPACES, "search space")
        run["space_name"], run["space"] = run["space"], SPACES[run["space"]]
    else:
        run["space_name"] = "custom"
    check_choice(run["pruner"], PRUNERS, "pruner")
    run["channel_map"] = tuple(run["channel_map"])
    run["profile"] = profile
    return run


def settings_hash(run: dict) -> str:
    """Short hash of the settings that define a search (everything but :data:`_NOT_IN_NAME`)."""
    key = {k: v for k, v in run.items() if k not in _NOT_IN_NAME}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def data_hashes(dataset: str, data_dir: str | os.PathLike | None = None) -> dict:
    """SHA-256 of the scalogram store and of the split table (what a study's name pins)."""
    ddir = dataset_dir(dataset, data_dir)
    return {"scalograms.npy": file_sha256(ddir / "scalograms" / "scalograms.npy"),
            "splits.csv": file_sha256(ddir / "splits.csv")}


def study_name(dataset: str, backbone: str, run: dict, inputs: dict, repeat: int = 0) -> str:
    """``<dataset>-<backbone>-<profile>-r<repeat>-<data hash>-<settings hash>``."""
    data = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset}-{backbone}-{run.get('profile', 'custom')}-r{repeat}-{data}-{settings_hash(run)}"
