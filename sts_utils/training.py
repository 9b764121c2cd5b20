"""Fine-tuning: training loop, early stopping, Bayesian hyperparameter search (Optuna), refit.

Training follows the paper: Adam, cross-entropy (optionally class-weighted), step learning-rate
decay (``LR_DECAY`` every ``DECAY_PERIOD`` epochs), early stopping on validation loss with
``PATIENCE`` and restore of the best epoch. Scalograms are held in memory as one float16 tensor
(no file is re-read per epoch). On CPU the run is deterministic for a seed
(``torch.use_deterministic_algorithms``); on CUDA it uses channels_last and mixed precision.

The hyperparameter search replaces the paper's W&B Bayesian sweep with Optuna's TPE sampler
(seeded): each trial is scored by the mean validation balanced accuracy of an inner stratified
K-fold CV on the training split; the best setting is refit on the whole training split (with a
stratified validation part for early stopping).
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from .config import CLASSES, logger, seed_everything
from .evaluation import balanced_accuracy
from .models import build_model, get_device


@dataclass
class TrainConfig:
    """Hyperparameters and settings of one training run (names mirror notebook 04's parameters)."""

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

    def __post_init__(self):
        if self.batch_size < 1 or self.epochs < 1 or self.patience < 1 or self.decay_period < 1:
            raise ValueError("batch_size, epochs, patience and decay_period must be >= 1")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"need lr > 0 and 0 < lr_decay <= 1, got {self.lr}, {self.lr_decay}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


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


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 64, device: torch.device | None = None
                  ) -> np.ndarray:
    """Class probabilities (cells x classes) of scalograms ``x``."""
    device = device or next(model.parameters()).device
    model.eval()
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device=device, dtype=torch.float32)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = model(xb)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


def fit(x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor, y_val: np.ndarray, cfg: TrainConfig,
        progress: bool = True, desc: str = "epochs") -> tuple[nn.Module, pd.DataFrame, dict]:
    """Train one model with early stopping on validation loss; return it at its best epoch.

    Returns
    -------
    model, history (one row per epoch: train_loss, val_loss, val_balanced_accuracy, lr), info
    (``best_epoch``, the model info with weights used and any warning).
    """
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    _configure_determinism(device)
    model, info = build_model(cfg.backbone, cfg.pretrained, cfg.image_size, cfg.dropout, cfg.freeze)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.decay_period, gamma=cfg.lr_decay)
    weight = _class_weights(y_train, len(CLASSES)).to(device) if cfg.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    eval_loss = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(TensorDataset(x_train, torch.as_tensor(y_train)), batch_size=cfg.batch_size, shuffle=True,
                        generator=gen, drop_last=len(x_train) > cfg.batch_size and len(x_train) % cfg.batch_size == 1)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    best_loss, best_state, best_epoch, bad = float("inf"), None, 0, 0
    rows = []
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, n = 0.0, 0
        for xb, yb in loader:
            xb = xb.to(device=device, dtype=torch.float32, non_blocking=True)
            yb = yb.to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                loss = loss_fn(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach()) * len(xb)
            n += len(xb)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        proba = predict_proba(model, x_val, device=device)
        val_loss = float(eval_loss(torch.log(torch.as_tensor(proba).clamp_min(1e-12)), torch.as_tensor(y_val)))
        val_bacc = balanced_accuracy(y_val, proba.argmax(1))
        rows.append({"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val_loss,
                     "val_balanced_accuracy": val_bacc, "lr": lr})
        bar.set_postfix(train=f"{total / max(n, 1):.3f}", val=f"{val_loss:.3f}", bacc=f"{val_bacc:.2f}")
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, bad = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    history["best"] = history["epoch"] == best_epoch
    return model.eval(), history, {"best_epoch": best_epoch, "model": asdict(info)}


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


#: The search space of the paper's sweep (batch size, learning rate, decay, decay period, patience, dropout).
SEARCH_SPACE = {
    "batch_size": ("categorical", [8, 16, 32]),
    "lr": ("log", 1e-5, 1e-2),
    "lr_decay": ("float", 0.1, 0.9),
    "decay_period": ("int", 2, 10),
    "patience": ("int", 3, 10),
    "dropout": ("float", 0.0, 0.5),
}


def _suggest(trial, space: dict) -> dict:
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
    return out


def search_hyperparameters(x: torch.Tensor, y: np.ndarray, base: TrainConfig, n_trials: int = 5, n_folds: int = 3,
                           trial_epochs: int | None = None, space: dict | None = None, progress: bool = True
                           ) -> tuple[dict, pd.DataFrame]:
    """Bayesian (TPE) search scored by inner stratified K-fold CV balanced accuracy on the training split.

    Returns the best parameters and the trials table (one row per trial and its CV score).
    With ``n_trials=0`` the base configuration is returned unchanged.
    """
    import optuna

    if n_trials <= 0:
        return {}, pd.DataFrame()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space or SEARCH_SPACE
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=base.seed)
    folds = list(skf.split(np.zeros(len(y)), y))

    def objective(trial):
        params = _suggest(trial, space)
        cfg = replace(base, **params, epochs=trial_epochs or base.epochs)
        scores = []
        for k, (tr, va) in enumerate(folds):
            _, hist, _ = fit(x[tr], y[tr], x[va], y[va], cfg, progress=False)
            scores.append(float(hist.loc[hist["best"], "val_balanced_accuracy"].iloc[0]))
            trial.set_user_attr(f"fold{k}_balanced_accuracy", scores[-1])
        return float(np.mean(scores))

    sampler = optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=min(5, n_trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    bar = tqdm(total=n_trials, desc=f"search {base.backbone}", disable=not progress)
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: bar.update(1)])
    bar.close()
    trials = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs", "state"))
    trials = trials.rename(columns={"value": "cv_balanced_accuracy"})
    return dict(study.best_params), trials


def run_finetuning(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None, repeat: int = 0,
                   base: TrainConfig | None = None, n_trials: int = 0, n_folds: int = 3, trial_epochs: int | None = None,
                   progress: bool = True, extra_config: dict | None = None) -> dict:
    """Search, refit and save one backbone on one split repeat of ``dataset``.

    Writes ``models/<backbone>/`` (``repeat_<k>/`` for k > 0): ``model.pt`` (state dict),
    ``config.json``, ``history.csv``, ``trials.csv``.
    """
    from .config import dataset_dir
    from .io import file_sha256, write_csv_atomic
    from .models import save_checkpoint
    from .scalograms import ScalogramStore
    from .splits import load_split

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
    best, trials = search_hyperparameters(x, y, base, n_trials, n_folds, trial_epochs, progress=progress)
    cfg = replace(base, **best)
    tr, va = train_val_split(y, cfg.val_fraction, cfg.seed)
    model, history, info = fit(x[tr], y[tr], x[va], y[va], cfg, progress=progress, desc=f"refit {backbone}")
    out = ddir / "models" / backbone / ("" if repeat == 0 else f"repeat_{repeat}")
    config = {
        "dataset": dataset, "backbone": backbone, "repeat": repeat, "train": asdict(cfg), "search": {
            "n_trials": n_trials, "n_folds": n_folds, "trial_epochs": trial_epochs, "best_params": best},
        "model": info["model"], "best_epoch": info["best_epoch"], "n_train": int(len(tr)), "n_val": int(len(va)),
        "classes": list(CLASSES), "inputs": {"scalograms.npy": file_sha256(ddir / "scalograms" / "scalograms.npy"),
                                             "splits.csv": file_sha256(ddir / "splits.csv")},
        **(extra_config or {}),
    }
    write_csv_atomic(history, out / "history.csv")
    write_csv_atomic(trials, out / "trials.csv")
    path = save_checkpoint(model, config, out)
    logger.info("%s: best epoch %d, weights %s -> %s", backbone, info["best_epoch"], info["model"]["weights"], path)
    return {"model": model, "history": history, "trials": trials, "config": config, "path": path}


#: Run profiles of notebook 04. ``demo`` keeps all four backbones within minutes on 2 CPU cores
#: (smaller images, few epochs and trials); ``paper`` is the paper-sized configuration for real data.
PROFILES = {
    "demo": {"image_size": {"resnet18": 64, "inception_v3": 80, "densenet121": 64, "mobilenet_v2": 64},
             "epochs": 15, "batch_size": 16, "lr": 1e-3, "patience": 5, "n_trials": 2, "n_folds": 2, "trial_epochs": 4},
    "paper": {"image_size": {"resnet18": 224, "inception_v3": 299, "densenet121": 224, "mobilenet_v2": 224},
              "epochs": 50, "batch_size": 16, "lr": 1e-4, "patience": 7, "n_trials": 20, "n_folds": 3, "trial_epochs": 15},
}


def resolve_profile(profile: str, dataset: str, backbone: str, overrides: dict) -> dict:
    """Settings of a run: the profile's values with the notebook parameters that are not ``None`` on top.

    ``auto`` is ``paper`` for real datasets on a CUDA machine and ``demo`` otherwise.
    """
    if profile == "auto":
        # the paper configuration on real data; on a machine without CUDA it would take days, so
        # the demo sizes are used there too (the run's config and notebook say so)
        profile = "paper" if dataset != "demo" and torch.cuda.is_available() else "demo"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected auto, {', '.join(PROFILES)}")
    base = dict(PROFILES[profile])
    base["image_size"] = base["image_size"][backbone]
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["profile"] = profile
    return base
