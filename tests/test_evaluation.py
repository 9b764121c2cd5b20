import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

from sts_utils.core.config import CLASSES
from sts_utils.stages.evaluation import predictions_frame, results_table
from sts_utils.compute.metrics import balanced_accuracy, bootstrap_ci, classification_summary


def random_preds(seed=0, n=200, acc=0.7):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, size=n, p=[0.2, 0.2, 0.1, 0.5])
    pred = np.where(rng.random(n) < acc, y, rng.choice(CLASSES, size=n))
    return y, pred


def test_metrics_agree_with_scikit_learn():
    for seed in range(5):
        y, p = random_preds(seed)
        assert np.isclose(balanced_accuracy(y, p), balanced_accuracy_score(y, p))
        s = classification_summary(y, p, n_boot=10)
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=list(CLASSES), zero_division=0)
        assert np.allclose([s[f"recall_{c}"] for c in CLASSES], rec)
        assert np.allclose([s[f"f1_{c}"] for c in CLASSES], f1)


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    y, p = random_preds(1)
    point, lo, hi = bootstrap_ci(y, p, n_boot=500, seed=3)
    assert lo <= point <= hi and hi - lo < 0.3
    assert (point, lo, hi) == bootstrap_ci(y, p, n_boot=500, seed=3)
    assert (lo, hi) != bootstrap_ci(y, p, n_boot=500, seed=4)[1:]


def test_results_table_reports_mean_and_sd_over_repeats():
    frames = []
    for r in range(3):
        y, p = random_preds(r)
        proba = np.eye(4)[[CLASSES.index(c) for c in p]]
        frames.append(predictions_frame(np.arange(len(y)), list(y), proba, "m", r))
    pred = pd.concat(frames)
    table = results_table(pred, {"m": {"weights": "random", "image_size": 64, "training_cells": 10}}, n_boot=50)
    per = [balanced_accuracy_score(*random_preds(r)) for r in range(3)]
    assert np.isclose(table.bacc_mean_over_repeats.iloc[0], np.mean(per))
    assert np.isclose(table.bacc_sd_over_repeats.iloc[0], np.std(per))
    assert table.n_repeats.iloc[0] == 3 and table.weights.iloc[0] == "random"
    # repeated held-out splits share cells: the headline is repeat 0's
    assert table.scored_on.iloc[0] == "repeat 0"
    assert np.isclose(table.balanced_accuracy.iloc[0], per[0])


def test_results_table_pools_folds_when_every_cell_is_tested_once():
    frames = []
    for r in range(3):
        y, p = random_preds(r)
        proba = np.eye(4)[[CLASSES.index(c) for c in p]]
        frames.append(predictions_frame(np.arange(len(y)) + 1000 * r, list(y), proba, "m", r))  # disjoint test cells
    pred = pd.concat(frames)
    table = results_table(pred, {}, n_boot=50)
    pooled_true = np.concatenate([random_preds(r)[0] for r in range(3)])
    pooled_pred = np.concatenate([random_preds(r)[1] for r in range(3)])
    assert table.scored_on.iloc[0] == "3 folds pooled"
    assert np.isclose(table.balanced_accuracy.iloc[0], balanced_accuracy_score(pooled_true, pooled_pred))
    assert table.test_cells.iloc[0] == len(pooled_true)
