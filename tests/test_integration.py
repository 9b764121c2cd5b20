"""`make paper` end to end on a tiny demo configuration: outputs, up-to-date skip, reruns that rerun."""
import os
import subprocess

import pandas as pd
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

TINY = ["N_CELLS=3", "N_FI_CELLS=2", "EPOCHS=2", "N_TRIALS=1", "N_FOLDS=2", "TRIAL_EPOCHS=1", "IMAGE_SIZE=75",
        "N_ITER=2", "IG_STEPS=2", "N_BOOT=20", "N_RESAMPLES=200", "N_NEW_CELLS=2", "TEST_FRACTION=0.25"]
LATER = ["notebooks/03_splitting.py", "notebooks/04_finetune.py", "notebooks/04_finetune.py", "notebooks/04_finetune.py",
         "notebooks/04_finetune.py", "notebooks/05_baseline.py", "notebooks/06_testing.py", "notebooks/07_saliency.py",
         "notebooks/08_comparison.py", "notebooks/09_new_cells.py"]


def make(tmp_path, *args):
    """Run make with data, figures and executed notebooks under ``tmp_path``."""
    dirs = [f"DATA_DIR={tmp_path / 'data'}", f"FIGURES_DIR={tmp_path / 'figures'}", f"BUILD_DIR={tmp_path / 'build'}"]
    env = {**os.environ, "STS_OFFLINE": "1"}
    return subprocess.run(["make", *args, *dirs, *TINY], cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)


def planned(out: str) -> list[str]:
    """Notebooks a `make -n` would execute (parameter-stamp checks are not executions)."""
    lines = [line.split() for line in out.splitlines() if "sts_utils.runner" in line and "--stamp" not in line]
    return [words[words.index("sts_utils.runner") + 1] for words in lines]


def test_make_paper_on_tiny_demo(tmp_path):
    r = make(tmp_path, "paper")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    figs = tmp_path / "figures" / "demo"
    table = pd.read_csv(figs / "results_table.csv")
    assert set(table.model) == {"resnet18", "inception_v3", "densenet121", "mobilenet_v2", "lightgbm"}
    for f in ["confusion_panel.png", "saliency_grid.png", "saliency_deletion.png", "deletion_table.csv",
              "baseline_confusion.png", "baseline_shap_Pvalb.png", "audit.png"]:
        assert (figs / f).exists(), f
    notebooks = ["01_data_acquisition", "02_scalograms", "03_splitting", "04_finetune_resnet18", "05_baseline",
                 "06_testing", "07_saliency", "08_comparison", "09_new_cells"]
    for nb in notebooks:
        assert (tmp_path / "build" / "demo" / f"{nb}.ipynb").exists(), nb
    # the run order is the numbering
    order = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("executed ")]
    assert order == sorted(order), order
    # nothing to redo
    assert planned(make(tmp_path, "-n", "paper").stdout) == []
    # a changed parameter reruns its stage and everything after it; a dry run leaves no trace
    assert planned(make(tmp_path, "-n", "scalograms", "N_SCALES=128").stdout) == ["notebooks/02_scalograms.py"]
    assert planned(make(tmp_path, "-n", "paper", "N_SCALES=128").stdout) == ["notebooks/02_scalograms.py", *LATER]
    assert planned(make(tmp_path, "-n", "paper").stdout) == []
    # a changed training parameter reruns the training of every backbone and what follows, not the data stages
    assert planned(make(tmp_path, "-n", "paper", "PATIENCE=4").stdout) == LATER[1:5] + LATER[6:]
    # deleting the baseline predictions redoes the baseline and what depends on it, nothing else
    (tmp_path / "data" / "demo" / "baseline" / "predictions.csv").unlink()
    assert planned(make(tmp_path, "-n", "paper").stdout) == ["notebooks/05_baseline.py", "notebooks/06_testing.py",
                                                              "notebooks/07_saliency.py", "notebooks/08_comparison.py",
                                                              "notebooks/09_new_cells.py"]
    # a changed raw file reruns acquisition (which re-verifies it) and what depends on it
    raw = sorted((tmp_path / "data" / "demo" / "raw").glob("sub-*/*.nwb"))[0]
    os.utime(raw)
    assert planned(make(tmp_path, "-n", "paper").stdout)[:2] == ["notebooks/01_data_acquisition.py",
                                                                "notebooks/02_scalograms.py"]


def test_two_clean_runs_give_identical_tables(tmp_path):
    tables = []
    for run in ("a", "b"):
        r = make(tmp_path / run, "paper")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        figs = tmp_path / run / "figures" / "demo"
        tables.append({name: (figs / name).read_text() for name in
                       ("results_table.csv", "baseline_results.csv", "deletion_table.csv", "audit_table.csv")})
    for name in tables[0]:
        assert tables[0][name] == tables[1][name], name
