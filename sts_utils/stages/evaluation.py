"""Testing stage (notebook 06): test predictions of every model, metrics with CIs, the results table.

The same functions score the CNNs and the LightGBM baseline (notebook 05), so their rows in
``figures/<dataset>/results_table.{csv,md}`` are comparable. Every prediction table has
``specimen_id``, ``model``, ``repeat``, ``true``, ``pred`` and one ``p_<class>`` column per class.
Metrics themselves live in :mod:`sts_utils.compute.metrics`; figures in :mod:`sts_utils.pages.plots`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sts_utils.core.config import CLASSES, dataset_dir, figures_dir, require, simulated_tag
from sts_utils.core.io import write_csv_atomic, write_table
from sts_utils.compute.metrics import balanced_accuracy, classification_summary, headline_predictions
from sts_utils.data.models import get_device, load_checkpoint, model_dir
from sts_utils.stages.splits import load_split, n_repeats_of
from sts_utils.data.store import ScalogramStore
from sts_utils.data.tables import predictions_frame
from sts_utils.stages.fit import predict_proba

def predict_test_split(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None, repeat: int = 0,
                       device: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Predictions of one trained backbone on the test cells of one split repeat, and its config."""
    model, config = load_checkpoint(model_dir(dataset, backbone, data_dir, repeat), get_device(device))
    store = ScalogramStore.load(dataset, data_dir)
    split = load_split(dataset, data_dir, repeat)
    test = split[split["split"] == "test"].merge(store.index[["specimen_id", "row"]], on="specimen_id").sort_values("row")
    proba = predict_proba(model, np.asarray(store.images[test["row"].to_numpy()], dtype=np.float32))
    return predictions_frame(test["specimen_id"], test["label"], proba, backbone, repeat), config


def collect_predictions(dataset: str, backbones: list[str], data_dir: str | os.PathLike | None = None,
                        device: str | None = None) -> tuple[pd.DataFrame, dict[str, dict], list[str]]:
    """Test predictions of every trained backbone (all repeats) and of the baseline, with each model's settings.

    Returns
    -------
    predictions, model_info (model -> settings for the results table), missing (backbones not trained)
    """
    ddir = dataset_dir(dataset, data_dir)
    trained = [b for b in backbones if (model_dir(dataset, b, data_dir) / "model.pt").exists()]
    frames = [predict_test_split(dataset, b, data_dir, repeat=r, device=device)[0]
              for b in trained for r in range(n_repeats_of(dataset, data_dir))]
    info = collect_model_info(dataset, data_dir)
    baseline = ddir / "baseline"
    if (baseline / "predictions.csv").exists():
        frames.append(pd.read_csv(baseline / "predictions.csv"))
        info["lightgbm"] = json.loads(require(baseline / "config.json").read_text())["table_info"]
    if not frames:
        require(model_dir(dataset, backbones[0] if backbones else "resnet18", data_dir) / "model.pt")
    return pd.concat(frames, ignore_index=True), info, sorted(set(backbones) - set(trained))


def results_table(predictions: pd.DataFrame, model_info: dict[str, dict], seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per model: balanced accuracy (95 % CI), accuracy, per-class recall and the model's settings.

    The point estimate and CI are computed on :func:`~sts_utils.compute.metrics.headline_predictions` (k folds
    pooled, every cell once; else repeat 0, named in ``scored_on``); with several repeats the balanced
    accuracy is also given as mean ± sd over repeats.
    """
    rows = []
    for model, g in predictions.groupby("model", sort=False):
        scored, scored_on = headline_predictions(g)
        s = classification_summary(scored["true"], scored["pred"], seed=seed, n_boot=n_boot)
        per_rep = [balanced_accuracy(r["true"], r["pred"]) for _, r in g.groupby("repeat")]
        info = model_info.get(model, {})
        row = {"model": model, "balanced_accuracy": s["balanced_accuracy"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
               "bacc_mean_over_repeats": float(np.mean(per_rep)), "bacc_sd_over_repeats": float(np.std(per_rep)),
               "n_repeats": len(per_rep), "scored_on": scored_on, "accuracy": s["accuracy"]}
        for c in CLASSES:
            row[f"recall_{c}"] = s[f"recall_{c}"]
        row.update({"weights": info.get("weights", ""), "image_size": info.get("image_size", ""),
                    "training_cells": info.get("training_cells", ""), "test_cells": s["n_test"],
                    "note": info.get("note", "")})
        rows.append(row)
    return pd.DataFrame(rows)


def collect_model_info(dataset: str, data_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Weights used, image size, profile and training-set size of every trained backbone (from config.json)."""
    out = {}
    mroot = dataset_dir(dataset, data_dir) / "models"
    for cfg_path in sorted(mroot.glob("*/config.json")):
        cfg = json.loads(cfg_path.read_text())
        m = cfg["model"]
        notes = []
        if m["weights"] == "random" and m.get("pretrained_requested") != "none":
            notes.append("random init: ImageNet weights not in the torch hub cache (PRETRAINED=auto)")
        elif m["weights"] == "random":
            notes.append("random init (PRETRAINED=none)")
        if cfg.get("profile"):
            notes.append(f"profile {cfg['profile']}")
        out[cfg["backbone"]] = {"weights": m["weights"], "image_size": m["image_size"],
                                "training_cells": cfg["n_train"] + cfg["n_val"], "note": "; ".join(notes)}
    return out


def write_results_table(dataset: str, table: pd.DataFrame, figures_root: str | os.PathLike | None = None,
                        n_boot: int = 1000) -> tuple[Path, Path]:
    """``results_table.{csv,md}`` with a caption that says what the numbers are (and when they are simulated)."""
    caption = (f"Test-set results on `{dataset}`{simulated_tag(dataset)}. Balanced accuracy with a 95 % "
               f"bootstrap CI ({n_boot:,} resamples of test cells); recall per class.")
    return write_table(table, figures_dir(dataset, figures_root) / "results_table", caption=caption)


def write_predictions(dataset: str, predictions: pd.DataFrame, data_dir: str | os.PathLike | None = None) -> Path:
    """``data/<dataset>/predictions.csv``: every model's test predictions."""
    return write_csv_atomic(predictions, dataset_dir(dataset, data_dir) / "predictions.csv")
