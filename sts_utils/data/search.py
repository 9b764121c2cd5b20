"""Hyperparameter search on Optuna: run profiles, search spaces, shared storage, workers and their launcher.

This module holds everything of the search that does not need torch (the LightGBM stage uses
:func:`suggest`, and the launcher must start without loading CUDA); the CNN objective itself lives in
:mod:`sts_utils.stages.training`.

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

Storage (``OPTUNA_STORAGE`` or ``--storage``)
    A file path is an Optuna journal file (``JournalStorage`` + ``JournalFileBackend`` with an
    ``O_EXCL`` open lock, safe for processes on one machine and for machines sharing the file over
    NFSv3+); a SQLAlchemy URL is an RDB storage: ``postgresql+psycopg://user@host/db`` (the ``postgres``
    extra's driver; the tests run a real PostgreSQL server), ``mysql://...``, ``sqlite:///...``.
    Default: ``<data_dir>/<dataset>/models/<backbone>/study.journal``. The study is named after the
    dataset, backbone, profile, split repeat, a short hash of the training data (SHA-256 of
    ``scalograms.npy`` and ``splits.csv``) and a short hash of the search settings, so a rerun with the
    same data and settings resumes the same study (``n_trials`` is not part of the name: raising it
    continues the study).

Workers
    Any number of workers, on any number of machines, join a study, each through Optuna's public API
    (``study.optimize`` stopped by ``MaxTrialsCallback`` once COMPLETE plus RUNNING trials fill
    ``n_trials``), so the workers stop with exactly ``n_trials`` complete trials between them (in the
    rare race where two workers take the last slot at once, the later trial is marked FAIL with
    ``user_attrs['surplus']`` before it runs and is never counted). A killed worker loses only its
    running trial, which is failed and queued again with the same parameters (Optuna's
    ``RetryHeartbeatStaleTrialCallback``, at most :data:`MAX_RETRY` times; the copy's
    ``system_attrs['failed_trial']`` names the original): on an RDB storage by Optuna's heartbeat
    (``heartbeat_interval`` 60 s, failed after 180 s of silence by the next worker to start a trial);
    a journal file has no heartbeat, so there a worker fails the RUNNING trials of dead processes of its
    own host when it starts and while it waits. **Limit**: on a journal shared by several machines, the
    trial of a worker killed on another machine stays RUNNING until a worker starts on that machine
    again (use an RDB storage across machines). Failed and pruned trials are not counted. Every trial
    records ``host``, ``pid``, ``gpu`` and ``worker`` in its user attributes (columns of ``trials.csv``).

Watching a search
    ``optuna-dashboard`` (the ``dashboard`` extra, in the lock) reads the same storage while workers run::

        optuna-dashboard data/allen/models/resnet18/study.journal     # the default journal file
        optuna-dashboard postgresql+psycopg://user@host/sts          # an RDB storage

    and serves http://127.0.0.1:8080 with each study's trials, parameters, intermediate fold scores and
    the importance of each hyperparameter (on a remote machine: ``ssh -L 8080:localhost:8080 host``).

Command line
    ``python -m sts_utils.data.search --dataset allen --backbone resnet18 [--n-workers K]`` starts K local
    workers (by default ``TRIALS_PER_GPU`` per visible GPU, each with its own ``CUDA_VISIBLE_DEVICES``;
    1 on a machine without GPUs) and shows the study's progress until it has ``n_trials`` complete trials.
    Run the same command on other machines with a shared ``--storage`` to add their GPUs.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from sts_utils.core.config import dataset_dir, logger, progress_stream
from sts_utils.core.errors import SurplusTrial
from sts_utils.core.io import file_sha256

#: Image size of each backbone in the paper (torchvision's input sizes).
PAPER_IMAGE_SIZE = {"resnet18": 224, "inception_v3": 299, "densenet121": 224, "mobilenet_v2": 224}

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

#: Settings of a run that go to :class:`sts_utils.stages.training.TrainConfig`; the rest steer the search and refit.
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

#: Run profiles of notebook 04 and of ``python -m sts_utils.data.search``.
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
    "gpu_small": {**_PROTOCOL_COMPENDIUM, "image_size": dict(PAPER_IMAGE_SIZE),
                  "epochs": 50, "batch_size": 16, "lr": 1e-4, "patience": 7, "n_trials": 20, "n_folds": 3,
                  "trial_epochs": 15},
    # the paper's protocol (see the module docstring); searched values are drawn per trial
    "paper": {
        "space": "paper", "protocol": "inner_holdout", "fold_seed": 42, "inner_val_fraction": 0.2,
        "refit": "mean_epochs", "refit_epochs": "stopped", "pruner": "none", "n_startup_trials": 10,
        "image_size": dict(PAPER_IMAGE_SIZE), "epochs": 1000, "batch_size": 32, "lr": 1e-3, "lr_decay": 0.0,
        "decay_period": 10, "patience": 10, "dropout": 0.0, "class_weights": False, "freeze": "NONE",
        "pretrained": "imagenet", "seed": 42, "val_fraction": 0.2, "lr_schedule": "paper", "min_improvement": 0.05,
        "restore_best": False, "compile": False, "channel_map": (0, 1, 0), "device": None,
        "n_trials": 50, "n_folds": 3, "trial_epochs": None,
    },
}
PRUNERS = ("none", "median", "hyperband")

#: Notebook 04 parameter -> key of a run's settings (what ``--param NAME=VALUE`` accepts).
NOTEBOOK_PARAMS = {
    "IMAGE_SIZE": "image_size", "EPOCHS": "epochs", "BATCH_SIZE": "batch_size", "LR": "lr", "LR_DECAY": "lr_decay",
    "DECAY_PERIOD": "decay_period", "PATIENCE": "patience", "DROPOUT": "dropout", "CLASS_WEIGHTS": "class_weights",
    "N_TRIALS": "n_trials", "N_FOLDS": "n_folds", "TRIAL_EPOCHS": "trial_epochs", "PRETRAINED": "pretrained",
    "FREEZE": "freeze", "DEVICE": "device", "TRAIN_SEED": "seed", "PRUNER": "pruner", "COMPILE": "compile",
}
#: Settings that change neither the data nor the search, so they are left out of the study name.
_NOT_IN_NAME = ("n_trials", "device", "compile", "profile")
#: RDB storages: a running trial's heartbeat interval (s); one silent for 3 intervals is failed and retried.
HEARTBEAT_S = 60
#: How many times a trial whose worker died is run again with the same parameters before it stays failed
#: (a setting that kills its worker, e.g. by exhausting the host's memory, must not be retried forever).
MAX_RETRY = 2


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
    if backbone not in PAPER_IMAGE_SIZE:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(PAPER_IMAGE_SIZE)}")
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
        if run["space"] not in SPACES:
            raise ValueError(f"unknown search space {run['space']!r}; expected one of {', '.join(SPACES)}")
        run["space_name"], run["space"] = run["space"], SPACES[run["space"]]
    else:
        run["space_name"] = "custom"
    if run["pruner"] not in PRUNERS:
        raise ValueError(f"unknown pruner {run['pruner']!r}; expected one of {', '.join(PRUNERS)}")
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


# -------------------------------------------------------------------------------------------- storage
def default_storage(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None) -> str:
    return str(dataset_dir(dataset, data_dir) / "models" / backbone / "study.journal")


def storage_spec(storage: str | os.PathLike | None, dataset: str, backbone: str,
                 data_dir: str | os.PathLike | None = None) -> tuple[str, bool]:
    """The storage to use and whether it was asked for (argument, else ``$OPTUNA_STORAGE``) or is the default."""
    if storage not in (None, ""):
        return str(storage), True
    env = os.environ.get("OPTUNA_STORAGE", "")
    if env:
        return env, True
    return default_storage(dataset, backbone, data_dir), False


def is_url(spec: str) -> bool:
    return "://" in str(spec)


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's retry of a trial whose worker died: a WAITING copy with the same parameters (:data:`MAX_RETRY`)."""
    with warnings.catch_warnings():  # flagged experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def open_storage(spec: str | os.PathLike, heartbeat_s: int = HEARTBEAT_S) -> optuna.storages.BaseStorage:
    """An Optuna storage: RDB for a URL, a journal file (process-safe lock) for a path.

    Parameters
    ----------
    spec
        A SQLAlchemy URL (``postgresql+psycopg://user@host/db``, ``sqlite:///file.db``, ...) or a file path.
    heartbeat_s
        RDB only: the heartbeat interval of running trials; a trial without one for ``3 * heartbeat_s``
        seconds is failed (``fail_stale_trials``, run by every worker before each trial) and retried by
        :func:`retry_callback`. A journal file has no heartbeat (see :func:`fail_stale_trials`).
    """
    spec = str(spec)
    if is_url(spec):
        with warnings.catch_warnings():  # heartbeat_interval is flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(spec, heartbeat_interval=int(heartbeat_s),
                                                  grace_period=3 * int(heartbeat_s),
                                                  heartbeat_stale_trial_callback=retry_callback())
            except ModuleNotFoundError as exc:  # SQLAlchemy imports the URL's driver here
                raise ModuleNotFoundError(
                    f"no database driver for {spec.split('://')[0]}:// ({exc}); for PostgreSQL install the postgres "
                    "extra (pip install -e '.[postgres]') and write the URL as postgresql+psycopg://user@host/db"
                ) from exc
            except sqlalchemy.exc.OperationalError as exc:  # no such folder, no server, refused login
                detail = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
                raise ValueError(f"OPTUNA_STORAGE={spec}: the database cannot be opened ({detail}); check the "
                                 "path's folder exists (sqlite:////absolute/path.db) or the server is up and "
                                 "reachable, or give a journal file path instead") from None
    path = Path(spec).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = optuna.storages.journal.JournalFileOpenLock(str(path))
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock))


def study_exists(spec: str, name: str) -> bool:
    if not is_url(spec) and not Path(spec).expanduser().is_file():
        return False
    try:
        return name in optuna.study.get_all_study_names(open_storage(spec))
    except Exception:  # noqa: BLE001 - an unreachable database or an unreadable file: no study to use
        return False


def make_pruner(name: str):
    name = str(name).lower()
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    raise ValueError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")


# -------------------------------------------------------------------------------------------- workers
def worker_attrs(rank: int = 0) -> dict:
    """Who runs a trial: host, process, GPU (``CUDA_VISIBLE_DEVICES`` as set by the launcher) and worker rank."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"host": socket.gethostname(), "pid": os.getpid(), "gpu": "cpu" if gpu in (None, "", "-1") else gpu,
            "worker": int(rank)}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError):
        return True
    return True


def _running(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def fail_stale_trials(study: optuna.Study, storage: str, heartbeat_s: int = HEARTBEAT_S) -> list[int]:
    """Fail the RUNNING trials of dead workers and queue a retry of each (:func:`retry_callback`).

    On an RDB storage this is Optuna's heartbeat (``optuna.storages.fail_stale_trials``). A journal file has
    none, so there a trial is failed when it runs on this host in a process that no longer exists and
    started at least ``heartbeat_s`` ago (a retry just taken by a live worker still carries, for a moment,
    the attributes of the worker that died). The limit: the trial of a worker killed on another machine
    sharing the journal stays RUNNING until a worker starts on that machine again (use an RDB storage there).

    Returns
    -------
    list of int
        The numbers of the trials failed by this call (on an RDB storage: those RUNNING before it and FAIL
        after it, so for the log only).
    """
    before = {t.number for t in _running(study)}
    if is_url(storage):
        with warnings.catch_warnings():  # flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        failed = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                        if t.number in before)
    else:
        host, now, failed, retry = socket.gethostname(), datetime.now(), [], retry_callback()
        for t in _running(study):
            a = t.user_attrs
            if a.get("host") != host or "pid" not in a or int(a["pid"]) == os.getpid() or _pid_alive(int(a["pid"])):
                continue
            if t.datetime_start is not None and (now - t.datetime_start).total_seconds() < heartbeat_s:
                continue
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker failed it first
            retry(study, study.get_trials(deepcopy=False)[t.number])
            failed.append(t.number)
    if failed:
        logger.warning("failed stale trials %s of %s (their worker died); each is queued again", failed,
                       study.study_name)
    return failed


def count_trials(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}


def run_worker(objective: Callable, n_trials: int, name: str | None = None, storage: str | None = None,
               sampler: optuna.samplers.BaseSampler | None = None, pruner: optuna.pruners.BasePruner | None = None,
               rank: int = 0, seed: int = 0, n_startup_trials: int = 10, progress: bool = True,
               catch: tuple[type[Exception], ...] = (), poll_s: float = 5.0, desc: str = "search",
               user_attrs: dict | None = None, heartbeat_s: int = HEARTBEAT_S) -> optuna.Study:
    """Join (or create) a study and run trials until it has ``n_trials`` COMPLETE trials in total.

    Parameters
    ----------
    objective
        ``objective(trial) -> float`` (maximised); ``optuna.TrialPruned`` prunes the trial.
    n_trials
        COMPLETE trials the study must have, counting those of every worker (failed, pruned and surplus
        trials do not count).
    name, storage
        The study and its storage (:func:`open_storage`); ``storage=None`` is a private in-memory study
        (the notebook's in-process search).
    sampler
        Default: TPE seeded with ``seed + rank`` (offset on a resumed study, so it does not replay the
        first run's start-up points), ``min(n_startup_trials, n_trials)`` random start-up trials.
    catch
        Exceptions that fail the trial while the worker goes on; any other exception fails the trial and
        is raised.
    poll_s
        While every remaining slot is taken by a running trial of another worker, how often to look again
        (so that this worker takes over the retry of a trial whose worker dies).
    user_attrs
        Extra user attributes of every trial of this worker (with a shared storage).
    heartbeat_s
        See :func:`open_storage` and :func:`fail_stale_trials`.

    Notes
    -----
    Trials run through ``study.optimize`` (with Optuna's heartbeat thread on an RDB storage), which
    ``MaxTrialsCallback`` stops once COMPLETE plus RUNNING trials fill ``n_trials``. With a shared storage
    each trial records :func:`worker_attrs`, and a trial that finds ``n_trials`` trials before it complete,
    running or queued (two workers took the last slot at once) is failed with ``user_attrs['surplus']``
    before it runs, so the workers stop with exactly ``n_trials`` complete trials between them.
    """
    shared = storage is not None
    opened = open_storage(storage, heartbeat_s) if shared else None  # once: an RDB storage is an engine and a pool
    if sampler is None:
        # a resumed study must not replay the startup points of the first run: offset the seed
        offset = 0
        if shared and name in optuna.study.get_all_study_names(opened):
            offset = len(optuna.load_study(study_name=name, storage=opened).trials)
        sampler = optuna.samplers.TPESampler(seed=seed + rank + 7919 * offset,
                                             n_startup_trials=min(n_startup_trials, max(n_trials, 1)))
    study = optuna.create_study(study_name=name, storage=opened,
                                direction="maximize", sampler=sampler, pruner=pruner or optuna.pruners.NopPruner(),
                                load_if_exists=True)
    bar = tqdm(total=n_trials, desc=desc, disable=not progress, file=progress_stream())

    def show(study: optuna.Study, _trial: FrozenTrial | None = None) -> None:
        bar.n = min(count_trials(study)["complete"], n_trials)
        bar.refresh()

    def run_trial(trial: optuna.Trial) -> float:
        if shared:
            for k, v in {**worker_attrs(rank), **(user_attrs or {})}.items():
                trial.set_user_attr(k, v)
            ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                             TrialState.WAITING))
            if sum(t.number < trial.number for t in ahead) >= n_trials:
                trial.set_user_attr("surplus", True)
                raise SurplusTrial(f"trial {trial.number}: the {n_trials} slots of {name} were taken meanwhile")
        return objective(trial)

    stop_when_full = optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.RUNNING))
    show(study)
    while True:
        if shared:
            fail_stale_trials(study, storage, heartbeat_s)
        counts = count_trials(study)
        if counts["complete"] >= n_trials:
            break
        if counts["complete"] + counts["running"] >= n_trials:
            time.sleep(poll_s)  # the last slots are taken; take over one if its worker dies
            continue
        study.optimize(run_trial, catch=(*catch, SurplusTrial), callbacks=[stop_when_full, show])
    bar.close()
    return study


# ------------------------------------------------------------------------------------------- launcher
def visible_gpus() -> list[str]:
    """Indices of the GPUs this process may use (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``), without torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() not in ("", "-1")]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def worker_envs(n_workers: int | None, gpus: Sequence[str], trials_per_gpu: int = 1) -> list[dict]:
    """Environment additions of each worker: ``CUDA_VISIBLE_DEVICES`` round-robin over ``gpus``."""
    if trials_per_gpu < 1:
        raise ValueError(f"trials_per_gpu must be >= 1, got {trials_per_gpu}")
    if n_workers is None:
        n_workers = len(gpus) * trials_per_gpu if gpus else 1
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    if not gpus:
        return [{"CUDA_VISIBLE_DEVICES": ""} for _ in range(n_workers)]
    return [{"CUDA_VISIBLE_DEVICES": str(gpus[i % len(gpus)])} for i in range(n_workers)]


def launch_workers(commands: Sequence[Sequence[str]], envs: Sequence[dict], name: str, storage: str, n_trials: int,
                   progress: bool = True, poll_s: float = 5.0, log_dir: str | os.PathLike | None = None) -> int:
    """Start one process per command (with its env additions), show the study's progress, wait for all.

    Returns the first non-zero exit status (0 when every worker succeeded). Ctrl-C stops the workers
    (their running trials stay RUNNING and are failed as stale by the next worker).
    """
    procs, logs = [], []
    for i, (cmd, extra) in enumerate(zip(commands, envs)):
        out = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(log_dir) / f"worker{i}.log", "ab")  # noqa: SIM115 - closed below
            logs.append(out)
        procs.append(subprocess.Popen(list(cmd), env={**os.environ, **extra}, stdout=out, stderr=out))
    bar = tqdm(total=n_trials, desc=f"{name} ({len(procs)} workers)", disable=not progress, file=progress_stream())
    opened = None  # opened once the workers made the study (an RDB storage per poll would cost a connection each)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            if opened is None and study_exists(storage, name):
                opened = open_storage(storage)
            if opened is not None:
                study = optuna.load_study(study_name=name, storage=opened)
                c = count_trials(study)
                bar.n = min(c["complete"], n_trials)
                bar.set_postfix(running=c["running"], failed=c["fail"], pruned=c["pruned"])
                bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        raise
    finally:
        bar.close()
        for f in logs:
            f.close()
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)


def parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` (a notebook parameter name or a settings key) -> (settings key, Python value)."""
    if "=" not in text:
        raise ValueError(f"--param needs NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    key = NOTEBOOK_PARAMS.get(name.strip(), name.strip().lower())
    raw = raw.strip()
    if raw in ("None", "null", ""):  # papermill's None; the string "none" (PRETRAINED=none) stays a string
        return key, None
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sts_utils.data.search",
        description="Hyperparameter search of one backbone on shared Optuna storage: starts local workers and waits. "
                    "Run it on several machines with one --storage to pool their GPUs; `make train` then refits the best "
                    "setting of the finished study without searching again.")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--data-dir", default=None, help="data folder (default: $STS_DATA_DIR or ./data)")
    ap.add_argument("--repeat", type=int, default=0, help="split repeat (default 0)")
    ap.add_argument("--profile", default="auto", help=f"auto, {', '.join(PROFILES)} (default auto)")
    ap.add_argument("--n-trials", type=int, default=None, help="complete trials wanted in total (default: the profile's)")
    ap.add_argument("--n-workers", type=int, default=None,
                    help="local worker processes (default: TRIALS_PER_GPU per visible GPU, 1 without GPUs)")
    ap.add_argument("--trials-per-gpu", type=int, default=int(os.environ.get("TRIALS_PER_GPU", 1)),
                    help="workers sharing one GPU (default $TRIALS_PER_GPU or 1)")
    ap.add_argument("--storage", default=None,
                    help="journal file path or database URL (default $OPTUNA_STORAGE, else "
                         "<data>/<dataset>/models/<backbone>/study.journal)")
    ap.add_argument("--pruner", default=None, choices=PRUNERS, help="default: the profile's (paper: none)")
    ap.add_argument("--seed", type=int, default=0, help="the compendium SEED (used when the profile pins no seed)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a notebook-04 parameter (EPOCHS=5, TRIAL_EPOCHS=2, PRETRAINED=none, ...); repeatable")
    ap.add_argument("--log-dir", default=None, help="write each worker's output to worker<k>.log there")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def cli_overrides(args: argparse.Namespace) -> dict:
    """The settings a command line asks for: its ``--param`` values and the options ``--n-trials``/``--pruner``.

    An option that is not given leaves the ``--param`` value (or the profile's) alone; an option that
    contradicts a ``--param`` of the same setting is refused, never silently preferred.
    """
    overrides = dict(parse_param(p) for p in args.param)
    for key, option in (("n_trials", "--n-trials"), ("pruner", "--pruner")):
        value = getattr(args, key)
        if value is None:
            continue
        if key in overrides and overrides[key] != value:
            raise SystemExit(f"{option} {value} and --param {key.upper()}={overrides[key]} disagree: give the setting once")
        overrides[key] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = cli_overrides(args)
    gpus = visible_gpus()
    run = resolve_profile(args.profile, args.dataset, args.backbone, overrides, cuda_available=bool(gpus),
                          default_seed=args.seed)
    spec, _ = storage_spec(args.storage, args.dataset, args.backbone, args.data_dir)
    name = study_name(args.dataset, args.backbone, run, data_hashes(args.dataset, args.data_dir), args.repeat)
    envs = worker_envs(args.n_workers, gpus, args.trials_per_gpu)
    run_json = json.dumps({k: v for k, v in run.items()}, default=list)
    commands = [[sys.executable, "-m", "sts_utils.stages.training", "--dataset", args.dataset, "--backbone", args.backbone,
                 "--repeat", str(args.repeat), "--storage", spec, "--study-name", name, "--settings", run_json,
                 "--rank", str(i)] + (["--data-dir", str(args.data_dir)] if args.data_dir else [])
                for i in range(len(envs))]
    where = f"GPUs {', '.join(sorted({e['CUDA_VISIBLE_DEVICES'] for e in envs}))}" if gpus else "CPU"
    print(f"study {name} in {spec}: {run['n_trials']} trials, {len(envs)} workers on {where} "
          f"(profile {run['profile']}, pruner {run['pruner']})", flush=True)
    code = launch_workers(commands, envs, name, spec, run["n_trials"], progress=not args.no_progress,
                          log_dir=args.log_dir)
    if code == 0 and study_exists(spec, name):
        study = optuna.load_study(study_name=name, storage=open_storage(spec))
        c = count_trials(study)
        print(f"done: {c['complete']} complete, {c['fail']} failed, {c['pruned']} pruned; best "
              f"{study.best_value:.4f} with {study.best_params}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
