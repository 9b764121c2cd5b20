"""Stacked fusion: complementary views combine; shuffled labels give chance; no test information is used."""
from __future__ import annotations

import numpy as np
import pytest
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression

from sts_utils.core.config import CLASSES
from sts_utils.compute.fusion import class_order, first_level_model, fit_fusion, out_of_fold_probabilities
from sts_utils.compute.metrics import balanced_accuracy

N_TRAIN, N_TEST = 240, 160


def complementary_views(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes 0..3; view A only separates {0,1} from {2,3}, view B only {0,2} from {1,3}."""
    y = np.arange(n) % 4
    a = np.c_[(y >= 2) * 2.0 + rng.normal(0, 0.5, n), rng.normal(0, 1, (n, 2))]
    b = np.c_[(y % 2) * 2.0 + rng.normal(0, 0.5, n), rng.normal(0, 1, (n, 2))]
    return y, a, b


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y, a, b = complementary_views(N_TRAIN + N_TEST, rng)
    labels = np.array(CLASSES, dtype=object)[y]
    tr, te = slice(0, N_TRAIN), slice(N_TRAIN, None)
    return labels[tr], labels[te], (a[tr], b[tr]), (a[te], b[te])


def single_view_bacc(X_tr, y_tr, X_te, y_te) -> float:
    model = first_level_model("features", seed=0).fit(X_tr, y_tr)
    return balanced_accuracy(y_te, model.predict(X_te))


def test_fusion_beats_each_view(data):
    y_tr, y_te, train, test = data
    proba = fit_fusion(list(train), y_tr, list(test), seed=0, n_folds=5)
    assert proba.shape == (N_TEST, 4) and np.allclose(proba.sum(axis=1), 1.0)
    classes = class_order(y_tr)
    assert list(classes) == list(CLASSES)
    fused = balanced_accuracy(y_te, classes[proba.argmax(axis=1)])
    alone = [single_view_bacc(train[v], y_tr, test[v], y_te) for v in (0, 1)]
    assert max(alone) < 0.65  # each view can only tell two pairs of classes apart
    assert fused > 0.85 and fused > max(alone) + 0.25


def test_fusion_with_shuffled_training_labels_is_at_chance(data):
    y_tr, y_te, train, test = data
    shuffled = np.random.default_rng(1).permutation(y_tr)
    proba = fit_fusion(list(train), shuffled, list(test), seed=0, n_folds=5)
    bacc = balanced_accuracy(y_te, class_order(shuffled)[proba.argmax(axis=1)])
    assert bacc < 0.4


def test_ready_made_out_of_fold_view_and_probability_view(data):
    y_tr, y_te, train, test = data
    # stand-in for the CNN: out-of-fold probabilities on the training cells, refit-on-all on the test cells
    make_lr = lambda: LogisticRegression(max_iter=1000)  # noqa: E731
    oof_b = out_of_fold_probabilities(train[1], y_tr, make_lr, n_folds=5, seed=0)
    test_b = make_lr().fit(train[1], y_tr)
    order = [list(test_b.classes_).index(c) for c in class_order(y_tr)]
    test_b = test_b.predict_proba(test[1])[:, order]
    proba = fit_fusion([train[0], oof_b], y_tr, [test[0], test_b], kinds=["features", "oof"])
    assert balanced_accuracy(y_te, class_order(y_tr)[proba.argmax(axis=1)]) > 0.85
    # automatic kind: rows that are distributions get the logistic first level, and still fuse
    proba_auto = fit_fusion([train[0], oof_b], y_tr, [test[0], test_b])
    assert balanced_accuracy(y_te, class_order(y_tr)[proba_auto.argmax(axis=1)]) > 0.85


def test_out_of_fold_rows_come_from_models_that_did_not_see_them():
    rng = np.random.default_rng(2)
    n = 100
    X = rng.normal(size=(n, 5))
    y = rng.integers(0, 4, n)  # labels unrelated to X: a memorising model is right in-sample only
    make = lambda: LGBMClassifier(n_estimators=50, min_child_samples=1, num_leaves=31, n_jobs=1,  # noqa: E731
                                  deterministic=True, force_col_wise=True, verbose=-1)
    in_sample = make().fit(X, y).predict_proba(X)
    oof = out_of_fold_probabilities(X, y, make, n_folds=5, seed=0)
    assert np.mean(in_sample.argmax(1) == y) > 0.9
    assert np.mean(oof.argmax(1) == y) < 0.45
    assert not np.isnan(oof).any() and np.allclose(oof.sum(1), 1.0)
    np.testing.assert_array_equal(oof, out_of_fold_probabilities(X, y, make, n_folds=5, seed=0))


def test_mismatched_views_are_rejected(data):
    y_tr, _, train, test = data
    with pytest.raises(ValueError, match="same non-zero number"):
        fit_fusion(list(train), y_tr, [test[0]])
    with pytest.raises(ValueError, match="kinds"):
        fit_fusion(list(train), y_tr, list(test), kinds=["features", "cnn"])
