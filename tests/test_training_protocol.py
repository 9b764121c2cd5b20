"""Training protocols: the demo path is unchanged bit for bit, learning-rate decay, the paper's refit epochs,
the refit from a study that `make search` workers filled."""
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

from sts_utils.data import studies
from sts_utils.stages import search
from sts_utils.stages import training
from sts_utils.core.config import CLASSES
from sts_utils.data.models import TORCH_CPU_THREADS
from sts_utils.stages.fit import TrainConfig, fit
from sts_utils.stages.training import refit_epochs, resolve_profile

from .conftest import ROOT
from .test_models import easy_set

sys.path.insert(0, str(ROOT / "tools"))
import references  # noqa: E402  (tools/ is not a package)


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("STS_OFFLINE", "1")
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)


@pytest.mark.parametrize("process_threads", [1, 2])
def test_demo_cpu_fit_equals_its_committed_reference_history(process_threads):
    """The demo's CPU fit, epoch by epoch, against the history committed with it (make update-references),
    whatever torch thread count the process had before (a model runs single-threaded: the same numbers on
    a machine with any number of cores)."""
    torch.set_num_threads(process_threads)
    history, best = references.tiny_fit()
    assert torch.get_num_threads() == TORCH_CPU_THREADS
    reference = pd.read_csv(references.TINY_FIT_DIR / "history.csv")
    assert best == int(reference["best_epoch"].iloc[0])
    pd.testing.assert_frame_equal(history[["epoch", "train_loss", "val_loss", "val_balanced_accuracy", "lr"]],
                                  reference[["epoch", "train_loss", "val_loss", "val_balanced_accuracy", "lr"]],
                                  check_exact=False, rtol=1e-6, check_dtype=False)


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
    with pytest.raises(ValueError, match=r"need lr > 0 and 0 <= lr_decay <= 1 \(0: no decay\), got 0.0001, -0.1"):
        TrainConfig(lr_decay=-0.1)
    with pytest.raises(ValueError, match=r"^lr_schedule must be one of step, paper, got 'cosine'$"):
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
    """`python -m sts_utils.stages.search` leaves a study in the default journal; the refit takes its best trial."""
    x, y = easy_set(3)
    run = resolve_profile("cpu_small", "demo", "resnet18", {"n_trials": 2, "n_folds": 2, "trial_epochs": 1, "epochs": 1,
                                                       "image_size": 32, "pretrained": "none"})
    base = TrainConfig.from_run(run, "resnet18")
    spec = studies.default_storage("demo", "resnet18", tmp_path)
    best, trials, attrs = training.search_hyperparameters(x, y, base, 2, 2, 1, progress=False, settings=run, storage=spec,
                                                          study_name="s")
    assert len(trials) == 2 and set(trials["user_attrs_gpu"]) == {"cpu"} and len(attrs["fold_epochs"]) == 2
    again, trials2, _ = training.search_hyperparameters(x, y, base, 2, 2, 1, progress=False, settings=run, storage=spec,
                                                        study_name="s")
    assert again == best and len(trials2) == 2  # finished study: no new trial


@pytest.mark.slow
def test_the_refit_takes_the_study_that_search_workers_filled(tiny_demo, tmp_path, postgres_url):
    """`make search` (``python -m sts_utils.stages.search``, 2 worker processes) fills one study on a PostgreSQL server; the
    refit of `make train` (``run_finetuning``, what notebook 04 calls) finds it by name and refits its best setting.
    (The journal file's refit: test_search_resumes_the_study_in_the_default_journal.)"""
    search_storage = postgres_url
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    params = ["N_TRIALS=2", "N_FOLDS=2", "TRIAL_EPOCHS=1", "EPOCHS=1", "IMAGE_SIZE=32", "PRETRAINED=none"]
    cmd = [sys.executable, "-m", "sts_utils.stages.search", "--dataset", "demo", "--backbone", "resnet18", "--data-dir",
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
    study = optuna.load_study(study_name=cfg["study_name"], storage=studies.open_storage(search_storage))
    assert len(study.trials) == 2  # the refit searched no further
    assert cfg["storage"] == search_storage and cfg["best_params"] == study.best_params
    assert result["config"]["train"]["lr"] == study.best_params["lr"]
    trials = pd.read_csv(data / "demo" / "models" / "resnet18" / "trials.csv")
    assert sorted(trials["number"]) == [0, 1] and set(trials["user_attrs_worker"]) <= {0, 1}
