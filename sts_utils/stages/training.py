"""Fine-tuning stage: Bayesian hyperparameter search (Optuna) scored by inner CV, refit, the saved model.

Two protocols, chosen by the run profile (:data:`sts_utils.data.profiles.PROFILES`):

* ``cpu_small`` / ``gpu_small`` (the compendium's): each trial is scored by the best-epoch validation balanced
  accuracy of an inner stratified K-fold CV; the best setting is refit with early stopping on a
  stratified validation part, restoring the best epoch; StepLR decay (first decay after
  ``decay_period`` epochs).
* ``paper`` (the paper's code): inside each of the 3 folds, 80 % of the fold's training part trains and
  20 % early-stops (improvement = below 0.95 x the best loss; the last model is kept); the fold's
  held-out third scores it; the decay is applied at the start of every ``decay_period``-th epoch; the
  final model is trained on the whole training split, without a validation set, for the rounded mean
  of the folds' epoch counts.

Each model is trained by :func:`sts_utils.stages.fit.fit` (the epoch loop, early stopping, Adam, the learning-rate
schedules); a search worker's command line is :mod:`sts_utils.stages.search_worker`.

The search (Optuna TPE; see :mod:`sts_utils.data.studies` for storage and workers, :mod:`sts_utils.stages.search`
for the launcher) runs in process on a private in-memory study unless a shared storage is given (``storage`` /
``$OPTUNA_STORAGE``) or the default journal file already holds this run's study (``python -m
sts_utils.stages.search`` made it): then the refit joins that study, finishes it if needed, and uses its best trial.
"""
from __future__ import annotations

import os
from dataclasses import asdict, replace

import numpy as np
import optuna
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold

from sts_utils.data import profiles, studies
from sts_utils.core.config import CLASSES, check_backbone, check_whole_number, dataset_dir, logger
from sts_utils.core.io import file_sha256
from sts_utils.compute.metrics import balanced_accuracy
from sts_utils.data.models import get_device, model_dir, save_checkpoint
from sts_utils.stages.fit import (TrainConfig, gpu_proba, amp_dtype, as_tensor, encode_labels, fit, inner_holdout,
                                  predict_proba, train_val_split)
from sts_utils.stages.splits import load_split
from sts_utils.data.store import ScalogramStore


#: The compendium's search space (cpu_small and gpu_small profiles); the paper's is ``profiles.SPACES['paper']``.
SEARCH_SPACE = profiles.SPACES["compendium"]

#: Default search settings of :func:`search_hyperparameters` (the compendium protocol).
_DEFAULT_SEARCH = {"protocol": "fold_val", "fold_seed": None, "inner_val_fraction": None, "refit": "early_stopping",
                   "refit_epochs": "best", "pruner": "none", "n_startup_trials": 5}


def _search_settings(settings: dict | None) -> dict:
    out = dict(_DEFAULT_SEARCH)
    out.update({k: v for k, v in (settings or {}).items() if k in _DEFAULT_SEARCH or k in ("space", "profile")})
    return out


def make_objective(x: torch.Tensor, y: np.ndarray, base: TrainConfig, settings: dict, n_folds: int,
                   trial_epochs: int | None = None, space: dict | None = None):
    """The CV objective of a trial: mean fold balanced accuracy (reported per fold, so pruners can act).

    Records per trial ``fold<k>_balanced_accuracy``, ``fold<k>_best_epoch``, ``fold<k>_stopped_epoch`` and
    ``fold_epochs`` (the epoch counts the refit averages: best or stopped epochs, per ``refit_epochs``).
    """
    s = _search_settings(settings)
    space = space or s.get("space") or SEARCH_SPACE
    fold_seed = base.seed if s["fold_seed"] is None else int(s["fold_seed"])
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=fold_seed)
    folds = list(skf.split(np.zeros(len(y)), y))
    device = get_device(base.device)

    def objective(trial):
        params = profiles.suggest(trial, space)
        cfg = replace(base, **params, epochs=trial_epochs or base.epochs)
        scores, epochs = [], []
        for k, (tr, va) in enumerate(folds):
            if s["protocol"] == "inner_holdout":
                itr, ies = inner_holdout(y[tr], float(s["inner_val_fraction"]), fold_seed)
                model, hist, info = fit(x[tr[itr]], y[tr[itr]], x[tr[ies]], y[tr[ies]], cfg, progress=False)
                if device.type == "cuda":
                    pred = gpu_proba(model, x[va].to(device), 2 * cfg.batch_size, amp_dtype(device)).argmax(1)
                    pred = pred.cpu().numpy()
                else:
                    pred = predict_proba(model, x[va], device=device).argmax(1)
                score = balanced_accuracy(y[va], pred)
                del model
            else:
                _, hist, info = fit(x[tr], y[tr], x[va], y[va], cfg, progress=False)
                score = float(hist.loc[hist["best"], "val_balanced_accuracy"].iloc[0])
            scores.append(float(score))
            epochs.append(int(info["stopped_epoch"] if s["refit_epochs"] == "stopped" else info["best_epoch"]))
            trial.set_user_attr(f"fold{k}_balanced_accuracy", scores[-1])
            trial.set_user_attr(f"fold{k}_best_epoch", int(info["best_epoch"]))
            trial.set_user_attr(f"fold{k}_stopped_epoch", int(info["stopped_epoch"]))
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                trial.set_user_attr("fold_epochs", epochs)
                raise optuna.TrialPruned()
        trial.set_user_attr("fold_epochs", epochs)
        return float(np.mean(scores))

    return objective


def refit_epochs(fold_epochs: list[int]) -> int:
    """The refit's epoch count: the rounded mean of the folds' epochs (Python ``round``, as the paper)."""
    if not fold_epochs:
        raise ValueError("no fold epochs to average")
    return max(1, int(round(float(np.mean(fold_epochs)))))


def _trials_table(study: optuna.Study) -> pd.DataFrame:
    trials = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "state"))
    return trials.rename(columns={"value": "cv_balanced_accuracy"})


def search_hyperparameters(x: torch.Tensor, y: np.ndarray, base: TrainConfig, n_trials: int = 5, n_folds: int = 3,
                           trial_epochs: int | None = None, space: dict | None = None, progress: bool = True,
                           settings: dict | None = None, storage: str | None = None, study_name: str | None = None,
                           rank: int = 0) -> tuple[dict, pd.DataFrame, dict]:
    """Bayesian (TPE) search scored by inner stratified K-fold CV balanced accuracy on the training split.

    Without ``storage`` the study is private and in memory (``TPESampler(seed=base.seed,
    n_startup_trials=min(5, n_trials))`` for the compendium profiles). With ``storage`` (a journal path or
    database URL) this process is one worker of the shared study ``study_name``: it runs trials until the
    study has ``n_trials`` complete ones (none when it already has them).

    Returns the best parameters, the trials table (one row per trial, its CV score and fold results) and
    the best trial's user attributes (``fold_epochs``...). With ``n_trials=0``: ``{}``, an empty table, ``{}``.
    """
    if n_trials <= 0:
        return {}, pd.DataFrame(), {}
    n_folds = check_whole_number("N_FOLDS", n_folds, 2)  # a search scores each trial on >= 2 inner folds
    smallest = int(np.unique(y, return_counts=True)[1].min()) if len(y) else 0
    if smallest < n_folds:
        raise ValueError(f"N_FOLDS={n_folds}: the smallest class of the training split has {smallest} cells, "
                         f"too few for {n_folds} stratified folds; give N_FOLDS between 2 and {max(smallest, 2)} "
                         f"(or N_TRIALS=0 for no search)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = _search_settings(settings)
    device = get_device(base.device)
    if device.type == "cuda":
        x = x.to(device)  # once per search: every fold of every trial indexes it on the GPU
    objective = make_objective(x, y, base, s, n_folds, trial_epochs, space)
    catch = (torch.OutOfMemoryError,) if storage is not None else ()
    study = studies.run_worker(objective, n_trials, name=study_name, storage=storage, pruner=studies.make_pruner(s["pruner"]),
                              rank=rank, seed=base.seed, n_startup_trials=int(s["n_startup_trials"]), progress=progress,
                              catch=catch, desc=f"search {base.backbone}")
    best = study.best_trial
    return dict(best.params), _trials_table(study), dict(best.user_attrs)


def resolve_profile(profile: str, dataset: str, backbone: str, overrides: dict | None = None, default_seed: int = 0
                    ) -> dict:
    """Settings of a run: the profile's values with the notebook parameters that are not ``None`` on top.

    ``auto`` is ``paper`` for real datasets on a CUDA machine, ``cpu_fixed`` for real datasets on a CPU and
    ``cpu_small`` for demo. See
    :func:`sts_utils.data.profiles.resolve_profile` (``default_seed`` is the notebook's ``SEED``; the paper pins 42).
    """
    check_backbone(backbone)
    return profiles.resolve_profile(profile, dataset, backbone, overrides, cuda_available=torch.cuda.is_available(),
                                  default_seed=default_seed)



def run_finetuning(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None, repeat: int = 0,
                   base: TrainConfig | None = None, n_trials: int | None = None, n_folds: int | None = None,
                   trial_epochs: int | None = None, progress: bool = True, extra_config: dict | None = None,
                   settings: dict | None = None, storage: str | None = None) -> dict:
    """Search, refit and save one backbone on one split repeat of ``dataset``.

    ``settings`` is :func:`resolve_profile`'s dict (its protocol, space, ``n_trials``, ``n_folds`` and
    ``trial_epochs``; the explicit arguments win). Without it the compendium protocol runs with the
    arguments (``n_trials`` 0, ``n_folds`` 3 by default). Storage: ``storage``, else ``$OPTUNA_STORAGE``;
    without either, the default journal file is used only when it already holds this run's study.

    Writes ``models/<backbone>/`` (``repeat_<k>/`` for k > 0): ``model.pt`` (state dict),
    ``config.json`` (with the profile), ``history.csv``, ``trials.csv``.
    """
    check_backbone(backbone)
    s = dict(settings or {})
    n_trials = int(n_trials if n_trials is not None else s.get("n_trials", 0) or 0)
    n_folds = n_folds if n_folds is not None else s.get("n_folds", 3)  # checked by the search that uses it
    trial_epochs = trial_epochs if trial_epochs is not None else s.get("trial_epochs")
    profile = s.get("profile") or (extra_config or {}).get("profile") or "custom"
    base = replace(base or TrainConfig(), backbone=backbone)
    ddir = dataset_dir(dataset, data_dir)
    store = ScalogramStore.load(dataset, data_dir)
    split = load_split(dataset, data_dir, repeat)
    train = split[split["split"] == "train"].merge(store.index[["specimen_id", "row"]], on="specimen_id")
    if train.empty:
        raise ValueError(f"no training cells with scalograms in {ddir / 'splits.csv'} (repeat {repeat})")
    x = as_tensor(store.images[np.sort(train["row"].to_numpy())])
    train = train.sort_values("row")
    y = encode_labels(train["label"])
    inputs = {"scalograms.npy": file_sha256(ddir / "scalograms" / "scalograms.npy"),
              "splits.csv": file_sha256(ddir / "splits.csv")}
    spec, asked = studies.storage_spec(storage, dataset, backbone, data_dir)
    # the name pins data and settings: the resolved run settings (as `python -m sts_utils.stages.search` hashes
    # them), or for a call without settings the training configuration and search arguments
    key = s if settings else {**asdict(base), "n_folds": n_folds, "trial_epochs": trial_epochs}
    name = profiles.study_name(dataset, backbone, {**key, "profile": profile}, inputs, repeat)
    use_storage = n_trials > 0 and (asked or studies.study_exists(spec, name))
    best, trials, best_attrs = search_hyperparameters(
        x, y, base, n_trials, n_folds, trial_epochs, progress=progress, settings=s,
        storage=spec if use_storage else None, study_name=name if use_storage else None)
    cfg = replace(base, **best)
    rule = _search_settings(s)["refit"]
    if rule == "mean_epochs" and best_attrs.get("fold_epochs"):
        # the paper: the whole training split, no validation set, the rounded mean of the folds' epochs
        cfg = replace(cfg, epochs=refit_epochs(best_attrs["fold_epochs"]))
        tr, va = np.arange(len(y)), np.arange(0)
        model, history, info = fit(x, y, None, None, cfg, progress=progress, desc=f"refit {backbone}")
    else:
        rule = "early_stopping"
        tr, va = train_val_split(y, cfg.val_fraction, cfg.seed)
        model, history, info = fit(x[tr], y[tr], x[va], y[va], cfg, progress=progress, desc=f"refit {backbone}")
    out = model_dir(dataset, backbone, data_dir, repeat)
    config = {
        "dataset": dataset, "backbone": backbone, "repeat": repeat, "profile": profile, "train": asdict(cfg), "search": {
            "n_trials": n_trials, "n_folds": n_folds, "trial_epochs": trial_epochs, "best_params": best,
            "study_name": name if use_storage else None, "storage": spec if use_storage else "in-memory",
            "settings": {k: v for k, v in s.items() if k not in profiles.TRAIN_KEYS}},
        "refit": {"rule": rule, "epochs": int(cfg.epochs) if rule == "mean_epochs" else None,
                  "fold_epochs": best_attrs.get("fold_epochs")},
        "model": info["model"], "best_epoch": info["best_epoch"], "n_train": int(len(tr)), "n_val": int(len(va)),
        "classes": list(CLASSES), "inputs": inputs,
        **(extra_config or {}),
    }
    path = save_checkpoint(model, config, out, files={"history.csv": history.to_csv(index=False),
                                                      "trials.csv": trials.to_csv(index=False)})
    logger.info("%s: best epoch %d, weights %s -> %s", backbone, info["best_epoch"], info["model"]["weights"], path)
    return {"model": model, "history": history, "trials": trials, "config": config, "path": path}
