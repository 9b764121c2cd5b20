"""Classification metrics: balanced accuracy, bootstrap confidence intervals, per-class reports.

Pure computation (NumPy, scikit-learn); no files, no figures. The CNN rows and the feature-model rows of
every results table are scored by these same functions, so they are comparable.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from sts_utils.core.config import CLASSES


def balanced_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition); NaN when empty."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def headline_predictions(predictions: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The test predictions one model's headline score and CI are computed on, and what they are.

    ``predictions`` holds one model's rows (``specimen_id``, ``repeat``, ``true``, ``pred``...). When the
    repeats are folds (no cell tested twice), all of them are pooled: every cell counts once and the CI
    covers the whole cohort. Otherwise (one split, or repeated held-out splits that overlap) the first
    repeat is used, and the spread over repeats is reported beside it.
    """
    repeats = predictions["repeat"].nunique()
    if repeats > 1 and predictions["specimen_id"].is_unique:
        return predictions, f"{repeats} folds pooled"
    first = predictions["repeat"].min()
    return predictions[predictions["repeat"] == first], f"repeat {first}"


def bootstrap_ci(y_true: Sequence, y_pred: Sequence, metric: Callable = balanced_accuracy, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap CI (cells resampled with replacement, seeded).

    Returns
    -------
    point, low, high
        ``low``/``high`` are NaN for fewer than two cells.
    """
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


def classification_summary(y_true: Sequence, y_pred: Sequence, seed: int = 0, n_boot: int = 1000) -> dict:
    """Balanced accuracy with its 95 % CI, accuracy, and per-class precision / recall / F1 / support."""
    bacc, lo, hi = bootstrap_ci(y_true, y_pred, n_boot=n_boot, seed=seed)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(CLASSES), zero_division=0)
    out = {"balanced_accuracy": bacc, "ci_low": lo, "ci_high": hi, "accuracy": float(accuracy_score(y_true, y_pred)),
           "n_test": int(len(y_true))}
    for c, pi, ri, fi, si in zip(CLASSES, p, r, f, s):
        out[f"precision_{c}"], out[f"recall_{c}"], out[f"f1_{c}"], out[f"support_{c}"] = float(pi), float(ri), float(fi), int(si)
    return out


def per_class_report(y_true: Sequence, y_pred: Sequence) -> pd.DataFrame:
    """One row per class: precision, recall, F1 and support."""
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(CLASSES), zero_division=0)
    return pd.DataFrame({"class": CLASSES, "precision": p, "recall": r, "f1": f, "support": s})
