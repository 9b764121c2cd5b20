"""Search settings and shared-storage workers: the paper's profile, study naming, exact trial counts, crash recovery.

The multi-worker tests run each on a journal file and on a real PostgreSQL server (``postgres_url`` of
tests/conftest.py: a throwaway server from the system binaries; skipped outside CI when they are absent).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import optuna
import sqlalchemy.exc
import pytest
from optuna.trial import TrialState

from sts_utils.core import parameters
from sts_utils.data import profiles, studies
from sts_utils.stages import search
from tests import postgres

ROOT = Path(__file__).resolve().parents[1]

# a tiny objective run through the project's real worker loop (studies.run_worker), storage and stopping rule
WORKER = textwrap.dedent("""
    import os, sys, time
    from sts_utils.data import studies
    storage, name, n, sleep, log, rank = sys.argv[1:7]
    # a 1 s heartbeat: a killed worker's trial is stale after 3 s (60 s and 180 s in a real search)
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        with open(log, "a") as f:
            f.write(f"{trial.number} {os.getpid()}\\n")
        time.sleep(float(sleep) if trial.number > 0 or rank != "slow" else 60)
        return x
    studies.run_worker(objective, int(n), name=name, storage=storage, rank=0 if rank == "slow" else int(rank),
                      progress=False, poll_s=0.2, heartbeat_s=1)
""")


def worker_cmd(tmp_path, storage, name, n, sleep, rank):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return [sys.executable, str(script), str(storage), name, str(n), str(sleep), str(tmp_path / "log.txt"), str(rank)]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run_workers(tmp_path, storage, name, n, ranks, sleep=0.3) -> optuna.Study:
    cmds = [worker_cmd(tmp_path, storage, name, n, sleep, rank) for rank in ranks]
    code = search.launch_workers(cmds, [{"PYTHONPATH": str(ROOT)}] * len(cmds), name, storage, n, progress=False,
                                 poll_s=0.2)
    assert code == 0
    return optuna.load_study(study_name=name, storage=studies.open_storage(storage))


def logged_runs(tmp_path) -> list[tuple[int, int]]:
    """(trial number, pid) of every objective call of the test's workers."""
    return [tuple(map(int, line.split())) for line in (tmp_path / "log.txt").read_text().splitlines()]


def test_paper_profile_is_the_papers_protocol():
    run = profiles.resolve_profile("paper", "allen", "resnet18", {})
    assert run["space"] == {
        "batch_size": ("categorical", [32, 64]),
        "lr": ("log", 1e-3, 0.08),
        "lr_decay": ("categorical", [0.0, 0.01, 0.1]),  # 0 = no decay
        "decay_period": ("int", 5, 20),
        "patience": ("int", 10, 20),
        "dropout": ("categorical", [0.0, 0.3, 0.5, 0.7]),
    }
    expected = {"n_trials": 50, "n_folds": 3, "fold_seed": 42, "protocol": "inner_holdout", "inner_val_fraction": 0.2,
                "epochs": 1000, "trial_epochs": None, "refit": "mean_epochs", "class_weights": False, "freeze": "NONE",
                "channel_map": (0, 1, 0), "seed": 42, "image_size": 224, "lr_schedule": "paper", "pruner": "none",
                "min_improvement": 0.05, "restore_best": False, "pretrained": "imagenet", "profile": "paper"}
    assert {k: run[k] for k in expected} == expected
    assert profiles.resolve_profile("paper", "allen", "inception_v3", {})["image_size"] == 299
    # the paper pins its seed; TRAIN_SEED overrides it; the other profiles use the notebook's SEED
    assert profiles.resolve_profile("paper", "allen", "resnet18", {}, default_seed=3)["seed"] == 42
    assert profiles.resolve_profile("paper", "allen", "resnet18", {"seed": 7})["seed"] == 7
    assert profiles.resolve_profile("cpu_small", "demo", "resnet18", {}, default_seed=3)["seed"] == 3


def test_demo_profile_keeps_the_committed_settings():
    run = profiles.resolve_profile("auto", "demo", "inception_v3", {}, cuda_available=True)
    assert run["profile"] == "cpu_small" and run["image_size"] == 80
    assert {k: run[k] for k in ("epochs", "batch_size", "lr", "patience", "n_trials", "n_folds", "trial_epochs", "lr_decay",
                                "decay_period", "dropout", "class_weights", "val_fraction", "lr_schedule")} == {
        "epochs": 8, "batch_size": 16, "lr": 1e-3, "patience": 5, "n_trials": 2, "n_folds": 2, "trial_epochs": 1,
        "lr_decay": 0.5, "decay_period": 5, "dropout": 0.0, "class_weights": True, "val_fraction": 0.15,
        "lr_schedule": "step"}
    assert profiles.resolve_profile("auto", "allen", "resnet18", {}, cuda_available=True)["profile"] == "paper"
    assert profiles.resolve_profile("auto", "allen", "resnet18", {}, cuda_available=False)["profile"] == "cpu_fixed"
    assert profiles.resolve_profile("auto", "demo", "resnet18", {}, cuda_available=False)["profile"] == "cpu_small"
    fixed = profiles.resolve_profile("auto", "teeter2018", "densenet121", {}, cuda_available=False)
    assert fixed["n_trials"] == 0 and fixed["image_size"] == 64 and fixed["epochs"] == 12
    assert profiles.resolve_profile("gpu_small", "allen", "resnet18", {})["n_trials"] == 20


def test_bad_settings_give_one_line_errors():
    for call, word in [(lambda: profiles.resolve_profile("cpu_small", "demo", "vgg16", {}), "resnet18"),
                       (lambda: profiles.resolve_profile("fast", "demo", "resnet18", {}), "paper"),
                       (lambda: profiles.resolve_profile("cpu_small", "demo", "resnet18", {"epoch": 3}), "epochs"),
                       (lambda: profiles.resolve_profile("cpu_small", "demo", "resnet18", {"pruner": "asha"}), "hyperband")]:
        with pytest.raises(ValueError) as err:
            call()
        assert word in str(err.value) and "\n" not in str(err.value)


def test_study_name_pins_data_and_settings_but_not_the_trial_count():
    run = profiles.resolve_profile("paper", "allen", "resnet18", {})
    inputs = {"scalograms.npy": "a" * 64, "splits.csv": "b" * 64}
    name = profiles.study_name("allen", "resnet18", run, inputs)
    assert name.startswith("allen-resnet18-paper-r0-")
    assert profiles.study_name("allen", "resnet18", {**run, "n_trials": 80, "device": "cuda:1"}, inputs) == name
    assert profiles.study_name("allen", "resnet18", {**run, "n_folds": 5}, inputs) != name
    assert profiles.study_name("allen", "resnet18", run, {**inputs, "splits.csv": "c" * 64}) != name
    assert profiles.study_name("allen", "resnet18", run, inputs, repeat=1) != name


def test_storage_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    spec, asked = studies.storage_spec(None, "allen", "resnet18", tmp_path)
    assert spec == str(tmp_path / "allen" / "models" / "resnet18" / "study.journal") and not asked
    monkeypatch.setenv("OPTUNA_STORAGE", str(tmp_path / "s.journal"))
    assert studies.storage_spec(None, "allen", "resnet18", tmp_path) == (str(tmp_path / "s.journal"), True)
    assert isinstance(studies.open_storage(tmp_path / "s.journal"), optuna.storages.JournalStorage)
    assert isinstance(studies.open_storage(f"sqlite:///{tmp_path}/s.db"), optuna.storages.RDBStorage)
    assert search.worker_envs(None, ["0", "1"], trials_per_gpu=2) == [{"CUDA_VISIBLE_DEVICES": g} for g in "0101"]
    assert search.worker_envs(3, [], 1) == [{"CUDA_VISIBLE_DEVICES": ""}] * 3
    assert search.parse_param("TRIAL_EPOCHS=2") == ("trial_epochs", 2)
    assert search.parse_param("PRETRAINED=none") == ("pretrained", "none")
    assert search.parse_param("IMAGE_SIZE=None") == ("image_size", None)
    assert search.parse_param("CLASS_WEIGHTS=False") == ("class_weights", False)


def test_workers_complete_exactly_n_trials(tmp_path, search_storage):
    name, n = "three-workers", 7
    study = run_workers(tmp_path, search_storage, name, n, ranks=(0, 1, 2))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n
    runs = logged_runs(tmp_path)
    numbers = [number for number, _ in runs]
    assert len(numbers) == len(set(numbers))  # no trial run twice
    assert len({pid for _, pid in runs}) > 1  # the workers shared the trials
    assert {t.user_attrs["pid"] for t in complete} <= {pid for _, pid in runs}
    assert all(t.user_attrs["host"] and t.user_attrs["gpu"] == "cpu" for t in complete)
    # every trial that did not complete was a surplus one (two workers took the last slot at once), never run
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others)
    assert not {t.number for t in others} & set(numbers)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_loses_only_its_running_trial(tmp_path, search_storage):
    """A worker killed mid-trial: its trial is failed (by the heartbeat on a database), run again, and the study
    still reaches n complete trials."""
    name, n = "crash", 3
    slow = subprocess.Popen(worker_cmd(tmp_path, search_storage, name, n, 0.1, "slow"), env=env())
    log = tmp_path / "log.txt"
    deadline = time.time() + 60
    while not (log.exists() and log.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(slow.pid, signal.SIGKILL)  # mid-trial: trial 0 is sleeping
    slow.wait()
    subprocess.run(worker_cmd(tmp_path, search_storage, name, n, 0.1, 1), env=env(), check=True, timeout=120)
    study = optuna.load_study(study_name=name, storage=studies.open_storage(search_storage))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == n and TrialState.RUNNING not in states
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["pid"] == slow.pid
    # Optuna's retry: a copy of trial 0 with its parameters, completed by the surviving worker
    retry = [t for t in study.trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == study.trials[0].params and retry[0].user_attrs["pid"] != slow.pid


def test_a_rerun_resumes_the_study_by_name(tmp_path, search_storage):
    name = "resumed"
    first = run_workers(tmp_path, search_storage, name, 3, ranks=(0, 1), sleep=0.1)
    before = [(t.number, t.params) for t in first.trials]
    again = run_workers(tmp_path, search_storage, name, 3, ranks=(0,), sleep=0.1)  # finished: nothing to do
    assert [(t.number, t.params) for t in again.trials] == before
    more = run_workers(tmp_path, search_storage, name, 4, ranks=(1,), sleep=0.1)  # a higher count continues it
    assert optuna.study.get_all_study_names(studies.open_storage(search_storage)) == [name]
    assert [(t.number, t.params) for t in more.trials][:len(before)] == before
    assert len(more.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert len({n for n, _ in logged_runs(tmp_path)}) == len(logged_runs(tmp_path))


def test_the_dashboard_lists_the_trials_of_a_finished_study(tmp_path, search_storage):
    """`optuna-dashboard <journal file or URL>` (README) serves the study's trials, read from the search's storage."""
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard not installed: make env, or pip install -e '.[dashboard]'")
    study = studies.run_worker(lambda trial: trial.suggest_float("x", 0.0, 1.0), 3, name="watched", storage=search_storage,
                              progress=False)
    port = postgres.free_port()
    cmd = [str(Path(sys.executable).parent / "optuna-dashboard"), search_storage, "--host", "127.0.0.1", "--port", str(port),
           "--quiet"]
    server = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.load(r)

    try:
        deadline, summaries = time.time() + 60, None
        while summaries is None and server.poll() is None and time.time() < deadline:
            try:
                summaries = get("/api/studies")["study_summaries"]
            except OSError:  # not listening yet
                time.sleep(0.3)
        assert summaries is not None, server.stderr.read() if server.poll() is not None else "no answer in 60 s"
        assert [s["study_name"] for s in summaries] == ["watched"]
        detail = get(f"/api/studies/{summaries[0]['study_id']}")
        listed = {t["number"]: t for t in detail["trials"]}
        assert sorted(listed) == [0, 1, 2] and all(t["state"] == "Complete" for t in listed.values())
        assert {n: t["values"][0] for n, t in listed.items()} == pytest.approx({t.number: t.value for t in study.trials})
        assert all(t["user_attrs"] for t in listed.values())  # host, pid, gpu, worker of each trial
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_search_module_loads_without_torch_and_has_help():
    code = "import sys, sts_utils.stages.search; assert not any(m == 'torch' or m.startswith(('torch.', 'matplotlib')) for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], env=env(), check=True)
    out = subprocess.run([sys.executable, "-m", "sts_utils.stages.search", "--help"], env=env(), capture_output=True, text=True,
                         check=True).stdout
    assert "--n-workers" in out and "--storage" in out


def test_command_line_trial_count_and_pruner_are_used_or_refused():
    """`make search N_TRIALS=4` passes --param N_TRIALS=4: it must win over the profile, not be reset to it."""
    def settings(*argv):
        args = search.build_parser().parse_args(["--dataset", "demo", "--backbone", "resnet18", *argv])
        return profiles.resolve_profile("cpu_small", "demo", "resnet18", search.cli_overrides(args))

    assert settings()["n_trials"] == profiles.PROFILES["cpu_small"]["n_trials"]
    assert settings("--param", "N_TRIALS=4")["n_trials"] == 4
    assert settings("--n-trials", "5")["n_trials"] == 5
    assert settings("--param", "N_TRIALS=4", "--n-trials", "4")["n_trials"] == 4
    assert settings("--param", "PRUNER=hyperband")["pruner"] == "hyperband"
    assert settings("--pruner", "median")["pruner"] == "median"
    with pytest.raises(SystemExit, match=r"--n-trials 5 and --param N_TRIALS=4 disagree"):
        settings("--param", "N_TRIALS=4", "--n-trials", "5")
    with pytest.raises(SystemExit, match=r"--pruner median and --param PRUNER=hyperband disagree"):
        settings("--param", "PRUNER=hyperband", "--pruner", "median")


def test_the_search_accepts_exactly_the_training_page_parameters():
    """issue 24, item 3: make forwards every command-line variable; the training page's cell is the one list."""
    page = parameters.source_parameters(ROOT / parameters.TRAINING_PAGE)
    settings = [p for p in page if p not in profiles.PAGE_ONLY_PARAMETERS]
    for name in settings:  # every setting on the page reaches the run's settings under its key
        key, _ = search.parse_param(f"{name}=None")
        assert key in profiles.resolve_profile("cpu_small", "demo", "resnet18", {}), name
    with pytest.raises(ValueError, match=r"--param EPOCH \(did you mean EPOCHS\?\): not a setting of "
                                         r"notebooks/04_finetune.py; its settings are BATCH_SIZE, "):
        search.parse_param("EPOCH=5")
    args = search.build_parser().parse_args(["--dataset", "demo", "--backbone", "resnet18", "--param", "PROFILE=cpu_fixed",
                                             "--param", f"OPTUNA_STORAGE={ROOT}/x.journal", "--param", "EPOCHS=3"])
    assert search.cli_overrides(args) == {"epochs": 3}
    assert (args.profile, args.storage) == ("cpu_fixed", f"{ROOT}/x.journal")
    args = search.build_parser().parse_args(["--dataset", "demo", "--backbone", "resnet18", "--profile", "paper",
                                             "--param", "PROFILE=cpu_fixed"])
    with pytest.raises(SystemExit, match=r"--profile paper and --param PROFILE=cpu_fixed disagree"):
        search.cli_overrides(args)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_search_refuses_a_name_the_training_page_does_not_declare(tmp_path):
    venv = Path(sys.prefix)
    # -o: the environment and the splits taken as made, so the search's own command line is what answers
    r = subprocess.run(["make", "--no-print-directory", "search", f"VENV={venv}", "-o", str(venv / ".sts-installed"),
                        "-o", str(tmp_path / "demo" / "splits.csv"), f"DATA_DIR={tmp_path}", f"BUILD_DIR={tmp_path / 'build'}",
                        "N_SCALES=128"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: --param N_SCALES (did you mean N_TRIALS?): not a setting of notebooks/04_finetune.py; "
                           "its settings are BATCH_SIZE, CLASS_WEIGHTS, COMPILE,")


OPEN_STORAGE = """
import sys, time
from sts_utils.data.studies import open_storage
while time.time() < float(sys.argv[2]):  # start together
    time.sleep(0.001)
open_storage(sys.argv[1])
"""


def test_workers_opening_an_empty_database_at_once_all_get_the_storage(postgres_url):
    """Workers of a cluster started at once each create Optuna's schema on the empty database; the ones that lose
    that race (a unique-key violation, seen in CI) open the storage again instead of failing."""
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORAGE, postgres_url, str(start)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(e[-500:] for e in errors if e)
    assert isinstance(studies.open_storage(postgres_url), optuna.storages.RDBStorage)


@pytest.mark.parametrize("lost", [
    sqlalchemy.exc.IntegrityError("CREATE TABLE alembic_version", {}, Exception("duplicate key value violates unique "
                                                                              "constraint")),
    sqlalchemy.exc.ProgrammingError("CREATE TYPE studydirection", {}, Exception('type "studydirection" already exists')),
])
def test_a_schema_race_on_opening_is_retried_not_fatal(postgres_url, monkeypatch, lost):
    """What the losers of that race meet (both seen in CI), made certain: the first opening fails on the schema."""
    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise lost
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    assert isinstance(studies.open_storage(postgres_url), real) and len(calls) == 2


def test_another_database_error_on_opening_is_not_retried(monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise sqlalchemy.exc.ProgrammingError("SELECT", {}, Exception("permission denied for schema public"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", failing)
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
        studies.open_storage("postgresql+psycopg://nobody@localhost/none")
    assert len(calls) == 1
