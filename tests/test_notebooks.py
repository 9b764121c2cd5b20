"""Notebook pages run through the runner from any folder and name what they miss (every page of a whole tiny
run is checked on the integration test's run, tests/test_integration.py)."""

import pytest

from sts_utils.pages.runner import execute_notebook
from tests.conftest import ROOT

TINY = {"N_CELLS": 3, "N_FI_CELLS": 2, "EPOCHS": 2, "N_TRIALS": 1, "N_FOLDS": 2, "TRIAL_EPOCHS": 1, "IMAGE_SIZE": 75,
        "N_ITER": 2, "IG_STEPS": 2, "N_BOOT": 20, "N_RESAMPLES": 200, "N_NEW_CELLS": 2, "BACKBONES": ["resnet18"], "TEST_FRACTION": 0.25}
ORDER = ["01_data_acquisition", "02_scalograms", "03_splitting", "04_finetune", "05_baseline", "06_testing", "07_saliency",
         "08_comparison", "09_new_cells", "10_rig_recordings"]


def outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


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
