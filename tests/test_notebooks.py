"""Smoke run of every notebook on a tiny configuration (the papermill path `make paper` uses)."""
import pandas as pd
import pytest

from sts_utils.runner import execute_notebook
from tests.conftest import ROOT

TINY = {"N_CELLS": 3, "N_FI_CELLS": 2, "EPOCHS": 2, "N_TRIALS": 1, "N_FOLDS": 2, "TRIAL_EPOCHS": 1, "IMAGE_SIZE": 75,
        "N_ITER": 2, "IG_STEPS": 2, "N_BOOT": 20, "BACKBONES": ["resnet18"], "TEST_FRACTION": 0.25}


@pytest.mark.slow
def test_every_notebook_runs_on_a_tiny_configuration(tmp_path):
    data, figs, build = tmp_path / "data", tmp_path / "figures", tmp_path / "build"
    common = {"DATASET": "demo", "SEED": 0, "DATA_DIR": str(data), "FIGURES_DIR": str(figs), **TINY}
    order = ["01_data_acquisition", "02_scalograms", "03_splitting", "04_finetune", "07_baseline", "05_testing", "06_saliency"]
    for name in order:
        execute_notebook(ROOT / "notebooks" / f"{name}.py", build / f"{name}.ipynb", common, cwd=ROOT, log_output=False)
        assert (build / f"{name}.ipynb").exists()
    table = pd.read_csv(figs / "demo" / "results_table.csv")
    assert list(table.model) == ["resnet18", "lightgbm"]
    assert table.balanced_accuracy.between(0, 1).all()
    for f in ["example_traces.png", "fi_curves.png", "sweep_to_scalogram.png", "scalograms_class_means.png",
              "split_counts.png", "training_resnet18.png", "confusion_panel.png", "saliency_examples.png",
              "deletion_table.csv", "baseline_importance.csv", "audit_table.csv"]:
        assert (figs / "demo" / f).exists(), f
    assert "[SIMULATED demo cohort]" in (figs / "demo" / "results_table.md").read_text()
