"""Hyperparameter search across processes and machines: the launcher of the workers, and its command line.

Stage, without torch (it must start without loading CUDA): it resolves the run (:mod:`sts_utils.data.profiles`),
names the study, starts the workers (``python -m sts_utils.stages.search_worker``, each one process running the
CNN objective of :mod:`sts_utils.stages.training`) and shows the study's progress from its storage
(:mod:`sts_utils.data.studies`, where storage, workers and how to watch a search are described).

Command line
    ``python -m sts_utils.stages.search --dataset allen --backbone resnet18 [--n-workers K]`` starts K local
    workers (by default ``TRIALS_PER_GPU`` per visible GPU, each with its own ``CUDA_VISIBLE_DEVICES``;
    1 on a machine without GPUs) and shows the study's progress until it has ``n_trials`` complete trials.
    Run the same command on other machines with a shared ``--storage`` to add their GPUs.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import optuna
from tqdm import tqdm

from sts_utils.core.config import progress_stream
from sts_utils.core.parameters import TRAINING_PAGE, training_page_parameters
from sts_utils.data.profiles import PAGE_ONLY_PARAMETERS, PROFILES, PRUNERS, data_hashes, resolve_profile, settings_key, study_name
from sts_utils.data.studies import count_trials, open_storage, storage_spec, study_exists


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


def parse_param(text: str, accepted: Iterable[str] | None = None) -> tuple[str, object]:
    """``NAME=VALUE`` (a parameter of the training page) -> (settings key, Python value).

    ``accepted``: the names allowed (default: the training page's parameters that are settings of a run);
    another name is refused in one line that names the page and its parameters.
    """
    if "=" not in text:
        raise ValueError(f"--param needs NAME=VALUE, got {text!r}")
    name, raw = (part.strip() for part in text.split("=", 1))
    accepted = sorted(training_settings() if accepted is None else accepted)
    if name not in accepted:
        close = difflib.get_close_matches(name, accepted, n=1)
        raise ValueError(f"--param {name}{f' (did you mean {close[0]}?)' if close else ''}: not a setting of {TRAINING_PAGE}; "
                         f"its settings are {', '.join(accepted)}")
    key = settings_key(name)
    if raw in ("None", "null", ""):  # papermill's None; the string "none" (PRETRAINED=none) stays a string
        return key, None
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


def training_settings() -> list[str]:
    """The training page's parameters that are settings of a run (what ``--param`` accepts)."""
    return [p for p in training_page_parameters() if p not in PAGE_ONLY_PARAMETERS]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sts_utils.stages.search",
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
                    help=f"a parameter of {TRAINING_PAGE} (EPOCHS=5, TRIAL_EPOCHS=2, PRETRAINED=none, ...; no other "
                         "name is accepted); repeatable")
    ap.add_argument("--log-dir", default=None, help="write each worker's output to worker<k>.log there")
    ap.add_argument("--no-progress", action="store_true")
    return ap


#: Training-page parameters that ``make search`` forwards as ``--param`` but that are options of this command.
_OPTION_PARAMETERS = {"PROFILE": "profile", "OPTUNA_STORAGE": "storage"}


def cli_overrides(args: argparse.Namespace) -> dict:
    """The settings a command line asks for: its ``--param`` values and the options ``--n-trials``/``--pruner``.

    ``--param PROFILE=…`` and ``--param OPTUNA_STORAGE=…`` (what make forwards) set ``args.profile`` and
    ``args.storage``. An option that is not given leaves the ``--param`` value (or the profile's) alone; an
    option that contradicts a ``--param`` of the same setting is refused, never silently preferred.
    """
    settings = []
    for text in args.param:
        name, _, value = text.partition("=")
        option = _OPTION_PARAMETERS.get(name.strip())
        if option is None:
            settings.append(text)
            continue
        given = getattr(args, option)
        if given not in (None, "auto") and given != value.strip():
            raise SystemExit(f"--{option} {given} and --param {text} disagree: give the setting once")
        setattr(args, option, value.strip() or None)
    try:
        accepted = training_settings() if settings else []  # the page is read once, and only when needed
        overrides = dict(parse_param(p, accepted) for p in settings)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
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
    open_storage(spec)  # creates a database's schema (or the journal file) once, before the workers open it at once
    name = study_name(args.dataset, args.backbone, run, data_hashes(args.dataset, args.data_dir), args.repeat)
    envs = worker_envs(args.n_workers, gpus, args.trials_per_gpu)
    run_json = json.dumps({k: v for k, v in run.items()}, default=list)
    commands = [[sys.executable, "-m", "sts_utils.stages.search_worker", "--dataset", args.dataset, "--backbone", args.backbone,
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
