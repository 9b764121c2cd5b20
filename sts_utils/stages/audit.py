"""Confound and label-quality audit: what could a result be leaning on?

Three checks, run on every dataset by notebook 05:

* **Per-group results** — balanced accuracy of every model per source dataset and per protocol
  version (``cells.csv`` columns ``source`` / ``protocol_version``), with counts.
* **Leakage probe** — how well the models' own inputs predict the group (source / protocol version):
  scalograms pooled over time (mean power per frequency row and channel) and the feature table, each
  through a cross-validated logistic regression (balanced accuracy; chance = 1 / number of groups).
  Then the class probe on the same inputs: across all cells, and *within* each group (train and test
  inside one group only), and for features with the single strongest group-predicting feature removed.
  A class result that collapses within groups was reading the group, not the cell type.
* **Label quality** — results with and without the cells whose label is flagged in ``cells.csv``
  (``label_flags``: Cre line vs dendrite type, reporter-negative, patch-seq Excitatory from morphology).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sts_utils.core.config import CLASSES, dataset_dir
from sts_utils.compute.metrics import balanced_accuracy
from sts_utils.data.store import ScalogramStore
from sts_utils.data.tables import read_cells

GROUP_COLUMNS = ("source", "protocol_version")


def group_table(predictions: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Balanced accuracy and test counts of every model per source and protocol version (repeat 0)."""
    rows = []
    pred = predictions[predictions["repeat"] == 0]
    for col in GROUP_COLUMNS:
        if col not in cells.columns:
            continue
        df = pred.merge(cells[["specimen_id", col]], on="specimen_id", how="left")
        for (model, value), g in df.groupby(["model", col], dropna=False):
            rows.append({"model": model, "group_by": col, "group": value, "n_test": len(g),
                         "classes_present": int(g["true"].nunique()), "balanced_accuracy": balanced_accuracy(g["true"], g["pred"])})
    return pd.DataFrame(rows)


def cv_probe(X: np.ndarray, y: np.ndarray, seed: int = 0, n_folds: int = 5) -> float:
    """Cross-validated balanced accuracy of a standardised logistic regression (NaN -> column median)."""
    y = np.asarray(y)
    values, counts = np.unique(y, return_counts=True)
    if len(values) < 2 or counts.min() < 2:
        return float("nan")
    X = np.asarray(X, dtype=float)
    med = np.nanmedian(X, axis=0)
    X = np.where(np.isnan(X), np.where(np.isnan(med), 0.0, med), X)
    folds = StratifiedKFold(n_splits=int(min(n_folds, counts.min())), shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    pred = cross_val_predict(clf, X, y, cv=folds)
    return balanced_accuracy(y, pred)


def pooled_scalograms(images: np.ndarray) -> np.ndarray:
    """Mean power per frequency row and channel (cells x channels*scales): a cheap view of each input."""
    return np.asarray(images, dtype=np.float32).mean(axis=-1).reshape(len(images), -1)


def leakage_probe(X: np.ndarray, labels: np.ndarray, groups: np.ndarray, input_name: str, group_name: str,
                  feature_names: list[str] | None = None, seed: int = 0) -> list[dict]:
    """Group predictability of an input, and the class probe overall, within groups, and without the top shortcut."""
    rows = []
    groups = np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    row = {"input": input_name, "group_by": group_name, "n_groups": n_groups}
    rows.append({**row, "probe": "group from input", "balanced_accuracy": cv_probe(X, groups, seed),
                 "chance": 1.0 / max(n_groups, 1), "n_cells": len(groups)})
    rows.append({**row, "probe": "class from input (all cells)", "balanced_accuracy": cv_probe(X, labels, seed),
                 "chance": 1.0 / len(np.unique(labels)), "n_cells": len(labels)})
    for g in np.unique(groups):
        sel = groups == g
        rows.append({**row, "probe": f"class within {group_name}={g}", "balanced_accuracy": cv_probe(X[sel], labels[sel], seed),
                     "chance": 1.0 / max(len(np.unique(labels[sel])), 1), "n_cells": int(sel.sum())})
    if feature_names is not None and n_groups > 1 and X.shape[1] > 1:
        single = [cv_probe(X[:, [j]], groups, seed) for j in range(X.shape[1])]
        j = int(np.nanargmax(single))
        rows.append({**row, "probe": f"group from '{feature_names[j]}' alone", "balanced_accuracy": single[j],
                     "chance": 1.0 / n_groups, "n_cells": len(groups)})
        rows.append({**row, "probe": f"class without '{feature_names[j]}'", "balanced_accuracy": cv_probe(np.delete(X, j, axis=1), labels, seed),
                     "chance": 1.0 / len(np.unique(labels)), "n_cells": len(labels)})
    return rows


def label_quality(predictions: pd.DataFrame, cells: pd.DataFrame) -> list[dict]:
    """Balanced accuracy of each model on all test cells and on the unflagged ones."""
    if "label_flags" not in cells.columns:
        return []
    flags = cells.set_index("specimen_id")["label_flags"].fillna("")
    rows = []
    for model, g in predictions[predictions["repeat"] == 0].groupby("model"):
        flagged = g["specimen_id"].map(flags).fillna("") != ""
        # chance of balanced accuracy is one over the number of classes present in the cells scored
        rows.append({"input": model, "group_by": "label_flags", "probe": "test, all cells", "n_cells": len(g),
                     "balanced_accuracy": balanced_accuracy(g["true"], g["pred"]),
                     "chance": 1.0 / max(g["true"].nunique(), 1)})
        rows.append({"input": model, "group_by": "label_flags", "probe": "test, unflagged cells only", "n_cells": int((~flagged).sum()),
                     "balanced_accuracy": balanced_accuracy(g.loc[~flagged, "true"], g.loc[~flagged, "pred"]),
                     "chance": 1.0 / max(g.loc[~flagged, "true"].nunique(), 1)})
    return rows


def run_audit(dataset: str, data_dir: str | os.PathLike | None, predictions: pd.DataFrame, seed: int = 0) -> dict:
    """All checks for one dataset: a table and a short reading written from the numbers.

    The feature probes read ``baseline/features_used.csv``, the very table the LightGBM model was
    trained on (notebook 05), not the unselected ipfx record.
    """
    ddir = dataset_dir(dataset, data_dir)
    cells = read_cells(ddir / "cells.csv")
    rows: list[dict] = []
    store = ScalogramStore.load(dataset, data_dir)
    idx = store.index.merge(cells, on=["specimen_id", "label"], how="left")
    X_s = pooled_scalograms(store.images[idx["row"].to_numpy()])
    used = ddir / "baseline" / "features_used.csv"
    feats = pd.read_csv(used) if used.exists() else None
    for col in GROUP_COLUMNS:
        if col not in idx.columns:
            continue
        rows += leakage_probe(X_s, idx["label"].to_numpy(), idx[col].fillna("unknown").to_numpy(), "scalograms (pooled)", col, seed=seed)
        if feats is not None:
            f = feats.merge(cells[["specimen_id", "label", col]], on="specimen_id")
            f = f[f["label"].isin(CLASSES)]
            names = [c for c in feats.columns if c != "specimen_id"]
            rows += leakage_probe(f[names].to_numpy(dtype=float), f["label"].to_numpy(), f[col].fillna("unknown").to_numpy(),
                                  "features", col, feature_names=names, seed=seed)
    rows += label_quality(predictions, cells)
    table = pd.DataFrame(rows)
    for col in ("n_groups", "n_cells"):
        if col in table:
            table[col] = table[col].astype("Int64")
    return {"table": table, "reading": audit_reading(table)}


def audit_reading(table: pd.DataFrame) -> str:
    """A few sentences from the audit numbers (no claim the numbers do not support)."""
    lines = []
    for (inp, col), g in table[table["group_by"].isin(GROUP_COLUMNS)].groupby(["input", "group_by"]):
        n_groups = int(g["n_groups"].iloc[0])
        overall = g[g["probe"] == "class from input (all cells)"]["balanced_accuracy"].iloc[0]
        if n_groups < 2:
            lines.append(f"- {inp}: a single {col} here, so no {col} shortcut can be tested; class probe {overall:.2f}.")
            continue
        grp = g[g["probe"] == "group from input"]["balanced_accuracy"].iloc[0]
        within = g[g["probe"].str.startswith("class within")]["balanced_accuracy"]
        lines.append(f"- {inp}: {col} is predicted at {grp:.2f} balanced accuracy (chance {1 / n_groups:.2f}); "
                     f"the class probe gives {overall:.2f} over all cells and "
                     f"{', '.join(f'{v:.2f}' for v in within.dropna())} within each {col}"
                     + (" — the class signal survives inside groups." if within.dropna().min() > 0.5 else
                        " — part of the class signal may come from the group."))
    lq = table[table["group_by"] == "label_flags"]
    if len(lq):
        for model, g in lq.groupby("input"):
            a, u = g["balanced_accuracy"].to_numpy()[:2]
            n_all, n_unf = g["n_cells"].to_numpy()[:2]
            lines.append(f"- {model}: {a:.2f} on all {n_all} test cells, {u:.2f} on the {n_unf} with unflagged labels.")
    return "\n".join(lines) if lines else "No audit result."
