"""Evaluation stage: test predictions, metrics with bootstrap CIs, confusion matrices, results table.

The same functions score the CNNs (notebook 05) and the LightGBM baseline (notebook 07), so their
rows in ``figures/<dataset>/results_table.{csv,md}`` are comparable. Every prediction file has
``specimen_id``, ``model``, ``repeat``, ``true``, ``pred`` and one ``p_<class>`` column per class.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from .config import CLASSES, dataset_dir, figures_dir, simulated_tag
from .io import write_csv_atomic, write_table

PROBA_COLUMNS = [f"p_{c}" for c in CLASSES]


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in ``y_true`` (equals scikit-learn's definition)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def bootstrap_ci(y_true, y_pred, metric=balanced_accuracy, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
                 ) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap CI (resampling cells with replacement, seeded)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    point = metric(y_true, y_pred)
    if len(y_true) < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(y_true), len(y_true))
        stats[b] = metric(y_true[idx], y_pred[idx])
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(lo), float(hi)


def classification_summary(y_true, y_pred, seed: int = 0, n_boot: int = 1000) -> dict:
    """Balanced accuracy with 95 % CI, accuracy, and per-class precision / recall / F1 / support."""
    bacc, lo, hi = bootstrap_ci(y_true, y_pred, n_boot=n_boot, seed=seed)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(CLASSES), zero_division=0)
    out = {"balanced_accuracy": bacc, "ci_low": lo, "ci_high": hi, "accuracy": float(accuracy_score(y_true, y_pred)),
           "n_test": int(len(y_true))}
    for c, pi, ri, fi, si in zip(CLASSES, p, r, f, s):
        out[f"precision_{c}"], out[f"recall_{c}"], out[f"f1_{c}"], out[f"support_{c}"] = float(pi), float(ri), float(fi), int(si)
    return out


def per_class_report(y_true, y_pred) -> pd.DataFrame:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(CLASSES), zero_division=0)
    return pd.DataFrame({"class": CLASSES, "precision": p, "recall": r, "f1": f, "support": s})


def confusion_figure(y_true, y_pred, title: str, ax=None):
    """Row-normalised confusion matrix (seaborn heatmap) annotated with counts."""
    import seaborn as sns

    cm = confusion_matrix(y_true, y_pred, labels=list(CLASSES))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    annot = np.array([[f"{n}\n{v:.0%}" for n, v in zip(rc, rv)] for rc, rv in zip(cm, norm)])
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(4.6, 4))
    sns.heatmap(norm, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                xticklabels=CLASSES, yticklabels=CLASSES, square=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return ax.figure


def predictions_frame(specimen_ids, y_true: list[str], proba: np.ndarray, model: str, repeat: int = 0) -> pd.DataFrame:
    df = pd.DataFrame({"specimen_id": np.asarray(specimen_ids, dtype=np.int64), "model": model, "repeat": repeat,
                       "true": list(y_true), "pred": [CLASSES[i] for i in np.asarray(proba).argmax(1)]})
    for k, c in enumerate(PROBA_COLUMNS):
        df[c] = np.asarray(proba)[:, k]
    return df


def predict_test_split(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None, repeat: int = 0,
                       device: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Predictions of one trained backbone on the test cells of one split repeat."""
    from .models import get_device, load_checkpoint
    from .scalograms import ScalogramStore
    from .splits import load_split
    from .training import predict_proba

    ddir = dataset_dir(dataset, data_dir)
    mdir = ddir / "models" / backbone / ("" if repeat == 0 else f"repeat_{repeat}")
    model, config = load_checkpoint(mdir, get_device(device))
    store = ScalogramStore.load(dataset, data_dir)
    split = load_split(dataset, data_dir, repeat)
    test = split[split["split"] == "test"].merge(store.index[["specimen_id", "row"]], on="specimen_id").sort_values("row")
    proba = predict_proba(model, np.asarray(store.images[test["row"].to_numpy()], dtype=np.float32))
    return predictions_frame(test["specimen_id"], test["label"], proba, backbone, repeat), config


def results_table(predictions: pd.DataFrame, model_info: dict[str, dict], seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per model: balanced accuracy (95 % CI), accuracy, per-class recall and the model's settings.

    With several split repeats, the balanced accuracy is reported as mean ± sd over repeats and the
    CI is that of repeat 0.
    """
    rows = []
    for model, g in predictions.groupby("model", sort=False):
        first = g[g["repeat"] == g["repeat"].min()]
        s = classification_summary(first["true"], first["pred"], seed=seed, n_boot=n_boot)
        per_rep = [balanced_accuracy(r["true"], r["pred"]) for _, r in g.groupby("repeat")]
        info = model_info.get(model, {})
        row = {"model": model, "balanced_accuracy": s["balanced_accuracy"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
               "bacc_mean_over_repeats": float(np.mean(per_rep)), "bacc_sd_over_repeats": float(np.std(per_rep)),
               "n_repeats": len(per_rep), "accuracy": s["accuracy"]}
        for c in CLASSES:
            row[f"recall_{c}"] = s[f"recall_{c}"]
        row.update({"weights": info.get("weights", ""), "image_size": info.get("image_size", ""),
                    "training_cells": info.get("training_cells", ""), "test_cells": s["n_test"],
                    "note": info.get("note", "")})
        rows.append(row)
    return pd.DataFrame(rows)


def collect_model_info(dataset: str, data_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Weights used, image size and training-set size of every trained backbone (from config.json)."""
    out = {}
    mroot = dataset_dir(dataset, data_dir) / "models"
    for cfg_path in sorted(mroot.glob("*/config.json")):
        cfg = json.loads(cfg_path.read_text())
        m = cfg["model"]
        note = m.get("warning", "")
        out[cfg["backbone"]] = {"weights": m["weights"], "image_size": m["image_size"],
                                "training_cells": cfg["n_train"] + cfg["n_val"],
                                "note": "random init: ImageNet weights unavailable (PRETRAINED=auto)" if note else ""}
    return out


def write_results_table(dataset: str, table: pd.DataFrame, figures_root: str | os.PathLike | None = None,
                        n_boot: int = 1000) -> tuple[Path, Path]:
    caption = (f"Test-set results on `{dataset}`{simulated_tag(dataset)}. Balanced accuracy with a 95 % "
               f"bootstrap CI ({n_boot:,} resamples of test cells); recall per class.")
    return write_table(table, figures_dir(dataset, figures_root) / "results_table", caption=caption)
