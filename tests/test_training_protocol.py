"""Training protocols: the demo path is unchanged bit for bit, learning-rate decay, the paper's refit epochs,
the refit from a study that `make search` workers filled."""
import copy
import os
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sts_utils import search, training
from sts_utils.config import CLASSES, seed_everything
from sts_utils.metrics import balanced_accuracy
from sts_utils.models import build_model
from sts_utils.training import TrainConfig, fit, predict_proba, refit_epochs, resolve_profile

from .conftest import ROOT
from .test_models import easy_set


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("STS_OFFLINE", "1")
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)


def legacy_fit(x_train, y_train, x_val, y_val, cfg):
    """The CPU training loop as it was before the paper protocol and the GPU path (the reference of the demo figures)."""
    seed_everything(cfg.seed)
    device = torch.device("cpu")
    torch.use_deterministic_algorithms(True, warn_only=True)
    model, info = build_model(cfg.backbone, cfg.pretrained, cfg.image_size, cfg.dropout, cfg.freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)  # the one change since: the fused Adam kernel (same rule)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.decay_period, gamma=cfg.lr_decay)
    loss_fn = nn.CrossEntropyLoss(weight=training._class_weights(y_train, len(CLASSES)) if cfg.class_weights else None)
    eval_loss = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(TensorDataset(x_train, torch.as_tensor(y_train)), batch_size=cfg.batch_size, shuffle=True,
                        generator=gen, drop_last=len(x_train) > cfg.batch_size and len(x_train) % cfg.batch_size == 1)
    best_loss, best_state, best_epoch, bad, rows = float("inf"), None, 0, 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for xb, yb in loader:
            xb = xb.to(dtype=torch.float32)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
            n += len(xb)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        proba = predict_proba(model, x_val, device=device)
        val_loss = float(eval_loss(torch.log(torch.as_tensor(proba).clamp_min(1e-12)), torch.as_tensor(y_val)))
        rows.append({"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val_loss,
                     "val_balanced_accuracy": balanced_accuracy(y_val, proba.argmax(1)), "lr": lr})
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, bad = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return model, pd.DataFrame(rows), best_epoch


def test_demo_cpu_fit_is_bit_identical_to_the_legacy_loop():
    x, y = easy_set(4)
    run = resolve_profile("cpu_small", "demo", "resnet18", {"image_size": 32, "epochs": 4, "batch_size": 5, "patience": 2,
                                                       "decay_period": 1, "dropout": 0.2}, default_seed=3)
    cfg = TrainConfig.from_run(run, "resnet18", pretrained="none")
    model, hist, info = fit(x, y, x[::2], y[::2], cfg, progress=False)
    ref, ref_hist, ref_best = legacy_fit(x, y, x[::2], y[::2], cfg)
    assert info["best_epoch"] == ref_best
    pd.testing.assert_frame_equal(hist.drop(columns="best"), ref_hist, check_exact=True)
    a, b = model.state_dict(), ref.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_demo_run_settings_equal_the_former_notebook_configuration():
    run = resolve_profile("cpu_small", "demo", "densenet121", {}, default_seed=0)
    former = TrainConfig(backbone="densenet121", image_size=64, pretrained="auto", freeze="NONE", dropout=0.0, batch_size=16,
                         lr=1e-3, lr_decay=0.5, decay_period=5, epochs=8, patience=5, class_weights=True, seed=0)
    assert TrainConfig.from_run(run, "densenet121") == former


@pytest.mark.parametrize("schedule, decay, expected", [
    ("paper", 0.0, [1e-2] * 6),  # 0 = no decay
    ("paper", 0.1, [1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5]),  # applied at the start of epochs 2, 4, 6
    ("step", 0.1, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4]),  # StepLR: after 2 full epochs
    ("step", 0.0, [1e-2] * 6),
])
def test_learning_rate_decay(schedule, decay, expected):
    x, y = easy_set(2)
    cfg = TrainConfig(backbone="resnet18", image_size=32, pretrained="none", epochs=6, batch_size=8, lr=1e-2, lr_decay=decay,
                      decay_period=2, lr_schedule=schedule, patience=100)
    _, hist, info = fit(x, y, None, None, cfg, progress=False)  # no validation set: exactly `epochs` epochs
    np.testing.assert_allclose(hist["lr"], expected, rtol=1e-12)
    assert len(hist) == 6 and info["stopped_epoch"] == 6 and hist["val_loss"].isna().all()


def test_bad_parameters_fail_first_with_one_line():
    with pytest.raises(ValueError, match="expected one of resnet18"):
        resolve_profile("auto", "demo", "vgg16", {})
    with pytest.raises(ValueError, match="unknown backbone"):
        TrainConfig(backbone="vgg16")
    with pytest.raises(ValueError):
        TrainConfig(lr_decay=-0.1)
    with pytest.raises(ValueError):
        TrainConfig(lr_schedule="cosine")
    assert TrainConfig(lr_decay=0).lr_decay == 0


def test_refit_epochs_round_like_the_paper():
    assert refit_epochs([3, 4, 4]) == 4 and refit_epochs([12, 20, 30]) == 21
    assert refit_epochs([2, 3]) == 2  # Python's round: half to even, as the paper's code


class _Store:
    def __init__(self, x, labels):
        self.images = x.numpy()
        self.index = pd.DataFrame({"specimen_id": np.arange(len(x)), "row": np.arange(len(x)), "label": labels})


@pytest.mark.parametrize("rule, expected", [("stopped", 4), ("best", 2)])
def test_paper_refit_trains_the_whole_split_for_the_mean_fold_epochs(tmp_path, monkeypatch, rule, expected):
    x, y = easy_set(6)
    labels = [CLASSES[i] for i in y]
    monkeypatch.setattr(training.ScalogramStore, "load", classmethod(lambda cls, *a, **k: _Store(x, labels)))
    monkeypatch.setattr(training, "load_split", lambda *a, **k: pd.DataFrame(
        {"specimen_id": np.arange(len(x)), "split": "train", "label": labels}))
    monkeypatch.setattr(training, "file_sha256", lambda path: "0" * 64)
    calls, fold_epochs = [], iter([(3, 1), (4, 2), (4, 2)])

    def stub_fit(x_train, y_train, x_val, y_val, cfg, progress=True, desc=""):
        calls.append({"n_train": len(x_train), "val": None if x_val is None else len(x_val), "epochs": cfg.epochs,
                      "lr_schedule": cfg.lr_schedule})
        stopped, best = next(fold_epochs) if x_val is not None else (cfg.epochs, cfg.epochs)
        model = nn.Sequential(nn.Flatten(), nn.Linear(x.shape[1] * x.shape[2] * x.shape[3], 4))
        hist = pd.DataFrame({"epoch": [1], "val_balanced_accuracy": [0.5], "best": [True]})
        return model, hist, {"best_epoch": best, "stopped_epoch": stopped, "model": {"weights": "random", "warning": ""}}

    monkeypatch.setattr(training, "fit", stub_fit)
    run = resolve_profile("paper", "demo", "resnet18", {"n_trials": 1, "refit_epochs": rule, "pretrained": "none"})
    out = training.run_finetuning("demo", "resnet18", tmp_path, base=TrainConfig.from_run(run, "resnet18"), settings=run,
                                  progress=False)
    folds, refit = calls[:3], calls[3]
    n = len(x)
    # the paper: each fold trains on 80 % of its 2/3, early-stops on the other 20 %
    assert [c["n_train"] + c["val"] for c in folds] == [n * 2 // 3] * 3 and all(c["val"] > 0 for c in folds)
    assert refit == {"n_train": n, "val": None, "epochs": expected, "lr_schedule": "paper"}
    cfg = out["config"]
    assert cfg["profile"] == "paper" and cfg["refit"] == {"rule": "mean_epochs", "epochs": expected,
                                                          "fold_epochs": [3, 4, 4] if rule == "stopped" else [1, 2, 2]}
    assert cfg["search"]["storage"] == "in-memory" and cfg["n_val"] == 0
    assert (tmp_path / "demo" / "models" / "resnet18" / "trials.csv").exists()


def test_search_resumes_the_study_in_the_default_journal(tmp_path, monkeypatch):
    """`python -m sts_utils.search` leaves a study in the default journal; the refit takes its best trial."""
    x, y = easy_set(3)
    run = resolve_profile("cpu_small", "demo", "resnet18", {"n_trials": 2, "n_folds": 2, "trial_epochs": 1, "epochs": 1,
                                                       "image_size": 32, "pretrained": "none"})
    base = TrainConfig.from_run(run, "resnet18")
    spec = search.default_storage("demo", "resnet18", tmp_path)
    best, trials, attrs = training.search_hyperparameters(x, y, base, 2, 2, 1, progress=False, settings=run, storage=spec,
                                                          study_name="s")
    assert len(trials) == 2 and set(trials["user_attrs_gpu"]) == {"cpu"} and len(attrs["fold_epochs"]) == 2
    again, trials2, _ = training.search_hyperparameters(x, y, base, 2, 2, 1, progress=False, settings=run, storage=spec,
                                                        study_name="s")
    assert again == best and len(trials2) == 2  # finished study: no new trial


@pytest.mark.slow
def test_the_refit_takes_the_study_that_search_workers_filled(tiny_demo, tmp_path, postgres_url):
    """`make search` (``python -m sts_utils.search``, 2 worker processes) fills one study on a PostgreSQL server; the
    refit of `make train` (``run_finetuning``, what notebook 04 calls) finds it by name and refits its best setting.
    (The journal file's refit: test_search_resumes_the_study_in_the_default_journal.)"""
    search_storage = postgres_url
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    params = ["N_TRIALS=2", "N_FOLDS=2", "TRIAL_EPOCHS=1", "EPOCHS=1", "IMAGE_SIZE=32", "PRETRAINED=none"]
    cmd = [sys.executable, "-m", "sts_utils.search", "--dataset", "demo", "--backbone", "resnet18", "--data-dir",
           str(data), "--profile", "cpu_small", "--n-workers", "2", "--storage", search_storage, "--no-progress",
           *[a for p in params for a in ("--param", p)]]
    out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ": 2 trials, 2 workers on CPU" in out.stdout and "done: 2 complete" in out.stdout
    run = resolve_profile("cpu_small", "demo", "resnet18", dict(search.parse_param(p) for p in params))
    result = training.run_finetuning("demo", "resnet18", data, base=TrainConfig.from_run(run, "resnet18"), settings=run,
                                     storage=search_storage, progress=False)
    cfg = result["config"]["search"]
    assert f"study {cfg['study_name']} in {search_storage}" in out.stdout  # the same study, found by name
    study = optuna.load_study(study_name=cfg["study_name"], storage=search.open_storage(search_storage))
    assert len(study.trials) == 2  # the refit searched no further
    assert cfg["storage"] == search_storage and cfg["best_params"] == study.best_params
    assert result["config"]["train"]["lr"] == study.best_params["lr"]
    trials = pd.read_csv(data / "demo" / "models" / "resnet18" / "trials.csv")
    assert sorted(trials["number"]) == [0, 1] and set(trials["user_attrs_worker"]) <= {0, 1}
