"""One training run of a backbone: the epoch loop, early stopping, class probabilities.

Training: Adam, cross-entropy (optionally class-weighted), step learning-rate decay (``lr_decay``
every ``decay_period`` epochs; ``lr_decay=0`` keeps the rate constant), early stopping on validation
loss with ``patience``. The settings of a run are a :class:`TrainConfig`; the search, the protocols that
call :func:`fit` and the saved model are the fine-tuning stage, :mod:`sts_utils.stages.training`.

Scalograms are held in memory as one float16 tensor (no file is re-read per epoch). On CPU a run is
deterministic for a seed (``torch.use_deterministic_algorithms``) and uses a seeded DataLoader. On
CUDA the training set is moved to the GPU once per fit and batches are indexed there with a seeded
permutation; bf16 autocast where supported (else fp16 with a GradScaler), channels_last, optional
``torch.compile`` (``compile=True``), and the loss is summed on the device and read once per epoch.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from sts_utils.core.config import CLASSES, check_backbone, check_whole_number, logger, progress_stream, seed_everything
from sts_utils.compute.metrics import balanced_accuracy
from sts_utils.data.models import build_model, get_device

LR_SCHEDULES = ("step", "paper")


@dataclass
class TrainConfig:
    """Hyperparameters and settings of one training run (names mirror notebook 04's parameters).

    ``lr_decay``: factor applied every ``decay_period`` epochs, 0 = no decay (constant rate).
    ``lr_schedule``: ``step`` (torch StepLR: epochs 1..P at ``lr``, then ``lr * lr_decay``) or ``paper``
    (the paper's code: the factor is applied at the start of epochs P, 2P, ...).
    ``min_improvement``: relative improvement of the validation loss that resets the patience (0: any
    decrease above 1e-6; the paper: 0.05). ``restore_best``: return the model of the best epoch (else the
    last one). ``compile``: ``torch.compile`` the model on CUDA (on a CPU the fit runs eager and logs that it does).
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
        """The training settings of a run (:func:`sts_utils.stages.training.resolve_profile`'s dict), with keyword overrides on top."""
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
def gpu_proba(model: nn.Module, x: torch.Tensor, batch_size: int, dtype: torch.dtype, images: bool = False
              ) -> torch.Tensor:
    """Class probabilities of scalograms (or, with ``images``, of mapped images) already on the GPU, left there
    (``dtype``: the autocast type, :func:`amp_dtype`); for scoring inside a GPU fit or search without copies."""
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
        if cfg.compile:  # asked for, so said, not silently dropped: compiling pays only on a GPU (issue 25)
            logger.info("COMPILE=True applies on CUDA only: this %s fit runs eager (the same numbers as COMPILE=False)",
                        device.type)
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
            proba_t = gpu_proba(model, xv, 2 * cfg.batch_size, dtype, images=True)
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
