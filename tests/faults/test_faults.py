"""Issue 19, "Artifacts that cannot lie": faults injected into tiny data folders.

Each case runs on its own copy of the session's tiny demo folder (or a fresh folder under
``tmp_path``) and checks two things: the fault gives one clear line that names the file or
parameter and the fix (or a counted skip), and nothing good is lost (the previous store still
loads and is byte-identical, ``cells.csv`` is unchanged, ...).
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sts_utils.stages import acquisition, bundle
from sts_utils.compute import cwt
from sts_utils.data import registry, studies
from sts_utils.data import store as store_module
from sts_utils.stages import scalograms as sc
from sts_utils.core.errors import BundleError, DataDirLocked, DataNotAvailableError, DiskFullError, TableError
from sts_utils.core.io import LOCK_ENV, file_sha256
from sts_utils.stages.scalograms import ScalogramParams, compute_scalograms
from sts_utils.stages.splits import make_splits
from sts_utils.data.store import ScalogramStore
from sts_utils.data.tables import read_sweeps
from sts_utils.stages.fit import TrainConfig
from sts_utils.stages.training import search_hyperparameters
from tests.conftest import ROOT
from tests.test_bundle import trained_copy
from tests.faults.conftest import put_temporary_files_on_a_full_disk, snapshot

pytestmark = pytest.mark.faults

PY = sys.executable
TINY = ["N_CELLS=3", "N_FI_CELLS=2", "EPOCHS=2", "N_TRIALS=1", "N_FOLDS=2", "TRIAL_EPOCHS=1", "IMAGE_SIZE=75",
        "N_ITER=2", "IG_STEPS=2", "N_BOOT=20", "TEST_FRACTION=0.25"]


# ------------------------------------------------------------------------------------------ helpers

def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def count_computed(monkeypatch) -> list[int]:
    """Specimen ids that ``compute_scalograms`` (n_jobs=1) actually computes, in order."""
    computed: list[int] = []
    real = sc._process_cell
    monkeypatch.setattr(sc, "_process_cell", lambda job: computed.append(int(job[0])) or real(job))
    return computed


def fresh_image(ddir: Path, sid: int, params: ScalogramParams = ScalogramParams()) -> np.ndarray:
    """A cell's image computed afresh from its current sweeps and raw file (as tests/test_scalograms.py does)."""
    sweeps = read_sweeps(ddir / "sweeps.csv")
    window_s = json.loads((ddir / "scalograms" / "params.json").read_text())["params"]["window_s"]
    freqs = np.load(ddir / "scalograms" / "freqs_hz.npy")
    signals, _ = sc.cell_signals(sweeps[sweeps.specimen_id == sid], ddir / "raw", params)
    return cwt.scalogram_image(signals, params.n_times / window_s, freqs, params.store_times, params.wavelet
                               ).astype(np.float16)


def child_env() -> dict[str, str]:
    env = {**os.environ, "STS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop(LOCK_ENV, None)
    return env


def make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``make`` with data, figures and executed notebooks under ``tmp_path`` and the tiny settings."""
    dirs = [f"DATA_DIR={tmp_path / 'data'}", f"FIGURES_DIR={tmp_path / 'figures'}", f"BUILD_DIR={tmp_path / 'build'}"]
    return subprocess.run(["make", *dirs, *TINY, *args], cwd=ROOT, capture_output=True, text=True,
                          env=child_env(), timeout=600)


# ------------------------------------------------------------- 1. stale images under new labels

def test_new_labels_recompute_every_changed_cell_and_errors_are_never_reused(demo_copy, monkeypatch):
    ddir = demo_copy / "demo"
    old_cells = pd.read_csv(ddir / "cells.csv").set_index("specimen_id")
    old_sweeps = pd.read_csv(ddir / "sweeps.csv")
    old_index = pd.read_csv(ddir / "scalograms" / "index.csv").set_index("specimen_id")
    old_store = np.load(ddir / "scalograms" / "scalograms.npy")

    # same simulation, two batches of 8 on two workers instead of one of 16 (only to halve the wall time)
    monkeypatch.setattr(acquisition, "generate_demo_cohort",
                        functools.partial(acquisition.generate_demo_cohort, batch_size=8))
    acquisition.acquire("demo", demo_copy, seed=0, n_cells=4, n_jobs=2)
    cells = pd.read_csv(ddir / "cells.csv").set_index("specimen_id")
    sweeps = pd.read_csv(ddir / "sweeps.csv")
    assert len(cells) == 16
    relabelled = [s for s in old_cells.index if cells.label.get(s) != old_cells.label[s]]
    assert relabelled, "the fault needs ids that were simulated again as another class"

    def changed(sid: int) -> bool:
        if sid not in old_cells.index:
            return True
        row_changed = not cells.loc[sid].astype(str).equals(old_cells.loc[sid].reindex(cells.columns).astype(str))
        sha_old = set(old_sweeps.loc[old_sweeps.specimen_id == sid, "file_sha256"])
        sha_new = set(sweeps.loc[sweeps.specimen_id == sid, "file_sha256"])
        return row_changed or sha_old != sha_new

    usable = cells[(cells.qc_status == "ok")].index
    changed_ids = sorted(int(s) for s in usable if changed(int(s)))
    assert changed_ids

    # a recording that breaks after acquisition: its cell is an error, counted, not fatal
    broken = int(usable[0])
    nwb = ddir / "raw" / acquisition.demo_nwb_relpath(broken)
    good_bytes = nwb.read_bytes()
    nwb.write_bytes(good_bytes[: len(good_bytes) // 3])

    computed = count_computed(monkeypatch)
    compute_scalograms("demo", demo_copy, n_jobs=1, progress=False)
    assert set(changed_ids) <= set(computed)
    qc = pd.read_csv(ddir / "scalograms" / "qc.csv").set_index("specimen_id")
    assert qc.status[broken].startswith("error: "), qc.loc[broken].to_dict()
    index = pd.read_csv(ddir / "scalograms" / "index.csv").set_index("specimen_id")
    assert broken not in index.index
    store = ScalogramStore.load("demo", demo_copy)
    design = pd.read_csv(ddir / "raw" / "demo_model_parameters.csv").set_index("specimen_id")
    for sid in index.index:
        assert index.label[sid] == cells.label[sid] == design.label[sid]  # the current label's simulation
        if sid in old_index.index and sid in changed_ids:
            assert index.fingerprint[sid] != old_index.fingerprint[sid], sid
        assert np.array_equal(store.images[int(index.row[sid])], fresh_image(ddir, int(sid))), sid
    stale = [s for s in relabelled if s in index.index and s in old_index.index]
    assert any(not np.array_equal(store.images[int(index.row[s])], old_store[int(old_index.row[s])]) for s in stale)

    # the file is restored: the error is not reused, that cell (and only it) is computed again
    nwb.write_bytes(good_bytes)
    del store
    computed.clear()
    compute_scalograms("demo", demo_copy, n_jobs=1, progress=False)
    assert computed == [broken]
    qc = pd.read_csv(ddir / "scalograms" / "qc.csv").set_index("specimen_id")
    assert qc.status[broken] == "ok"
    store = ScalogramStore.load("demo", demo_copy)
    assert np.array_equal(store.get(broken).astype(np.float16), fresh_image(ddir, broken))


# --------------------------------------------------------------- 2. a failed stage leaves no target

def test_a_notebook_that_fails_after_writing_leaves_no_target_make_takes_as_done(tiny_demo, tmp_path):
    shutil.copytree(tiny_demo, tmp_path / "data")
    target = tmp_path / "data" / "demo" / "cells.csv"
    assert target.exists()
    # N_FI_CELLS=-1 fails in the f-I cell, after acquire() has rewritten cells.csv
    r = make(tmp_path, "data", "N_FI_CELLS=-1")  # (overrides the tiny N_FI_CELLS=2 given before it)
    log = r.stdout + r.stderr
    assert r.returncode != 0, log[-3000:]
    assert "notebooks/01_data_acquisition.py failed" in log, log[-3000:]
    assert not target.exists(), "a failed notebook 01 left cells.csv, which make takes as done"
    assert f"removed {target}: written by this failed run" in log, log[-3000:]
    build = tmp_path / "build" / "demo"
    assert (build / "01_data_acquisition.failed.ipynb").exists()
    assert not (build / "01_data_acquisition.ipynb").exists()
    # the next make plans notebook 01 again (nothing is taken as done)
    r = make(tmp_path, "-n", "data")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "sts_utils.pages.runner notebooks/01_data_acquisition.py" in r.stdout, r.stdout[-3000:]


def test_make_splits_that_fails_its_checks_writes_no_splits_csv(demo_copy):
    ddir = demo_copy / "demo"
    cells = pd.read_csv(ddir / "cells.csv")
    good_cells = (ddir / "cells.csv").read_bytes()
    # (a) a published split with a value that is neither train nor test: checked before writing
    (ddir / "splits.csv").unlink()
    (ddir / "splits.csv.json").unlink(missing_ok=True)
    bad = cells.assign(split="train")
    bad.loc[3, "split"] = "validation"
    bad.to_csv(ddir / "cells.csv", index=False)
    with pytest.raises(TableError) as err:
        make_splits("demo", demo_copy, test_fraction=0.25, seed=0)
    msg = one_line(err.value)
    # (today it names splits.csv, which does not exist; the bad value sits in cells.csv's split column)
    assert "'validation'" in msg and "line " in msg and ("splits.csv" in msg or "cells.csv" in msg), msg
    assert not (ddir / "splits.csv").exists() and not (ddir / "splits.csv.json").exists()
    # (b) a class left with one cell: a ValueError, and an existing splits.csv is kept as it was
    (ddir / "cells.csv").write_bytes(good_cells)
    make_splits("demo", demo_copy, test_fraction=0.25, seed=0)
    before = snapshot(ddir, "splits.csv*")
    few = cells.copy()
    few.loc[few.index[few.label == "Pvalb"][:2], "label"] = "Unsure"
    few.to_csv(ddir / "cells.csv", index=False)
    with pytest.raises(ValueError, match="at least 2 cells"):
        make_splits("demo", demo_copy, test_fraction=0.25, seed=0)
    assert snapshot(ddir, "splits.csv*") == before


# ------------------------------------------------------------ 3. one bad parameter never wipes a store

@pytest.mark.parametrize("kwargs, names", [
    ({"f_min_hz": -5}, ["F_MIN_HZ"]),
    ({"offsets_pa": (50,)}, ["OFFSETS_PA", "2 offsets"]),
    # issue 26, item 6: these were int()/float() tracebacks, or silently accepted (12.5)
    ({"n_scales": "abc"}, ["N_SCALES", "whole number", "'abc'"]),
    ({"n_scales": 12.5}, ["N_SCALES", "whole number", "12.5"]),
    ({"offsets_pa": [40, "x"]}, ["OFFSETS_PA", "list of numbers", "'x'"]),
])
def test_a_bad_parameter_is_one_line_naming_it(kwargs, names):
    with pytest.raises(ValueError) as err:
        ScalogramParams(**kwargs)
    msg = one_line(err.value)
    assert all(n in msg for n in names), msg


def test_bad_parameters_and_a_run_without_any_image_keep_the_previous_store(demo_copy, monkeypatch):
    out = demo_copy / "demo" / "scalograms"
    before = snapshot(out)
    entries = sorted(p.name for p in out.iterdir())
    # bounds that only fail once the window is known: nothing is written, not even a shard folder
    for kwargs, names in [({"f_max_hz": 2000.0}, ["F_MAX_HZ"]),               # at/above Nyquist of 4000 Hz
                          ({"f_min_hz": 1500.0}, ["F_MIN_HZ", "ascend"])]:     # above the default F_MAX_HZ (1000 Hz)
        with pytest.raises(ValueError) as err:
            compute_scalograms("demo", demo_copy, ScalogramParams(**kwargs), n_jobs=1, progress=False)
        msg = one_line(err.value)
        assert all(n in msg for n in names), msg
        assert sorted(p.name for p in out.iterdir()) == entries
        assert snapshot(out) == before
    # every cell skipped (no sweep near rheobase + 400 pA): an error, and the previous store is kept
    with pytest.raises(ValueError) as err:
        compute_scalograms("demo", demo_copy, ScalogramParams(offsets_pa=(400, 500)), n_jobs=1, progress=False)
    msg = one_line(err.value)
    assert "no cell" in msg and "previous store" in msg and "OFFSETS_PA" in msg and "rheobase+400" in msg, msg
    assert snapshot(out) == before
    store = ScalogramStore.load("demo", demo_copy)
    assert len(store.index) == store.images.shape[0] > 0
    # ... and it still stands in for the shards: a rerun with the good parameters computes nothing
    computed = count_computed(monkeypatch)
    compute_scalograms("demo", demo_copy, n_jobs=1, progress=False)
    assert computed == []
    assert {k: v for k, v in snapshot(out).items() if k != "params.json"} == \
        {k: v for k, v in before.items() if k != "params.json"}


def test_the_nyquist_error_does_not_contradict_itself():
    window_s = 1.0 + 0.1 + 0.1  # how analysis_window_s adds PRE_S and POST_S to the demo's 1-s step
    with pytest.raises(ValueError) as err:
        ScalogramParams(f_max_hz=2000.0).frequencies_hz(window_s)
    msg = one_line(err.value)
    assert "F_MAX_HZ" in msg and "2000 Hz exceeds the Nyquist frequency 2000 Hz" not in msg, msg


# --------------------------------------------------------------- 4. cells.csv validated downstream

def _unknown_label(df):
    df.loc[4, "label"] = "Lamp5"
    return df, 6, "unknown label 'Lamp5'"


def _duplicate_id(df):
    df.loc[5, "specimen_id"] = df.loc[2, "specimen_id"]
    return df, 7, "appears twice (also line 4)"


def _missing_column(df):
    return df.drop(columns=["label"]), None, "missing column(s) label"


def _non_integer_id(df):
    df["specimen_id"] = df["specimen_id"].astype(object)
    df.loc[3, "specimen_id"] = "9000000x3"
    return df, 5, "'9000000x3' is not an integer"


@pytest.mark.parametrize("fault", [_unknown_label, _duplicate_id, _missing_column, _non_integer_id],
                         ids=["unknown-label", "duplicate-id", "missing-column", "non-integer-id"])
def test_a_broken_cells_csv_is_one_line_naming_file_line_and_problem(demo_copy, fault):
    ddir = demo_copy / "demo"
    cells_path = ddir / "cells.csv"
    df, line, problem = fault(pd.read_csv(cells_path))
    df.to_csv(cells_path, index=False)
    broken = cells_path.read_bytes()
    store_before, data_before = snapshot(ddir / "scalograms"), snapshot(ddir)
    for stage in (lambda: compute_scalograms("demo", demo_copy, n_jobs=1, progress=False),
                  lambda: make_splits("demo", demo_copy, test_fraction=0.25, seed=0)):
        with pytest.raises(TableError) as err:
            stage()
        msg = one_line(err.value)
        assert str(cells_path) in msg and problem in msg, msg
        if line is not None:
            assert f"line {line}:" in msg, msg
        else:
            assert "make data" in msg, msg
    assert cells_path.read_bytes() == broken  # nobody "repaired" it behind the user's back
    assert snapshot(ddir / "scalograms") == store_before and snapshot(ddir) == data_before


def test_unknown_backbone_is_one_line_naming_the_allowed_ones():
    from sts_utils.data import profiles
    from sts_utils.core.config import BACKBONES
    from sts_utils.stages.fit import TrainConfig
    from sts_utils.stages.training import resolve_profile

    for call in (lambda: resolve_profile("auto", "demo", "vgg16", {}),
                 lambda: profiles.resolve_profile("auto", "demo", "vgg16", {}),
                 lambda: TrainConfig(backbone="vgg16")):
        with pytest.raises(ValueError) as err:
            call()
        msg = one_line(err.value)
        assert "'vgg16'" in msg and all(b in msg for b in BACKBONES), msg


def test_an_empty_checkpoint_names_the_file_and_make_train(tmp_path):
    from sts_utils.data.models import load_checkpoint

    out = tmp_path / "models" / "resnet18"
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"backbone": "resnet18", "model": {
        "backbone": "resnet18", "image_size": 32, "dropout": 0.0, "freeze": "NONE", "channel_map": [0, 1, 0],
        "weights": "random"}}))
    (out / "model.pt").write_bytes(b"")
    with pytest.raises(ValueError) as err:
        load_checkpoint(out)
    msg = one_line(err.value)
    assert str(out / "model.pt") in msg and "make train BACKBONE=resnet18" in msg, msg
    assert (out / "model.pt").read_bytes() == b""


def test_an_unknown_dataset_raises_before_any_folder_is_made(tmp_path):
    from sts_utils.core import config

    figs, data = tmp_path / "figures", tmp_path / "data"
    for call in (lambda: config.figures_dir("nonexistent", figs), lambda: config.dataset_dir("nonexistent", data),
                 lambda: acquisition.acquire("nonexistent", data, n_cells=1),
                 lambda: compute_scalograms("nonexistent", data, progress=False)):
        with pytest.raises(ValueError) as err:
            call()
        msg = one_line(err.value)
        assert "'nonexistent'" in msg and "demo" in msg and "teeter2018" in msg, msg
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 5. files copied into the cache

def test_a_flipped_digit_in_a_copied_teeter2018_file_is_caught(tmp_path, shared_data):
    raw = tmp_path / "teeter2018" / "raw"
    shutil.copytree(shared_data / "teeter2018", raw, copy_function=shutil.copyfile)  # as a user copies them
    for d, _, _ in os.walk(raw):
        os.chmod(d, 0o755)
    acquisition.acquire("teeter2018", tmp_path, seed=0, max_cells=6)
    ddir = tmp_path / "teeter2018"
    good = snapshot(ddir)
    cells = pd.read_csv(ddir / "cells.csv")
    r = cells[cells.qc_status == "ok"].iloc[0]
    victim = raw / registry.teeter_cell_relpath(int(r.specimen_id), r.cre_line)
    text = victim.read_text()
    k = text.index('"spike_ind"')
    k = next(i for i in range(k, len(text)) if text[i].isdigit())
    victim.write_text(text[:k] + str((int(text[k]) + 1) % 10) + text[k + 1:])  # same size, one digit off
    with pytest.raises(DataNotAvailableError) as err:
        acquisition.acquire("teeter2018", tmp_path, seed=0, max_cells=6)
    msg = one_line(err.value)
    assert str(victim) in msg and "pinned sha256" in msg and "delete it" in msg, msg
    assert {k: v for k, v in snapshot(ddir).items()} == good  # cells.csv, spike_trains.parquet unchanged


def test_a_same_size_change_with_its_mtime_put_back_is_detected(tmp_path, shared_data):
    cache = tmp_path / "raw"
    rel = next(rel for rel in registry.pinned_hashes("teeter2018") if rel.endswith("_preprocessor_values.json")
               and (shared_data / "teeter2018" / rel).is_file())
    path = cache / rel
    path.parent.mkdir(parents=True)
    shutil.copyfile(shared_data / "teeter2018" / rel, path)
    entry = registry.remote_file("teeter2018", rel)
    assert entry.sha256
    assert registry.ensure_files([entry], cache, "one teeter2018 file") == [path]
    assert rel in json.loads((cache / "verified.json").read_text())  # recorded: the next run trusts its stat
    st = path.stat()
    data = bytearray(path.read_bytes())
    k = next(i for i, b in enumerate(data) if chr(b).isdigit())
    data[k] = ord(str((int(chr(data[k])) + 1) % 10))
    with open(path, "r+b") as fh:  # in place: same inode, same size
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(DataNotAvailableError) as err:
        registry.ensure_files([entry], cache, "one teeter2018 file")
    msg = one_line(err.value)
    assert str(path) in msg and "pinned sha256" in msg, msg


# ------------------------------------------------------------------- 6. two runs on one data folder

HOLDER = """
import sys, time
from sts_utils.core.io import data_dir_lock
with data_dir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_a_locked_folder_fails_at_once_and_a_killed_holder_releases_it(demo_copy, monkeypatch):
    ddir = demo_copy / "demo"
    before = snapshot(ddir) | {f"scalograms/{k}": v for k, v in snapshot(ddir / "scalograms").items()}
    holder = subprocess.Popen([PY, "-c", HOLDER, str(ddir)], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for stage in (lambda: compute_scalograms("demo", demo_copy, n_jobs=1, progress=False),
                      lambda: acquisition.acquire("demo", demo_copy, seed=0, n_cells=3, n_jobs=1)):
            t0 = time.monotonic()
            with pytest.raises(DataDirLocked) as err:
                stage()
            assert time.monotonic() - t0 < 5, "the second run waited instead of failing at once"
            msg = one_line(err.value)
            assert f"pid {holder.pid} " in msg and str(ddir) in msg and "run again" in msg, msg
        after = snapshot(ddir) | {f"scalograms/{k}": v for k, v in snapshot(ddir / "scalograms").items()}
        assert after == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    # the kernel dropped the killed holder's flock: a run goes through (and reuses every image)
    computed = count_computed(monkeypatch)
    compute_scalograms("demo", demo_copy, n_jobs=1, progress=False)
    assert computed == []
    assert snapshot(ddir / "scalograms", "*.npy") == {k.split("/", 1)[1]: v for k, v in before.items()
                                                      if k.startswith("scalograms/") and k.endswith(".npy")}


REWRITER = """
import os, sys, time
from pathlib import Path
from sts_utils.core.io import data_dir_lock
folder, target = Path(sys.argv[1]), Path(sys.argv[2])
content = target.read_bytes()
with data_dir_lock(folder):
    print("held", flush=True)
    for _ in range(3000):  # a first run still writing its target while the second is refused
        tmp = target.with_name(".rewrite.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, target)
        time.sleep(0.02)
"""


def test_a_run_refused_by_the_lock_never_deletes_the_target_another_run_writes(demo_copy, tmp_path):
    # issue 26, item 1: make's .DELETE_ON_ERROR deleted the first run's fresh target after the second's refusal
    ddir = demo_copy / "demo"
    target = ddir / "cells.csv"
    content = target.read_bytes()
    holder = subprocess.Popen([PY, "-c", REWRITER, str(ddir), str(target)], env=child_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run(["make", f"DATA_DIR={demo_copy}", f"FIGURES_DIR={tmp_path / 'figures'}",
                            f"BUILD_DIR={tmp_path / 'build'}", *TINY, "data"], cwd=ROOT, capture_output=True,
                           text=True, env=child_env(), timeout=600)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    log = r.stdout + r.stderr
    assert r.returncode != 0 and "is being written by pid" in log, log[-3000:]
    assert "Deleting file" not in log and "removed" not in log, log[-3000:]
    assert target.read_bytes() == content, "the other run's cells.csv was deleted or changed"


def test_a_full_disk_stops_the_scalograms_in_one_line_and_records_no_cell_as_broken(demo_copy, monkeypatch):
    # issue 26, item 2: every cell's image write failed, was recorded per cell as an OSError, and the run went on
    ddir = demo_copy / "demo"
    before = snapshot(ddir / "scalograms")
    computed = count_computed(monkeypatch)
    put_temporary_files_on_a_full_disk(monkeypatch)  # every new file
    with pytest.raises(DiskFullError) as err:
        compute_scalograms("demo", demo_copy, ScalogramParams(n_scales=90), n_jobs=1, progress=False)
    monkeypatch.undo()
    msg = one_line(err.value)
    assert "the disk is full" in msg and "nothing was replaced" in msg, msg
    assert len(computed) == 1, "the run went on after the disk was full"
    assert snapshot(ddir / "scalograms") == before, "the previous store changed"
    shards = ddir / "scalograms" / f"cells-{ScalogramParams(n_scales=90).hash()}"
    assert not list(shards.glob("*.json")), "a cell was recorded as broken by a full disk"
    assert not [p for p in shards.iterdir() if ".part" in p.name], "temporary files left behind"


# ------------------------------------------------------------------------- 7. interrupt and resume

SLOW_RUN = """
import sys, time
from sts_utils.stages import scalograms as sc
real = sc._process_cell
def slow(job):
    out = real(job)
    time.sleep(0.5)  # leaves time to kill the run between two cells
    return out
sc._process_cell = slow
sc.compute_scalograms("demo", sys.argv[1], n_jobs=1, progress=False)
"""


def shards(out: Path) -> set[int]:
    """Cells whose shard status file is written (temporary ``.*.part.json`` files left out)."""
    return {int(p.stem) for p in out.glob("cells-*/*.json") if not p.name.startswith(".")}


def test_a_killed_run_resumes_with_only_the_rest_and_equals_an_uninterrupted_one(tiny_demo, demo_copy, monkeypatch):
    out = demo_copy / "demo" / "scalograms"
    shutil.rmtree(out)
    n_cells = len(pd.read_csv(tiny_demo / "demo" / "scalograms" / "index.csv"))
    run = subprocess.Popen([PY, "-c", SLOW_RUN, str(demo_copy)], env=child_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not shards(out):
            assert run.poll() is None, f"the run ended before it was killed: {run.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no shard after 120 s"
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
    finally:
        run.kill()
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    assert not (out / "index.csv").exists() and not (out / "scalograms.npy").exists()
    done = shards(out)
    assert 1 <= len(done) < n_cells
    computed = count_computed(monkeypatch)
    compute_scalograms("demo", demo_copy, n_jobs=1, progress=False)
    assert len(computed) == n_cells - len(done) and not set(computed) & done
    reference = tiny_demo / "demo" / "scalograms"
    for name in ("scalograms.npy", "index.csv", "qc.csv", "freqs_hz.npy", "times_s.npy"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_an_interrupted_consolidation_leaves_no_store_that_loads_with_another_runs_index(demo_copy, monkeypatch):
    out = demo_copy / "demo" / "scalograms"
    before = snapshot(out)
    real = store_module.write_csv_atomic

    def interrupted(df, target, **kwargs):
        if Path(target).name == "index.csv":
            raise KeyboardInterrupt("Ctrl-C while the store is written")
        return real(df, target, **kwargs)

    monkeypatch.setattr(store_module, "write_csv_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):  # other offsets: other sweeps, other images
        compute_scalograms("demo", demo_copy, ScalogramParams(offsets_pa=(0, 100)), n_jobs=1, progress=False)
    monkeypatch.undo()
    try:
        store = ScalogramStore.load("demo", demo_copy)
    except Exception as exc:  # refusing the mixed folder, naming the fix, is fine
        assert "make scalograms" in one_line(exc)
        return
    # what loads must be one run's store: here the previous one, as it was
    assert store.params["params"]["offsets_pa"] == [40.0, 50.0]
    assert (out / "scalograms.npy").read_bytes() == before["scalograms.npy"], \
        "index.csv and params.json describe the previous run, scalograms.npy holds the interrupted one's images"


# ------------------------------------------------------------- a folder with a space (issue 26, item 4)

@pytest.mark.parametrize("variable", ["DATA_DIR", "FIGURES_DIR", "BUILD_DIR"])
def test_a_folder_with_a_space_is_refused_in_one_line_before_anything_runs(tmp_path, variable):
    folder = tmp_path / "my data"
    # --no-print-directory: under `make test` this make is nested and would print "Entering directory"
    before = sorted(p.name for p in (ROOT / "data").iterdir()) if (ROOT / "data").exists() else []
    r = subprocess.run(["make", "--no-print-directory", "paper", f"{variable}={folder}", *TINY], cwd=ROOT,
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f'{variable}="{folder}" has a space' in errors[0], r.stderr
    assert "No rule to make target" not in r.stderr and "binary operator" not in r.stderr
    assert not folder.exists() and r.stdout == ""  # nothing ran
    after = sorted(p.name for p in (ROOT / "data").iterdir()) if (ROOT / "data").exists() else []
    assert after == before


@pytest.mark.parametrize("kwargs, expected", [
    ({"epochs": 0}, "EPOCHS must be a whole number >= 1, got 0"),
    ({"batch_size": 0}, "BATCH_SIZE must be a whole number >= 1, got 0"),
    ({"patience": 2.5}, "PATIENCE must be a whole number >= 1, got 2.5"),
    ({"epochs": "abc"}, "EPOCHS must be a whole number >= 1, got 'abc'"),
    ({"lr": "x"}, "LR and LR_DECAY must be numbers"),
])
def test_a_bad_training_setting_names_that_setting_alone(kwargs, expected):
    """issue 26, item 6: EPOCHS=0 used to name four parameters at once; EPOCHS=abc was a TypeError."""
    with pytest.raises(ValueError) as err:
        TrainConfig(backbone="resnet18", **kwargs)
    msg = one_line(err.value)
    assert expected in msg
    others = {"EPOCHS", "BATCH_SIZE", "PATIENCE", "DECAY_PERIOD"} - {next(iter(kwargs)).upper()}
    assert not any(name in msg for name in others), msg


@pytest.mark.parametrize("n_folds, expected", [
    (1, "N_FOLDS must be a whole number >= 2, got 1"),
    ("abc", "N_FOLDS must be a whole number >= 2, got 'abc'"),
    (5, "N_FOLDS=5: the smallest class of the training split has 3 cells"),
])
def test_a_bad_n_folds_is_one_line_naming_it(n_folds, expected):
    """issue 26, item 6: N_FOLDS=1 was scikit-learn's traceback."""
    x = torch.zeros((12, 2, 8, 8))
    y = np.repeat(np.arange(4), 3)
    with pytest.raises(ValueError) as err:
        search_hyperparameters(x, y, TrainConfig(backbone="resnet18", epochs=1), n_trials=1, n_folds=n_folds,
                               progress=False)
    msg = one_line(err.value)
    assert expected in msg, msg


class _Payload:
    """What a hostile model file would carry: code that runs when the file is unpickled."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/sts-pickle-ran",))


def test_a_pickle_bundle_with_its_hash_updated_is_refused_without_running_it(tmp_path, tiny_demo):
    """issue 26, item 6: torch's UnpicklingError advised weights_only=False, which must never be followed."""
    data = trained_copy(tiny_demo, tmp_path)
    out = bundle.export_bundle("demo", "resnet18", data, tmp_path / "b", figures_root=tmp_path / "figs")
    torch.save({"fc.weight": _Payload()}, out / "model.pt")  # a pickle, not tensors
    card = json.loads((out / "bundle.json").read_text())
    card["model_pt_sha256"] = file_sha256(out / "model.pt")
    card["bundle_sha256"] = bundle.card_digest(card)  # someone who knows the format re-signed it
    (out / "bundle.json").write_text(json.dumps(card))
    Path("/tmp/sts-pickle-ran").unlink(missing_ok=True)
    with pytest.raises(BundleError) as err:
        bundle.load_bundle(out, device="cpu")
    msg = one_line(err.value)
    assert str(out / "model.pt") in msg and "would run pickled code" in msg and "weights_only=False" not in msg, msg
    assert not Path("/tmp/sts-pickle-ran").exists()


def test_an_unreachable_database_is_one_line_naming_it(tmp_path):
    """issue 26, item 6: an SQLite URL in a missing folder was SQLAlchemy's OperationalError traceback."""
    url = f"sqlite:///{tmp_path}/no-such-folder/study.db"
    with pytest.raises(ValueError) as err:
        studies.open_storage(url)
    msg = one_line(err.value)
    assert f"OPTUNA_STORAGE={url}" in msg and "unable to open database file" in msg and "journal" in msg, msg
