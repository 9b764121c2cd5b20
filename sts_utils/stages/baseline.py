"""Baseline stage: LightGBM on electrophysiology features, searched, refit, explained.

Model and search follow the paper: ``LGBMClassifier`` with a Bayesian search (Optuna TPE here, the
paper used scikit-optimize's ``BayesSearchCV``) over ``num_leaves, max_depth, learning_rate,
n_estimators, min_child_samples, subsample, colsample_bytree, reg_alpha, reg_lambda``, scored by
3-fold stratified CV balanced accuracy on the training split, ``N_ITER`` trials (paper: 50), then a
refit on the whole training split. Missing feature values are left to LightGBM's native NaN
handling. Explanations are LightGBM's own SHAP values (``pred_contrib=True``): per row and class,
the contributions plus the expected value equal the raw margin.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from tqdm import tqdm

from sts_utils.core.config import CLASSES, dataset_dir, logger, progress_stream, raw_dir
from sts_utils.stages.features import compute_features, load_feature_tables, select_features
from sts_utils.compute.fusion import proba_in_order
from sts_utils.core.io import atomic_path, write_csv_atomic, write_text_atomic
from sts_utils.data.labels import read_paper_split
from sts_utils.data.profiles import suggest
from sts_utils.stages.splits import load_split, n_repeats_of
from sts_utils.data.tables import predictions_frame, read_cells

LGBM_SPACE = {
    "num_leaves": ("int", 10, 100),
    "max_depth": ("int", 3, 12),
    "learning_rate": ("log", 1e-3, 0.2),
    "n_estimators": ("int", 50, 300),
    "min_child_samples": ("int", 5, 30),
    "subsample": ("float", 0.5, 1.0),
    "colsample_bytree": ("float", 0.5, 1.0),
    "reg_alpha": ("float", 0.0, 1.0),
    "reg_lambda": ("float", 0.0, 1.0),
}


def make_lgbm(params: dict | None = None, seed: int = 0):
    # subsample needs bagging every iteration to take effect; n_jobs=1 keeps results bit-identical
    return LGBMClassifier(random_state=seed, verbose=-1, n_jobs=1, subsample_freq=1, deterministic=True,
                          force_row_wise=True, **(params or {}))


def prepare_xy(features: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.Series, dict]:
    """Join features to labels; drop rows without any feature value (counted); check the classes."""
    if "specimen_id" not in features.columns or "specimen_id" not in labels.columns:
        raise ValueError("features and labels both need a 'specimen_id' column")
    df = labels[["specimen_id", "label"]].merge(features, on="specimen_id", how="inner")
    unknown = sorted(set(df["label"]) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown class labels {unknown}; expected {CLASSES} (drop Unsure cells first)")
    X = df.drop(columns=["specimen_id", "label"]).apply(pd.to_numeric, errors="coerce")
    empty = X.isna().all(axis=1)
    skipped = {"no_feature_values": int(empty.sum()), "without_features": int((~labels["specimen_id"].isin(features["specimen_id"])).sum())}
    if empty.any():
        logger.warning("%d cells have no feature value and are skipped", int(empty.sum()))
    df, X = df[~empty], X[~empty]
    y = np.array([CLASSES.index(c) for c in df["label"]])
    return X.reset_index(drop=True), y, df["specimen_id"].reset_index(drop=True), skipped


def search_lightgbm(X: pd.DataFrame, y: np.ndarray, n_iter: int = 50, seed: int = 0, n_folds: int = 3,
                    space: dict | None = None, progress: bool = True, n_jobs: int = 1):
    """Bayesian search (TPE) with stratified CV balanced accuracy; returns the refit model, best params, trials.

    ``n_jobs`` processes fit a trial's folds at once; each fit is single-threaded and deterministic, so
    the scores do not depend on ``n_jobs``.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space or LGBM_SPACE
    n_folds = max(2, min(n_folds, int(np.bincount(y).min())))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)

    def objective(trial):
        params = suggest(trial, space)
        return float(cross_val_score(make_lgbm(params, seed), X, y, cv=cv, scoring="balanced_accuracy",
                                     n_jobs=n_jobs).mean())

    best_params: dict = {}
    trials = pd.DataFrame()
    if n_iter > 0:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        bar = tqdm(total=n_iter, desc="LightGBM search", disable=not progress, file=progress_stream())
        study.optimize(objective, n_trials=n_iter, callbacks=[lambda s, t: bar.update(1)])
        bar.close()
        best_params = dict(study.best_params)
        trials = study.trials_dataframe(attrs=("number", "value", "params")).rename(columns={"value": "cv_balanced_accuracy"})
    model = make_lgbm(best_params, seed).fit(X, y)
    return model, best_params, trials


def class_proba(model, X: pd.DataFrame) -> np.ndarray:
    """Probabilities cells x the four :data:`CLASSES` (0 for a class the training split did not hold).

    LightGBM predicts only the classes it was fitted on; a small training split (a registered folder of
    a few cells, a fold whose only cell of a class had no features) can lack one.
    """
    return proba_in_order(model, X, np.arange(len(CLASSES)))


def shap_contributions(model, X: pd.DataFrame) -> np.ndarray:
    """SHAP values from LightGBM (``pred_contrib``): array cells x (features + 1) x the model's classes.

    The last feature slot is the expected value; summing over slots gives the raw margin. The class
    axis follows ``model.classes_`` (all four :data:`CLASSES` unless the training split lacked one).
    """
    raw = model.booster_.predict(X, pred_contrib=True)
    n_classes = model.n_classes_
    return np.asarray(raw).reshape(len(X), n_classes, X.shape[1] + 1).transpose(0, 2, 1)


def raw_margin(model, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.booster_.predict(X, raw_score=True)).reshape(len(X), -1)


def importance_table(contrib: np.ndarray, feature_names: list[str], classes: list[str] | None = None) -> pd.DataFrame:
    """Mean |SHAP| per feature, overall and per class (sorted by the overall importance).

    ``classes``: the names of ``contrib``'s class axis (the model's classes; default all four).
    """
    mean_abs = np.abs(contrib[:, :-1, :]).mean(axis=0)  # features x classes
    names = list(classes) if classes is not None else list(CLASSES[: mean_abs.shape[1]])
    df = pd.DataFrame(mean_abs, columns=[f"mean_abs_shap_{c}" for c in names])
    df.insert(0, "feature", feature_names)
    df["mean_abs_shap"] = mean_abs.mean(axis=1)
    return df.sort_values("mean_abs_shap", ascending=False).reset_index(drop=True)


@dataclass
class BaselineResult:
    """What notebook 05 shows: predictions of every repeat, and repeat 0's model with its inputs."""

    predictions: pd.DataFrame
    model: object
    best_params: dict
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    table_info: dict
    skipped: dict
    feature_source: str
    qc: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)


def feature_table(dataset: str, data_dir: str | os.PathLike | None = None, feature_tables: list[str] | None = None,
                  feature_set: str = "all", n_jobs: int = 2, seed: int = 0) -> tuple[pd.DataFrame, str, pd.DataFrame | None]:
    """The baseline's feature table, where it comes from, and the per-cell QC of computed features.

    ``feature_tables=None``: ipfx features computed from the recordings (teeter2018: its published
    long-square table ``features_7_27_17.csv``, as it has no voltage recordings).
    """
    ddir = dataset_dir(dataset, data_dir)
    if feature_tables is None and dataset == "teeter2018":
        feature_tables = [str(raw_dir(dataset, data_dir) / "GLIF_clustering" / "features_7_27_17.csv")]
    if feature_tables:
        table = load_feature_tables(feature_tables, feature_set)
        write_csv_atomic(table, ddir / "features.csv")
        return table, "published tables: " + ", ".join(str(p) for p in feature_tables), None
    _, qc = compute_features(dataset, data_dir, n_jobs=n_jobs, seed=seed)
    # the table as stored: CSV does not round-trip every float's last bit, and the model must be the one a
    # rerun from features.csv (or the audit, which reads the stored table) would see
    stored = pd.read_csv(ddir / "features.csv")
    return select_features([stored], feature_set), "ipfx LongSquareAnalysis on the recordings", qc


def run_baseline(dataset: str, data_dir: str | os.PathLike | None = None, feature_tables: list[str] | None = None,
                 split_files: list[str] | None = None, feature_set: str = "all", n_iter: int = 30, n_jobs: int = 2,
                 seed: int = 0, progress: bool = True) -> BaselineResult:
    """Search, refit and test LightGBM on every split repeat; write ``baseline/`` (no pickle).

    Writes ``predictions.csv``, ``trials.csv`` (repeat 0), ``model.txt`` (LightGBM's text format),
    ``features_used.csv`` (the exact table the model saw, for the audit) and ``config.json``.
    """
    ddir = dataset_dir(dataset, data_dir)
    table, source, qc = feature_table(dataset, data_dir, feature_tables, feature_set, n_jobs, seed)
    if split_files:
        split = read_paper_split(*split_files).merge(read_cells(ddir / "cells.csv")[["specimen_id", "label"]], on="specimen_id")
        split["repeat"] = 0
    else:
        split = pd.concat([load_split(dataset, data_dir, r) for r in range(n_repeats_of(dataset, data_dir))])
    split = split[split.label.isin(CLASSES)]
    preds, fits, skipped = [], {}, {}
    for repeat, sp in split.groupby("repeat"):
        Xtr, ytr, _, sk_tr = prepare_xy(table, sp[sp.split == "train"])
        Xte, yte, ids_te, sk_te = prepare_xy(table, sp[sp.split == "test"])
        skipped[int(repeat)] = {"train": sk_tr, "test": sk_te}
        model, best, trials = search_lightgbm(Xtr, ytr, n_iter=n_iter, seed=seed + int(repeat), progress=progress,
                                              n_jobs=n_jobs)
        proba = class_proba(model, Xte[Xtr.columns])
        preds.append(predictions_frame(ids_te, [CLASSES[i] for i in yte], proba, "lightgbm", int(repeat)))
        fits[int(repeat)] = (model, best, trials, Xtr, Xte[Xtr.columns])
    predictions = pd.concat(preds, ignore_index=True)
    model, best, trials, Xtr, Xte = fits[min(fits)]
    out = ddir / "baseline"
    write_csv_atomic(trials, out / "trials.csv")
    with atomic_path(out / "model.txt") as tmp:
        model.booster_.save_model(str(tmp))  # LightGBM's own text format, no pickle
    used = table[table["specimen_id"].isin(split["specimen_id"])][["specimen_id", *Xtr.columns]]
    write_csv_atomic(used, out / "features_used.csv")
    info = {"weights": "n/a", "image_size": "n/a", "training_cells": int(len(Xtr)),
            "note": f"LightGBM on {Xtr.shape[1]} features ({feature_set}; {source.split(':')[0]})"}
    write_text_atomic(out / "config.json", json.dumps({
        "dataset": dataset, "seed": seed, "feature_set": feature_set, "feature_source": source, "n_iter": n_iter,
        "best_params": best, "features": list(Xtr.columns), "skipped": skipped, "table_info": info}, indent=2, default=str))
    # the stage's make target, written last
    write_csv_atomic(predictions, out / "predictions.csv")
    return BaselineResult(predictions, model, best, Xtr, Xte, info, skipped, source, qc)


def shap_reading(contrib: np.ndarray, X: pd.DataFrame, importance: pd.DataFrame, top_n: int = 3) -> str:
    """Markdown bullets: per class, the top features and which direction of each favours the class."""
    lines = []
    for k, c in enumerate(CLASSES):
        top = importance.sort_values(f"mean_abs_shap_{c}", ascending=False).head(top_n)["feature"].tolist()
        direction = []
        for f in top:
            j = list(X.columns).index(f)
            r = pd.Series(contrib[:, j, k]).corr(pd.Series(X[f].to_numpy(dtype=float)), method="spearman")
            direction.append(f"{f} ({'higher' if r > 0 else 'lower'} values favour {c})" if np.isfinite(r) else f)
        lines.append(f"- **{c}**: " + "; ".join(direction))
    return "\n".join(lines)
