"""Optuna studies of the hyperparameter search: their shared storage, stale trials, and the worker loop.

Without torch (the launcher, :mod:`sts_utils.stages.search`, must start without loading CUDA); the CNN
objective that a worker runs lives in :mod:`sts_utils.stages.training`, the run profiles and study names in
:mod:`sts_utils.data.profiles`.

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
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from sts_utils.core.config import check_choice, dataset_dir, logger, progress_stream
from sts_utils.core.errors import SurplusTrial
from sts_utils.data.profiles import PRUNERS

#: RDB storages: a running trial's heartbeat interval (s); one silent for 3 intervals is failed and retried.
HEARTBEAT_S = 60
#: How many times a trial whose worker died is run again with the same parameters before it stays failed
#: (a setting that kills its worker, e.g. by exhausting the host's memory, must not be retried forever).
MAX_RETRY = 2


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


#: Openings of an RDB storage tried when another process is creating the same database's schema at that moment.
SCHEMA_ATTEMPTS = 5


def _lost_schema_race(exc: sqlalchemy.exc.DBAPIError) -> bool:
    """Whether opening a database failed because another process was creating Optuna's schema at that moment.

    Workers started at once on an empty database each create it; the others then fail on a unique key
    (``alembic_version``: an IntegrityError) or on an object that now exists (PostgreSQL's ``type
    "studydirection" already exists``: a ProgrammingError), both seen in CI. The schema is there then.
    """
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc.orig)


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
                for attempt in range(SCHEMA_ATTEMPTS):
                    try:
                        return optuna.storages.RDBStorage(spec, heartbeat_interval=int(heartbeat_s),
                                                          grace_period=3 * int(heartbeat_s),
                                                          heartbeat_stale_trial_callback=retry_callback())
                    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                            sqlalchemy.exc.OperationalError) as exc:
                        if not _lost_schema_race(exc) or attempt == SCHEMA_ATTEMPTS - 1:
                            raise
                        time.sleep(0.5 * (attempt + 1))
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
    name = check_choice(str(name).lower(), PRUNERS, "pruner")
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return optuna.pruners.HyperbandPruner(min_resource=1)  # "hyperband"


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
