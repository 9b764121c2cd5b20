"""Late fusion of the CNN with same-input features by stacking, without test leakage.

Pure computation (NumPy, scikit-learn, LightGBM); no files, no figures.

Where every number comes from, for one train/test split (the caller's outer split, e.g. one fold of
:func:`sts_utils.compute.stats.stratified_kfold_splits`):

1. *First level, training cells.* For each view, the class probabilities of every training cell come from
   a first-level model that did **not** see that cell: :func:`out_of_fold_probabilities` runs a stratified
   K-fold *inside the training cells only*, fits on K-1 inner folds and predicts the held-out inner fold.
   A view of kind ``"oof"`` (the CNN) is used as given: the caller must pass probabilities that are
   already out-of-fold on the training cells (the CNN's own inner folds) - never the probabilities of a
   CNN trained on those same cells, which would be overconfident and dominate the stack.
2. *First level, test cells.* Each view's first-level model is refitted on **all** training cells and
   predicts the test cells (for ``"oof"`` views: the probabilities of the CNN trained on all training
   cells). Test labels are never passed to this module.
3. *Second level.* A standardised multinomial logistic regression is fitted on the concatenated
   out-of-fold probabilities of step 1 with the training labels, and applied to the concatenated test
   probabilities of step 2.

So test cells enter only through their inputs at prediction time; neither their labels nor their
features influence any fitted parameter (scalers included, which sit inside the pipelines).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sts_utils.core.config import CLASSES

VIEW_KINDS: tuple[str, ...] = ("features", "proba", "oof")


def class_order(y: Sequence) -> np.ndarray:
    """Column order of every probability array here: :data:`CLASSES` order when the labels are the
    project's classes (only those present), else sorted unique labels."""
    present = set(np.asarray(y).tolist())
    if present <= set(CLASSES):
        return np.array([c for c in CLASSES if c in present], dtype=object)
    return np.unique(np.asarray(y))


def first_level_model(kind: str, seed: int = 0) -> Pipeline | LGBMClassifier:
    """Unfitted first-level model of a view.

    Parameters
    ----------
    kind
        ``"features"``: LightGBM (``n_jobs=1``, ``deterministic=True``, seeded; NaN features allowed, which
        spike-train features of silent epochs need). ``"proba"``: standardised logistic regression, for
        probability inputs produced by a model that never saw these cells.
    seed
        Random state of the model.
    """
    if kind == "features":
        return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=10,
                              random_state=seed, n_jobs=1, deterministic=True, force_col_wise=True, verbose=-1)
    if kind == "proba":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    raise ValueError(f"no first-level model for view kind {kind!r}; expected 'features' or 'proba'")


def proba_in_order(model, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``predict_proba`` with columns in ``classes`` order; a class unseen by the model gets probability 0."""
    p = model.predict_proba(X)
    out = np.zeros((len(X), len(classes)))
    pos = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(model.classes_):
        out[:, pos[c]] = p[:, j]
    return out


def out_of_fold_probabilities(X: np.ndarray, y: Sequence, make_model: Callable[[], object], n_folds: int = 5,
                              seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities of the (training) cells ``X`` from a stratified K-fold.

    Parameters
    ----------
    X
        Inputs of the training cells only, shape (n_cells, n_inputs).
    y
        Their labels.
    make_model
        Zero-argument factory of an unfitted scikit-learn-style classifier (``fit``, ``predict_proba``,
        ``classes_``); called once per fold so no state leaks between folds.
    n_folds
        Inner folds K (``StratifiedKFold(shuffle=True, random_state=seed)``); every class needs K cells.
    seed
        Seed of the fold assignment.

    Returns
    -------
    numpy.ndarray
        Shape (n_cells, n_classes), columns in :func:`class_order` order; row i is predicted by the model
        fitted on the folds that do not contain cell i.
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows, y has {len(y)} labels")
    classes = class_order(y)
    oof = np.full((len(y), len(classes)), np.nan)
    for fit_idx, held_idx in StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(X, y):
        model = make_model()
        model.fit(X[fit_idx], y[fit_idx])
        oof[held_idx] = proba_in_order(model, X[held_idx], classes)
    return oof


def _guess_kind(X: np.ndarray) -> str:
    rows_are_distributions = np.all((X >= 0) & (X <= 1)) and np.allclose(X.sum(axis=1), 1.0, atol=1e-6)
    return "proba" if rows_are_distributions else "features"


def fit_fusion(train_views: list[np.ndarray], y_train: Sequence, test_views: list[np.ndarray], seed: int = 0,
               n_folds: int = 5, kinds: Sequence[str] | None = None, C: float = 1.0) -> np.ndarray:
    """Stacked fusion of several views of the same cells; class probabilities of the test cells.

    Parameters
    ----------
    train_views, test_views
        One array per view, shapes (n_train, d_v) and (n_test, d_v), rows in the same cell order across
        views. See the module docstring for what each must contain.
    y_train
        Labels of the training cells (test labels are never needed).
    seed
        Seed of the inner folds and of the LightGBM models.
    n_folds
        Inner folds for the out-of-fold first-level probabilities.
    kinds
        Per view: ``"features"`` (LightGBM first level), ``"proba"`` (logistic-regression first level on
        probabilities from a model that never saw these cells) or ``"oof"`` (ready-made: the train array
        is already out-of-fold probabilities, the test array the refit-on-all probabilities, columns in
        :func:`class_order` order). None: ``"proba"`` for arrays whose rows are probability
        distributions, ``"features"`` otherwise - pass ``"oof"`` explicitly for the CNN.
    C
        Inverse L2 strength of the second-level logistic regression.

    Returns
    -------
    numpy.ndarray
        Shape (n_test, n_classes), columns in :func:`class_order` ``(y_train)`` order.
    """
    if len(train_views) != len(test_views) or not train_views:
        raise ValueError(f"need the same non-zero number of train and test views, got {len(train_views)} and {len(test_views)}")
    y = np.asarray(y_train)
    classes = class_order(y)
    train_views = [np.asarray(v, dtype=float) for v in train_views]
    test_views = [np.asarray(v, dtype=float) for v in test_views]
    kinds = list(kinds) if kinds is not None else [_guess_kind(v) for v in train_views]
    if len(kinds) != len(train_views) or set(kinds) - set(VIEW_KINDS):
        raise ValueError(f"kinds must give one of {VIEW_KINDS} per view, got {kinds}")
    level1_train, level1_test = [], []
    for i, (tr, te, kind) in enumerate(zip(train_views, test_views, kinds)):
        if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1] or len(tr) != len(y):
            raise ValueError(f"view {i}: train {tr.shape} / test {te.shape} do not match {len(y)} training labels")
        if kind == "oof":
            if tr.shape[1] != len(classes):
                raise ValueError(f"view {i}: 'oof' probabilities need {len(classes)} columns, got {tr.shape[1]}")
            level1_train.append(tr)
            level1_test.append(te)
            continue
        level1_train.append(out_of_fold_probabilities(tr, y, lambda k=kind: first_level_model(k, seed), n_folds, seed))
        model = first_level_model(kind, seed).fit(tr, y)
        level1_test.append(proba_in_order(model, te, classes))
    stacker = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    stacker.fit(np.hstack(level1_train), y)
    return proba_in_order(stacker, np.hstack(level1_test), classes)
