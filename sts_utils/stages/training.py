"""Fine-tuning: training loop, early stopping, Bayesian hyperparameter search (Optuna), refit.

Training: Adam, cross-entropy (optionally class-weighted), step learning-rate decay (``lr_decay``
every ``decay_period`` epochs; ``lr_decay=0`` keeps the rate constant), early stopping on validation
loss with ``patience``. Two protocols, chosen by the run profile (:data:`sts_utils.data.profiles.PROFILES`):

* ``cpu_small`` / ``gpu_small`` (the compendium's): each trial is scored by the best-epoch validation balanced
  accuracy of an inner stratified K-fold CV; the best setting is refit with early stopping on a
  stratified validation part, restoring the best epoch; StepLR decay (first decay after
  ``decay_period`` epochs).
* ``paper`` (the paper's code): inside each of the 3 folds, 80 % of the fold's training part trains and
  20 % early-stops (improvement = below 0.95 x the best loss; the last model is kept); the fold's
  held-out third scores it; the decay is applied at the start of every ``decay_period``-th epoch; the
  final model is trained on the whole training split, without a validation set, for the rounded mean
  of the folds' epoch counts.

Scalograms are held in memory as one float16 tensor (no file is re-read per epoch). On CPU a run is
deterministic for a seed (``torch.use_deterministic_algorithms``) and uses a seeded DataLoader. On
CUDA the training set is moved to the GPU once per fit and batches are indexed there with a seeded
permutation; bf16 autocast where supported (else fp16 with a GradScaler), channels_last, optional
``torch.compile`` (``compile=True``), and the loss is summed on the device and read once per epoch.

The search (Optuna TPE; see :mod:`sts_utils.data.studies` for storage and workers, :mod:`sts_utils.stages.search`
for the launcher) runs in process on a private in-memory study unless a shared storage is given (``storage`` /
``$OPTUNA_STORAGE``) or the default journal file already holds this run's study (``python -m
sts_utils.stages.search`` made it): then the refit joins that study, finishes it if needed, and uses its best trial.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import optuna
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from sts_utils.data import profiles, studies
from sts_utils.core.config import CLASSES, check_whole_number, dataset_dir, logger, progress_stream, seed_everything
from sts_utils.core.io import file_sha256
from sts_utils.compute.metrics import balanced_accuracy
from sts_utils.data.models import build_model, check_backbone, get_device, model_dir, save_checkpoint
from sts_utils.stages.splits import load_split
from sts_utils.data.store import ScalogramStore

LR_SCHEDULES = ("step", "paper")


@dataclass
class TrainConfig:
    """Hyperparameters and settings of one training run (names mirror notebook 04's parameters).

    ``lr_decay``: factor applied every ``decay_period`` epochs, 0 = no decay (constant rate).
    ``lr_schedule``: ``step`` (torch StepLR: epochs 1..P at ``lr``, then ``lr * lr_decay``) or ``paper``
    (the paper's code: the factor is applied at the start of epochs P, 2P, ...).
    ``min_improvement``: relative improvement of the validation loss that resets the patience (0: any
    decrease above 1e-6; the paper: 0.05). ``restore_best``: return the model of the best epoch (else the
    last one). ``compile``: ``torch.compile`` the model on CUDA.
    """

    backbone: str = "resnet18"
    image_size: int | None = None
    pretrained: str = "auto"
    freeze: str = "NONE"
    dropout: float = 0.0
    batch_size: int = 16
    lr: float = 1e-4
    lr_decay: float = 0.5
    decay_period: int = 5
    epochs: int = 30
    patience: int = 5
    class_weights: bool = True
    val_fraction: float = 0.15
    seed: int = 0
    device: str | None = None
    lr_schedule: str = "step"
    min_improvement: float = 0.0
    restore_best: bool = True
    compile: bool = False
    channel_map: tuple[int, ...] = (0, 1, 0)

    def __post_init__(self):
        check_backbone(self.backbone)
        self.channel_map = tuple(int(c) for c in self.channel_map)
        for name in ("batch_size", "epochs", "patience", "decay_period"):  # each named alone, by its parameter
            check_whole_number(name.upper(), getattr(self, name), 1)
        if not isinstance(self.lr, (int, float)) or not isinstance(self.lr_decay, (int, float)):
            raise ValueError(f"LR and LR_DECAY must be numbers, got {self.lr!r}, {self.lr_decay!r}")
        if not self.lr > 0 or not 0 <= self.lr_decay <= 1:
            raise ValueError(f"need lr > 0 and 0 <= lr_decay <= 1 (0: no decay), got {self.lr}, {self.lr_decay}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0 <= self.min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), got {self.min_improvement}")
        if len(self.channel_map) != 3:
            raise ValueError(f"channel_map needs 3 entries (the RGB inputs), got {self.channel_map}")

    @classmethod
    def from_run(cls, run: dict, backbone: str, **overrides) -> "TrainConfig":
        """The training settings of a run (:func:`resolve_profile`'s dict), with keyword overrides on top."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in run.items() if k in names}
        values.update(overrides)
        return cls(backbone=backbone, **{k: v for k, v in values.items() if k != "backbone"})


def encode_labels(labels: pd.Series | list[str]) -> np.ndarray:
    """Class names -> indices in :data:`CLASSES` order; unknown names raise."""
    labels = list(labels)
    unknown = sorted(set(labels) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown class labels {unknown}; expected {CLASSES}")
    return np.array([CLASSES.index(x) for x in labels], dtype=np.int64)


def _class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _configure_determinism(device: torch.device) -> None:
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision type of training on ``device``: bf16 where supported, else fp16; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 64, device: torch.device | None = None,
                  images: bool = False) -> np.ndarray:
    """Class probabilities (cells x classes) of scalograms ``x`` (with ``images``: of images already mapped
    by ``model.to_image``, as a fit keeps its validation set)."""
    device = device or next(model.parameters()).device
    model.eval()
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device=device, dtype=torch.float32)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model.classify(xb) if images else model(xb)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


@torch.no_grad()
def _device_proba(model: nn.Module, x: torch.Tensor, batch_size: int, dtype: torch.dtype, images: bool = False
                  ) -> torch.Tensor:
    """Probabilities of scalograms (or, with ``images``, of mapped images) already on the GPU, left there."""
    model.eval()
    out = []
    for s in range(0, len(x), batch_size):
        with torch.autocast("cuda", dtype=dtype):
            xb = x[s:s + batch_size].float()
            logits = model.classify(xb) if images else model(xb)
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out)


@torch.no_grad()
def mapped_images(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """The model's input images of scalograms ``x`` (channel map, resize, normalisation), computed once per fit.

    The mapping has no parameters, so a fit trains on these instead of resizing every batch of every
    epoch again (the same values: the resize treats each image on its own).
    """
    parts = [model.to_image(x[s:s + batch_size].to(device=device, dtype=torch.float32))
             for s in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, 3, model.image_size, model.image_size), device=device)


def _improved(val_loss: float, best_loss: float, min_improvement: float) -> bool:
    if min_improvement > 0:
        return val_loss < (1.0 - min_improvement) * best_loss
    return val_loss < best_loss - 1e-6


def _drop_last(n: int, batch_size: int) -> bool:
    # a last batch of one cell breaks BatchNorm in training mode
    return n > batch_size and n % batch_size == 1


def fit(x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor | None, y_val: np.ndarray | None,
        cfg: TrainConfig, progress: bool = True, desc: str = "epochs") -> tuple[nn.Module, pd.DataFrame, dict]:
    """Train one model with early stopping on validation loss (none when ``x_val`` is None).

    Returns
    -------
    model, history (one row per epoch: train_loss, val_loss, val_balanced_accuracy, lr, best), info
    (``best_epoch``, ``stopped_epoch`` = epochs trained, the model info with weights used and any warning).
    The model is the best epoch's when ``cfg.restore_best`` and there is a validation set, else the last.
    """
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    _configure_determinism(device)
    model, info = build_model(cfg.backbone, cfg.pretrained, cfg.image_size, cfg.dropout, cfg.freeze,
                              channel_map=cfg.channel_map)
    model = model.to(device)
    cuda = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel per step instead of a loop over parameter tensors (on 2 CPU cores a ResNet18
    # step's optimiser time 33 -> 8 ms); the same update rule
    opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    step_decay = cfg.lr_schedule == "step" and cfg.lr_decay > 0
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.decay_period, gamma=cfg.lr_decay) if step_decay else None
    weight = _class_weights(y_train, len(CLASSES)).to(device) if cfg.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    eval_loss = nn.CrossEntropyLoss()
    has_val = x_val is not None and len(x_val) > 0
    drop_last = _drop_last(len(x_train), cfg.batch_size)
    if cuda:
        dtype = amp_dtype(device)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        xs = mapped_images(model, x_train, device)  # once per fit; batches are indexed on the GPU
        ys = torch.as_tensor(y_train).to(device, non_blocking=True)
        if has_val:
            xv = mapped_images(model, x_val, device)
            yv = torch.as_tensor(y_val).to(device, non_blocking=True)
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        step_model = torch.compile(model.classify) if cfg.compile else model.classify
        n_used = len(xs) - (len(xs) % cfg.batch_size if drop_last else 0)
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
        images = mapped_images(model, x_train, device)
        xv = mapped_images(model, x_val, device) if has_val else None
        loader = DataLoader(TensorDataset(images, torch.as_tensor(y_train)), batch_size=cfg.batch_size, shuffle=True,
                            generator=gen, drop_last=drop_last)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
    best_loss, best_state, best_epoch, bad = float("inf"), None, 0, 0
    rows = []
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False, file=progress_stream())
    epoch = 0
    for epoch in bar:
        if cfg.lr_schedule == "paper" and cfg.lr_decay > 0 and epoch % cfg.decay_period == 0:
            for group in opt.param_groups:  # the paper: lr *= lr_decay at the start of every period-th epoch
                group["lr"] *= cfg.lr_decay
        model.train()
        if cuda:
            total_t = torch.zeros((), device=device)
            perm = torch.randperm(len(xs), generator=gen, device=device)
            for s in range(0, n_used, cfg.batch_size):
                idx = perm[s:s + cfg.batch_size]
                xb, yb = xs[idx], ys[idx]
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=dtype):
                    loss = loss_fn(step_model(xb), yb)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total_t += loss.detach().float() * len(idx)
            n = n_used
        else:
            total, n = 0.0, 0
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model.classify(xb), yb)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += float(loss.detach()) * len(xb)
                n += len(xb)
        lr = opt.param_groups[0]["lr"]
        if sched is not None:
            sched.step()
        if not has_val:
            train_loss = float(total_t) if cuda else total
            rows.append({"epoch": epoch, "train_loss": train_loss / max(n, 1), "val_loss": float("nan"),
                         "val_balanced_accuracy": float("nan"), "lr": lr})
            bar.set_postfix(train=f"{train_loss / max(n, 1):.3f}")
            best_epoch = epoch
            continue
        if cuda:
            proba_t = _device_proba(model, xv, 2 * cfg.batch_size, dtype, images=True)
            vloss_t = F.nll_loss(torch.log(proba_t.clamp_min(1e-12)), yv)
            host = torch.stack([vloss_t, total_t]).cpu()  # the one host synchronisation of the epoch
            val_loss, total = float(host[0]), float(host[1])
            pred = proba_t.argmax(1).cpu().numpy()
        else:
            proba = predict_proba(model, xv, device=device, images=True)
            val_loss = float(eval_loss(torch.log(torch.as_tensor(proba).clamp_min(1e-12)), torch.as_tensor(y_val)))
            pred = proba.argmax(1)
        val_bacc = balanced_accuracy(y_val, pred)
        rows.append({"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val_loss,
                     "val_balanced_accuracy": val_bacc, "lr": lr})
        bar.set_postfix(train=f"{total / max(n, 1):.3f}", val=f"{val_loss:.3f}", bacc=f"{val_bacc:.2f}")
        if _improved(val_loss, best_loss, cfg.min_improvement):
            best_loss, best_epoch, bad = val_loss, epoch, 0
            if cfg.restore_best:
                best_state = (copy.deepcopy(model.state_dict()) if not cuda else
                              {k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    history["best"] = history["epoch"] == best_epoch
    return model.eval(), history, {"best_epoch": best_epoch, "stopped_epoch": int(epoch), "model": asdict(info)}


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """Scalograms as one in-memory float16 tensor (half the memory of float32; cast per batch).

    A read-only memory map (a slice of the store) is copied into memory, so batches never wait
    on the disk and torch gets a writable array; an in-memory array is used as it is.
    """
    return torch.from_numpy(np.require(np.asarray(images, dtype=np.float16), requirements=["C", "W"]))


def train_val_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    counts = np.bincount(y)
    n_classes = int((counts > 0).sum())
    n_val = max(int(round(val_fraction * len(y))), n_classes)
    if (counts[counts > 0] >= 2).all() and len(y) - n_val >= n_classes:
        return train_test_split(idx, test_size=n_val, random_state=seed, stratify=y)
    return train_test_split(idx, test_size=max(1, int(round(val_fraction * len(y)))), random_state=seed)


def inner_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's split of a fold's training part: ``train_test_split(test_size=fraction, stratify=y)``.

    Falls back to :func:`train_val_split` where stratification is impossible (tiny sets).
    """
    try:
        return train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=y)
    except ValueError:
        return train_val_split(y, fraction, seed)


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
                    pred = _device_proba(model, x[va].to(device), 2 * cfg.batch_size, amp_dtype(device)).argmax(1)
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


#: The run profiles (``cpu_small``, ``cpu_fixed``, ``gpu_small``, ``paper``); defined in :mod:`sts_utils.data.profiles`.
PROFILES = profiles.PROFILES


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


# ------------------------------------------------------------------------- worker of `python -m sts_utils.stages.search`
def worker_main(argv: list[str] | None = None) -> int:
    """One search worker (started by ``python -m sts_utils.stages.search``): joins the study and runs trials."""
    ap = argparse.ArgumentParser(prog="python -m sts_utils.stages.training",
                                 description="One worker of a shared hyperparameter search (started by sts_utils.stages.search).")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study-name", required=True)
    ap.add_argument("--settings", required=True, help="the resolved run settings as JSON")
    ap.add_argument("--rank", type=int, default=0)
    args = ap.parse_args(argv)
    run = json.loads(args.settings)
    base = TrainConfig.from_run(run, args.backbone)
    store = ScalogramStore.load(args.dataset, args.data_dir)
    split = load_split(args.dataset, args.data_dir, args.repeat)
    train = split[split["split"] == "train"].merge(store.index[["specimen_id", "row"]], on="specimen_id")
    x = as_tensor(store.images[np.sort(train["row"].to_numpy())])
    y = encode_labels(train.sort_values("row")["label"])
    search_hyperparameters(x, y, base, int(run["n_trials"]), int(run["n_folds"]), run.get("trial_epochs"),
                           progress=False, settings=run, storage=args.storage, study_name=args.study_name, rank=args.rank)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
