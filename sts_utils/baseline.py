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

import os

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, cross_val_score

from .config import CLASSES, logger

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
    from lightgbm import LGBMClassifier

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
                    space: dict | None = None, progress: bool = True):
    """Bayesian search (TPE) with stratified CV balanced accuracy; returns the refit model, best params, trials."""
    import optuna
    from tqdm import tqdm

    from .training import _suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space or LGBM_SPACE
    n_folds = max(2, min(n_folds, int(np.bincount(y).min())))
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)

    def objective(trial):
        params = _suggest(trial, space)
        return float(cross_val_score(make_lgbm(params, seed), X, y, cv=cv, scoring="balanced_accuracy").mean())

    best_params: dict = {}
    trials = pd.DataFrame()
    if n_iter > 0:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        bar = tqdm(total=n_iter, desc="LightGBM search", disable=not progress)
        study.optimize(objective, n_trials=n_iter, callbacks=[lambda s, t: bar.update(1)])
        bar.close()
        best_params = dict(study.best_params)
        trials = study.trials_dataframe(attrs=("number", "value", "params")).rename(columns={"value": "cv_balanced_accuracy"})
    model = make_lgbm(best_params, seed).fit(X, y)
    return model, best_params, trials


def shap_contributions(model, X: pd.DataFrame) -> np.ndarray:
    """SHAP values from LightGBM (``pred_contrib``): array cells x (features + 1) x classes.

    The last feature slot is the expected value; summing over slots gives the raw margin.
    """
    raw = model.booster_.predict(X, pred_contrib=True)
    n_classes = model.n_classes_
    return np.asarray(raw).reshape(len(X), n_classes, X.shape[1] + 1).transpose(0, 2, 1)


def raw_margin(model, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.booster_.predict(X, raw_score=True)).reshape(len(X), -1)


def importance_table(contrib: np.ndarray, feature_names: list[str]) -> pd.DataFrame:
    """Mean |SHAP| per feature, overall and per class (sorted by the overall importance)."""
    mean_abs = np.abs(contrib[:, :-1, :]).mean(axis=0)  # features x classes
    df = pd.DataFrame(mean_abs, columns=[f"mean_abs_shap_{c}" for c in CLASSES[: mean_abs.shape[1]]])
    df.insert(0, "feature", feature_names)
    df["mean_abs_shap"] = mean_abs.mean(axis=1)
    return df.sort_values("mean_abs_shap", ascending=False).reset_index(drop=True)


def shap_summary_figure(contrib: np.ndarray, X: pd.DataFrame, class_index: int, top_n: int = 8, title: str = ""):
    """Beeswarm-like summary of the top features for one class (colour = feature value rank)."""
    import matplotlib.pyplot as plt

    vals = contrib[:, :-1, class_index]
    order = np.argsort(np.abs(vals).mean(axis=0))[::-1][:top_n]
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(order) + 1.2))
    rng = np.random.default_rng(0)
    for k, j in enumerate(order[::-1]):
        x = X.iloc[:, j].to_numpy(dtype=float)
        rank = pd.Series(x).rank(pct=True).to_numpy()
        ax.scatter(vals[:, j], k + rng.uniform(-0.2, 0.2, len(x)), c=np.nan_to_num(rank, nan=0.5), cmap="coolwarm",
                   s=8, vmin=0, vmax=1)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([X.columns[j] for j in order[::-1]], fontsize=8)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"SHAP value (log-odds of {CLASSES[class_index]})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
