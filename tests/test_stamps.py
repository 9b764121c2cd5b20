"""Parameter stamps: `runner --stamps` dates every stamp in one start-up, and make plans from them.

A stamp is dated at its stage's last run when the requested parameters are the recorded ones and now
when one changed (its content is left alone), so `make -n` with other parameters plans exactly what a
real run would and leaves no trace. The make test fakes a finished tree (artifacts and the stamps a run
records) instead of running the pages, which tests/test_integration.py does.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import pytest

from sts_utils.core import parameters
from sts_utils.pages import runner
from tests.conftest import LATER_PAGES, planned_pages

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

SOURCE = '''# %% [markdown]
# # probe

# %% tags=["parameters"]
DATASET = "demo"
EPOCHS = 1
BACKBONE = "resnet18"

# %%
print(DATASET)
'''


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_quick_parameter_reading_agrees_with_jupytext(notebook):
    assert parameters.source_parameters(notebook) == parameters.declared_parameters(jupytext.read(notebook))


def stamps(tmp_path, *args):
    cmd = [sys.executable, "-m", "sts_utils.pages.runner", "--stamps", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_stamps_mode_dates_each_stamp_in_one_start_up(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text(SOURCE)
    a, b, new = tmp_path / ".params" / "a.json", tmp_path / ".params" / "b.json", tmp_path / ".params" / "new.json"
    # as runs would record them: a with the defaults, b with BACKBONE=densenet121 and EPOCHS=5
    runner.record_stamp(a, runner.resolved_parameters(src, {}), 1000.0)
    runner.record_stamp(b, runner.resolved_parameters(src, {"BACKBONE": "densenet121", "EPOCHS": 5}), 2000.0)
    content = {p: p.read_text() for p in (a, b)}
    checks = ["--check", a, src, "--check", b, src, "BACKBONE=densenet121", "--check", new, src]

    # the same parameters (shared -p values only reach the stamps whose notebook declares them)
    r = stamps(tmp_path, "-p", "EPOCHS", "5", *map(str, checks[:3]), "--check", b, src, "BACKBONE=densenet121")
    assert r.returncode == 0, r.stderr
    assert a.stat().st_mtime > time.time() - 60, "a recorded EPOCHS=1: changed, dated now"
    assert b.stat().st_mtime == 2000.0, "b: the same parameters, dated at its run"
    # the defaults: a is back at its run, b (recorded EPOCHS=5) changed; a missing stamp is created as changed
    before = time.time() - 1
    r = stamps(tmp_path, *map(str, checks))
    assert r.returncode == 0, r.stderr
    assert a.stat().st_mtime == 1000.0
    assert b.stat().st_mtime >= before
    assert new.stat().st_mtime >= before and json.loads(new.read_text())["params"] is None
    assert {p: p.read_text() for p in (a, b)} == content, "checks never change what a run recorded"
    # the stage's own parameter applies to its stamp only
    r = stamps(tmp_path, "-p", "EPOCHS", "5", "--check", a, src, "BACKBONE=resnet18", "--check", b, src,
               "BACKBONE=densenet121")
    assert r.returncode == 0, r.stderr
    assert b.stat().st_mtime == 2000.0 and a.stat().st_mtime >= before


def test_stamps_mode_refuses_a_parameter_no_checked_notebook_declares_and_dates_nothing(tmp_path):
    src = tmp_path / "probe.py"
    src.write_text(SOURCE)
    stamp = tmp_path / ".params" / "a.json"
    runner.record_stamp(stamp, runner.resolved_parameters(src, {}), 1000.0)
    r = stamps(tmp_path, "-p", "EPOCH", "5", "--check", str(stamp), str(src))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: EPOCH (did you mean EPOCHS?): not a parameter of any page (probe)")
    assert stamp.stat().st_mtime == 1000.0


def test_stamps_mode_rejects_a_malformed_check(tmp_path):
    r = stamps(tmp_path, "--check", str(tmp_path / "a.json"), "notebooks/02_scalograms.py", "N_SCALES")
    assert r.returncode != 0 and "NAME=VALUE" in r.stderr


def test_check_stamps_reads_each_notebook_once(tmp_path, monkeypatch):
    src = tmp_path / "probe.py"
    src.write_text(SOURCE)
    calls = []
    real = runner.source_parameters
    monkeypatch.setattr(runner, "source_parameters", lambda s: calls.append(s) or real(s))
    changed = runner.check_stamps([(tmp_path / f"{b}.json", src, {"BACKBONE": b}) for b in ("x", "y", "z")], {})
    assert len(calls) == 1 and len(changed) == 3


# ------------------------------------------------------------------------------- make's plan

BACKBONES = ["resnet18", "inception_v3", "densenet121", "mobilenet_v2"]
LATER = LATER_PAGES


def fake_finished_tree(tmp_path):
    """Artifacts of every stage and the stamps their runs would have recorded (dated before the artifacts)."""
    data, figures, build = tmp_path / "data", tmp_path / "figures", tmp_path / "build"
    params = {"DATASET": "demo", "SEED": 0, "DATA_DIR": str(data), "FIGURES_DIR": str(figures)}
    started = time.time() - 100
    stages = {"01_data_acquisition": {}, "02_scalograms": {}, "03_splitting": {}, "05_baseline": {},
              **{f"04_finetune_{b}": {"BACKBONE": b} for b in BACKBONES},
              **{n: {"BACKBONES": BACKBONES} for n in ("06_testing", "07_saliency", "08_comparison", "09_new_cells",
                                                             "10_rig_recordings")}}
    for page, own in stages.items():
        source = ROOT / "notebooks" / ("04_finetune.py" if page.startswith("04_") else f"{page}.py")
        runner.record_stamp(build / "demo" / ".params" / f"{page}.json",
                            runner.resolved_parameters(source, {**params, **own}), started)
    artifacts = [data / "demo" / "cells.csv", data / "demo" / "scalograms" / "index.csv", data / "demo" / "splits.csv",
                 *[data / "demo" / "models" / b / "model.pt" for b in BACKBONES],
                 data / "demo" / "baseline" / "predictions.csv",
                 *[figures / "demo" / f for f in ("results_table.csv", "deletion_table.csv", "comparison_table.csv",
                                                  "new_cells_summary.csv", "rig_recordings_summary.csv")]]
    now = time.time()
    for f in artifacts:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x\n")
        os.utime(f, (now, now))
    return data, figures, build


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_plans_from_the_stamps_with_one_check_per_call(tmp_path):
    data, figures, build = fake_finished_tree(tmp_path)
    venv = Path(sys.prefix)
    # the running interpreter's environment, taken as installed (-o: never remade by these dry runs)
    base = ["make", "-n", f"VENV={venv}", "-o", str(venv / ".sts-installed"), f"DATA_DIR={data}",
            f"FIGURES_DIR={figures}", f"BUILD_DIR={build}"]

    def make(*args):
        r = subprocess.run([*base, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert r.stdout.count("sts_utils.pages.runner --stamps") == 1, "one stamp check per make call"
        assert "sts_utils.pages.runner --stamp " not in r.stdout
        return planned_pages(r.stdout)

    assert make("paper") == []
    assert make("scalograms", "N_SCALES=128") == ["notebooks/02_scalograms.py"]
    assert make("paper", "N_SCALES=128") == ["notebooks/02_scalograms.py", *LATER]
    assert make("paper") == [], "a dry run leaves no trace"
    assert make("paper", "PATIENCE=4") == LATER[1:5] + LATER[6:]
    assert make("train", "BACKBONE=densenet121", "EPOCHS=3") == ["notebooks/04_finetune.py"]
    assert make("paper", "BACKBONES=resnet18 densenet121") == ["notebooks/06_testing.py", "notebooks/07_saliency.py",
                                                                "notebooks/08_comparison.py", "notebooks/09_new_cells.py",
                                                                "notebooks/10_rig_recordings.py"]
    (data / "demo" / "baseline" / "predictions.csv").unlink()
    assert make("paper") == ["notebooks/05_baseline.py", *LATER[6:]]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_help_starts_no_python_and_finds_no_files(tmp_path):
    r = subprocess.run(["make", "-n", "help", f"BUILD_DIR={tmp_path / 'build'}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    assert "python" not in r.stdout and not (tmp_path / "build").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("fault", ["deleted", "rewritten"])
def test_an_output_that_is_not_a_target_reruns_its_stage_when_deleted_or_rewritten(tmp_path, fault):
    # issue 26, item 5: scalograms.npy is read by every later stage but only index.csv is 02's make target
    data, figures, build = fake_finished_tree(tmp_path)
    npy = data / "demo" / "scalograms" / "scalograms.npy"
    npy.write_bytes(b"images")
    stamp = build / "demo" / ".params" / "02_scalograms.json"
    rec = json.loads(stamp.read_text())
    outputs = runner.stage_outputs(ROOT / "notebooks" / "02_scalograms.py", rec["params"])
    assert set(outputs) == {"scalograms/index.csv", "scalograms/scalograms.npy"}
    runner.record_stamp(stamp, rec["params"], rec["started"], outputs)
    venv = Path(sys.prefix)
    base = ["make", "-n", f"VENV={venv}", "-o", str(venv / ".sts-installed"), f"DATA_DIR={data}",
            f"FIGURES_DIR={figures}", f"BUILD_DIR={build}", "paper"]

    def plan():
        r = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return planned_pages(r.stdout)

    assert plan() == []
    if fault == "deleted":
        npy.unlink()
    else:  # same size, another content and time (a copy from elsewhere, a hand edit)
        npy.write_bytes(b"IMAGES")
    assert plan() == ["notebooks/02_scalograms.py", *LATER]


def test_a_stamp_records_only_the_stage_s_own_outputs(tmp_path):
    ddir = tmp_path / "data" / "demo"
    for rel in ("models/resnet18/model.pt", "models/resnet18/config.json", "models/resnet18/study.journal",
                "models/densenet121/model.pt", "models/resnet18/.model.part.pt"):
        (ddir / rel).parent.mkdir(parents=True, exist_ok=True)
        (ddir / rel).write_text("x")
    params = {"DATASET": "demo", "DATA_DIR": str(tmp_path / "data"), "BACKBONE": "resnet18"}
    got = runner.stage_outputs(ROOT / "notebooks" / "04_finetune.py", params)
    # the search's journal (also written by `make search`) and temporary files are not the stage's outputs
    assert set(got) == {"models/resnet18/model.pt", "models/resnet18/config.json"}
    assert all(size == 1 for size, _ in got.values())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_a_command_line_variable_no_page_declares_is_refused_in_one_line(tmp_path):
    # issue 24, item 3: the pages' parameter cells are the one list; a typo used to change nothing, silently
    data, figures, build = fake_finished_tree(tmp_path)
    venv = Path(sys.prefix)
    base = ["make", "--no-print-directory", "-n", f"VENV={venv}", "-o", str(venv / ".sts-installed"),
            f"DATA_DIR={data}", f"FIGURES_DIR={figures}", f"BUILD_DIR={build}"]
    r = subprocess.run([*base, "paper", "EPOCH=5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "EPOCH (did you mean EPOCHS?): not a parameter of any page" in errors[0], r.stderr
    assert planned_pages(r.stdout) == []
    # a parameter one page declares reaches that page's stamp only, and nothing else is forwarded
    r = subprocess.run([*base, "paper", "N_SCALES=128", "MODELS=x"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert planned_pages(r.stdout) == ["notebooks/02_scalograms.py", *LATER]
    assert "-p N_SCALES '128'" in r.stdout and "-p MODELS" not in r.stdout
