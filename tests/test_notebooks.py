"""Every notebook runs on a tiny configuration (the papermill path `make paper` uses) and shows its figures."""
import json

import nbformat
import pandas as pd
import pytest

from sts_utils.runner import execute_notebook
from tests.conftest import ROOT

TINY = {"N_CELLS": 3, "N_FI_CELLS": 2, "EPOCHS": 2, "N_TRIALS": 1, "N_FOLDS": 2, "TRIAL_EPOCHS": 1, "IMAGE_SIZE": 75,
        "N_ITER": 2, "IG_STEPS": 2, "N_BOOT": 20, "N_RESAMPLES": 200, "N_NEW_CELLS": 2, "BACKBONES": ["resnet18"], "TEST_FRACTION": 0.25}
ORDER = ["01_data_acquisition", "02_scalograms", "03_splitting", "04_finetune", "05_baseline", "06_testing", "07_saliency",
         "08_comparison", "09_new_cells"]


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


@pytest.mark.slow
def test_every_notebook_runs_in_numeric_order_and_shows_its_figures(tmp_path):
    data, figs, build = tmp_path / "data", tmp_path / "figures", tmp_path / "build"
    common = {"DATASET": "demo", "SEED": 0, "DATA_DIR": str(data), "FIGURES_DIR": str(figs), **TINY}
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")) == ORDER
    for name in ORDER:
        before = {p.name for p in (figs / "demo").glob("*.png")} if (figs / "demo").exists() else set()
        nb = nbformat.read(execute_notebook(ROOT / "notebooks" / f"{name}.py", build / f"{name}.ipynb", common,
                                            cwd=ROOT, log_output=False), as_version=4)
        written = {p.name for p in (figs / "demo").glob("*.png")} - before
        images = outputs(nb, "image/png")
        # every figure the page writes is on the page (a page may show a figure more than once, never less)
        assert len(images) >= len(written), (name, sorted(written), len(images))
        text = json.dumps([c.get("outputs", []) for c in nb.cells])
        assert "PosixPath" not in text, name
        assert text.count("\\r") < 5 and "it/s" not in text, f"{name}: progress bars in the executed notebook"
    table = pd.read_csv(figs / "demo" / "results_table.csv")
    assert list(table.model) == ["resnet18", "lightgbm"]
    assert table.balanced_accuracy.between(0, 1).all()
    for f in ["example_traces.png", "fi_curves.png", "sweep_to_scalogram.png", "scalograms_class_means.png",
              "split_counts.png", "training_resnet18.png", "confusion_panel.png", "saliency_examples.png",
              "deletion_table.csv", "baseline_importance.csv", "audit_table.csv", "comparison_paired.png",
              "learning_curve.png"]:
        assert (figs / "demo" / f).exists(), f
    assert "[SIMULATED demo cohort]" in (figs / "demo" / "results_table.md").read_text()


def test_a_page_run_from_the_notebooks_folder_finds_the_project_data(tiny_demo, tmp_path, monkeypatch):
    """JupyterLab starts kernels in notebooks/: DATA_DIR left unset still means the project's data folder."""
    monkeypatch.setenv("STS_DATA_DIR", str(tiny_demo))
    out = execute_notebook(ROOT / "notebooks" / "03_splitting.py", tmp_path / "03.ipynb",
                           {"FIGURES_DIR": str(tmp_path / "figs"), "TEST_FRACTION": 0.25}, cwd=ROOT / "notebooks",
                           log_output=False)
    assert out.exists() and (tmp_path / "figs" / "demo" / "split_counts.png").exists()
    assert not (ROOT / "notebooks" / "data").exists() and not (ROOT / "notebooks" / "figures").exists()


def test_a_missing_upstream_artifact_names_the_notebook_and_target(tmp_path):
    with pytest.raises(Exception) as err:
        execute_notebook(ROOT / "notebooks" / "03_splitting.py", tmp_path / "03.ipynb",
                         {"DATA_DIR": str(tmp_path / "empty"), "FIGURES_DIR": str(tmp_path / "figs")}, cwd=ROOT / "notebooks",
                         log_output=False)
    assert "run notebook 02_scalograms first (make scalograms DATASET=demo)" in str(err.value)
