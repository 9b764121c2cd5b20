"""Paired model comparisons: corrected resampled t-test, permutation test, K-fold splits, learning-curve subsets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sts_utils.core.config import CLASSES
from sts_utils.compute.metrics import balanced_accuracy
from sts_utils.compute.stats import (corrected_resampled_ttest, learning_curve_subsets, paired_comparison_table,
                             paired_permutation_test, stratified_kfold_splits)


def cohort(counts=(30, 20, 12, 40)) -> pd.DataFrame:
    labels = np.concatenate([[c] * n for c, n in zip(CLASSES, counts)])
    rng = np.random.default_rng(3)
    return pd.DataFrame({"specimen_id": rng.permutation(np.arange(1000, 1000 + len(labels))), "label": labels})


def test_known_difference_is_recovered_with_small_p():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.55, 0.65, 10)
    a = b + 0.10 + rng.normal(0, 0.005, 10)
    res = corrected_resampled_ttest(a, b, n_train=80, n_test=20)
    assert res["mean_diff"] == pytest.approx(np.mean(a - b))
    assert res["mean_diff"] == pytest.approx(0.10, abs=0.01)
    assert res["ci_low"] < res["mean_diff"] < res["ci_high"]
    assert res["p_value"] < 1e-3 and res["t"] > 0 and res["n_folds"] == 10


def test_identical_scores_give_zero_difference_and_p_one():
    s = [0.6, 0.7, 0.65, 0.62, 0.71]
    res = corrected_resampled_ttest(s, s, n_train=80, n_test=20)
    assert res["mean_diff"] == 0.0 and res["p_value"] == 1.0 and res["t"] == 0.0
    assert res["ci_low"] == res["ci_high"] == 0.0


def test_corrected_ci_is_wider_than_naive_paired_t():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.6, 0.8, 5), rng.uniform(0.6, 0.8, 5)
    res = corrected_resampled_ttest(a, b, n_train=80, n_test=20)
    naive = sps.ttest_rel(a, b)
    lo, hi = naive.confidence_interval(0.95)
    assert res["ci_high"] - res["ci_low"] > hi - lo
    assert res["ci_low"] < lo and res["ci_high"] > hi
    # with no training-set overlap term the correction reduces to the paired t-test
    plain = corrected_resampled_ttest(a, b, n_train=1e12, n_test=1e-12)
    assert plain["p_value"] == pytest.approx(naive.pvalue)
    assert res["p_value"] > naive.pvalue


def test_ttest_rejects_unpaired_input():
    with pytest.raises(ValueError, match="equal length"):
        corrected_resampled_ttest([0.5, 0.6], [0.5], 10, 5)


def test_permutation_identical_predictions_p_one():
    rng = np.random.default_rng(2)
    y = rng.choice(CLASSES, 60)
    pred = np.where(rng.random(60) < 0.7, y, rng.choice(CLASSES, 60))
    res = paired_permutation_test(pred, pred.copy(), y_true=y, n_resamples=2000)
    assert res["difference"] == 0.0 and res["p_value"] == 1.0
    assert res["statistic"] == "balanced_accuracy"
    res01 = paired_permutation_test(pred == y, pred == y, n_resamples=2000)
    assert res01["difference"] == 0.0 and res01["p_value"] == 1.0


def test_permutation_clearly_better_model_small_p():
    rng = np.random.default_rng(4)
    y = rng.choice(CLASSES, 200)
    good = np.where(rng.random(200) < 0.9, y, rng.choice(CLASSES, 200))
    bad = np.where(rng.random(200) < 0.3, y, rng.choice(CLASSES, 200))
    res = paired_permutation_test(good, bad, y_true=y, n_resamples=2000, seed=0)
    assert res["difference"] == pytest.approx(balanced_accuracy(y, good) - balanced_accuracy(y, bad))
    assert res["difference"] > 0.4 and res["p_value"] < 0.01
    acc = paired_permutation_test(good == y, bad == y, n_resamples=2000)
    assert acc["difference"] == pytest.approx(np.mean(good == y) - np.mean(bad == y)) and acc["p_value"] < 0.01


def test_comparison_table_against_reference():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.6, 0.7, 5)
    rows = []
    for model, shift in (("features", 0.0), ("cnn", 0.08), ("same", 0.0)):
        noise = rng.normal(0, 0.01, 5) if model == "cnn" else 0.0
        for r in range(5):
            rows.append({"model": model, "repeat": r, "balanced_accuracy": base[r] + shift + (noise[r] if model == "cnn" else 0)})
    table = paired_comparison_table(pd.DataFrame(rows), reference="features", n_train=80, n_test=20)
    assert list(table.columns) == ["model", "reference", "mean_diff", "ci_low", "ci_high", "t", "p_value", "n_folds"]
    assert set(table["model"]) == {"cnn", "same"} and (table["reference"] == "features").all()
    cnn = table.set_index("model").loc["cnn"]
    assert cnn["mean_diff"] == pytest.approx(0.08, abs=0.02) and cnn["p_value"] < 0.01 and cnn["n_folds"] == 5
    same = table.set_index("model").loc["same"]
    assert same["mean_diff"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="reference model"):
        paired_comparison_table(pd.DataFrame(rows), reference="nope", n_train=80, n_test=20)


def test_kfold_splits_stratified_disjoint_each_cell_tested_once():
    cells = cohort()
    splits = stratified_kfold_splits(cells, n_folds=5, seed=0)
    assert list(splits.columns) == ["specimen_id", "split", "repeat"]
    assert sorted(splits["repeat"].unique()) == [0, 1, 2, 3, 4]
    assert len(splits) == 5 * len(cells)
    test = splits[splits["split"] == "test"]
    assert test["specimen_id"].value_counts().eq(1).all() and set(test["specimen_id"]) == set(cells["specimen_id"])
    labels = cells.set_index("specimen_id")["label"]
    for fold, part in splits.groupby("repeat"):
        tr = set(part.loc[part["split"] == "train", "specimen_id"])
        te = set(part.loc[part["split"] == "test", "specimen_id"])
        assert not tr & te and len(tr) + len(te) == len(cells)
        per_class = labels[list(te)].value_counts()
        for c, n in labels.value_counts().items():
            assert abs(per_class.get(c, 0) - n / 5) <= 1  # stratified: each fold holds ~1/5 of every class
    pd.testing.assert_frame_equal(splits, stratified_kfold_splits(cells.sample(frac=1, random_state=1), n_folds=5, seed=0))
    assert not splits.equals(stratified_kfold_splits(cells, n_folds=5, seed=1))


def test_kfold_splits_reject_small_classes_and_unknown_labels():
    with pytest.raises(ValueError, match="fewer than n_folds"):
        stratified_kfold_splits(cohort((30, 20, 3, 40)), n_folds=5)
    bad = cohort()
    bad.loc[0, "label"] = "Unsure"
    with pytest.raises(ValueError, match="unknown labels"):
        stratified_kfold_splits(bad)


def test_learning_curve_subsets_nested_and_stratified():
    cells = cohort((40, 20, 4, 80))
    subsets = learning_curve_subsets(cells, fractions=(0.1, 0.25, 0.5, 0.75, 1.0), seed=0)
    labels = cells.set_index("specimen_id")["label"]
    fracs = sorted(subsets)
    for small, large in zip(fracs, fracs[1:]):
        assert set(subsets[small]) <= set(subsets[large]) and len(subsets[small]) < len(subsets[large])
    assert set(subsets[1.0]) == set(cells["specimen_id"])
    for f, ids in subsets.items():
        counts = labels[ids].value_counts()
        assert set(counts.index) == set(CLASSES)  # every class kept, even 10 % of 4 cells
        for c, n in labels.value_counts().items():
            assert counts[c] == max(1, round(f * n))
    again = learning_curve_subsets(cells, fractions=(0.1, 0.25, 0.5, 0.75, 1.0), seed=0)
    assert all(np.array_equal(subsets[f], again[f]) for f in fracs)
