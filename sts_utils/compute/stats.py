"""Statistics for comparing models evaluated on the same cells and folds.

Pure computation (NumPy, pandas, SciPy, scikit-learn); no files, no figures.

Two models scored on the same folds are *paired*: their per-fold scores share the training and test
cells, so they must be compared by their per-fold differences, never by two independent intervals.
Folds of cross-validation overlap in their training cells, which makes the ordinary paired t-test
anticonservative; :func:`corrected_resampled_ttest` applies Nadeau & Bengio's (2003) correction. For a
single train/test split, :func:`paired_permutation_test` compares the models cell by cell.

References
----------
Nadeau C, Bengio Y (2003). Inference for the generalization error. Machine Learning 52:239-281.
Bouckaert RR, Frank E (2004). Evaluating the replicability of significance tests for comparing learning
algorithms. PAKDD 2004, LNCS 3056:3-12.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.model_selection import StratifiedKFold

from sts_utils.core.config import CLASSES


def _check_cells(cells: pd.DataFrame) -> pd.DataFrame:
    missing = {"specimen_id", "label"} - set(cells.columns)
    if missing:
        raise ValueError(f"cells table lacks columns {sorted(missing)}")
    unknown = set(cells["label"]) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown labels {sorted(map(str, unknown))}; expected only {CLASSES}")
    if cells["specimen_id"].duplicated().any():
        raise ValueError(f"duplicated specimen ids: {sorted(cells.loc[cells['specimen_id'].duplicated(), 'specimen_id'])[:5]}")
    # sorting makes the assignment independent of the row order of cells.csv
    return cells.sort_values("specimen_id").reset_index(drop=True)


def stratified_kfold_splits(cells: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Seeded stratified K-fold assignment in the ``splits.csv`` format.

    Parameters
    ----------
    cells
        Columns ``specimen_id`` and ``label`` (one of :data:`sts_utils.core.config.CLASSES`).
    n_folds
        Number of folds K (>= 2); every class needs at least K cells.
    seed
        Seed of scikit-learn's ``StratifiedKFold(shuffle=True)``.

    Returns
    -------
    pandas.DataFrame
        ``specimen_id``, ``split`` (``train``/``test``), ``repeat`` (fold index 0 .. K-1): one row per cell
        and fold. Each cell is in the test split of exactly one fold and in the training split of the others.
    """
    if int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    cells = _check_cells(cells)
    counts = cells["label"].value_counts()
    small = counts[counts < n_folds]
    if len(small):
        raise ValueError(f"classes with fewer than n_folds={n_folds} cells: {small.to_dict()}")
    skf = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    ids = cells["specimen_id"].to_numpy()
    frames = []
    for fold, (_, test) in enumerate(skf.split(ids, cells["label"])):
        split = np.full(len(ids), "train", dtype=object)
        split[test] = "test"
        frames.append(pd.DataFrame({"specimen_id": ids, "split": split, "repeat": fold}))
    return pd.concat(frames, ignore_index=True)


def corrected_resampled_ttest(scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_test: float,
                              alpha: float = 0.05) -> dict:
    """Nadeau & Bengio (2003) corrected resampled t-test of paired per-fold scores.

    The per-fold differences ``d = a - b`` (k folds) have their variance inflated from ``1/k`` to
    ``1/k + n_test/n_train`` to account for the overlap of training sets between folds; the statistic
    ``mean(d) / sqrt((1/k + n_test/n_train) var(d))`` (var with ddof 1) is referred to Student's t with
    k - 1 degrees of freedom.

    Parameters
    ----------
    scores_a, scores_b
        Scores of models A and B on the same k folds, in the same order.
    n_train, n_test
        Number of training and test cells per fold (mean over folds if they differ).
    alpha
        1 - confidence level of the interval.

    Returns
    -------
    dict
        ``mean_diff`` (A - B), ``ci_low``, ``ci_high`` (t interval), ``t``, ``p_value`` (two-sided), ``df``,
        ``se`` (corrected standard error), ``n_folds``. When every difference is equal the variance is 0:
        ``t`` is 0 and ``p_value`` 1 if the difference is 0, else ``t`` is +-inf and ``p_value`` 0. All NaN
        (except ``n_folds``) for fewer than two folds.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d arrays of equal length, got shapes {a.shape} and {b.shape}")
    if not (n_train > 0 and n_test > 0):
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired scores contain NaN")
    k = a.size
    nan = float("nan")
    if k < 2:
        return {"mean_diff": float(np.mean(a - b)) if k else nan, "ci_low": nan, "ci_high": nan, "t": nan,
                "p_value": nan, "df": nan, "se": nan, "n_folds": k}
    d = a - b
    mean = float(np.mean(d))
    se = float(np.sqrt((1.0 / k + n_test / n_train) * np.var(d, ddof=1)))
    df = k - 1
    if se > 0:
        t = mean / se
        p = float(2 * sps.t.sf(abs(t), df))
    else:
        # no spread: a t distribution cannot be scaled, the difference is exact
        t = 0.0 if mean == 0 else float(np.sign(mean) * np.inf)
        p = 1.0 if mean == 0 else 0.0
    half = float(sps.t.ppf(1 - alpha / 2, df) * se)
    return {"mean_diff": mean, "ci_low": mean - half, "ci_high": mean + half, "t": float(t), "p_value": p, "df": df,
            "se": se, "n_folds": k}


def _encode(*arrays: Sequence) -> list[np.ndarray]:
    """Integer codes of label arrays on their common vocabulary (permutation_test needs numeric data)."""
    arrays = [np.asarray(x) for x in arrays]
    _, codes = np.unique(np.concatenate([x.astype(str) for x in arrays]), return_inverse=True)
    out, pos = [], 0
    for x in arrays:
        out.append(codes[pos:pos + x.size].reshape(x.shape))
        pos += x.size
    return out


def paired_permutation_test(correct_a: Sequence, correct_b: Sequence, y_true: Sequence | None = None,
                            n_resamples: int = 10000, seed: int = 0) -> dict:
    """Paired permutation test over cells of two models scored on the same test cells.

    Under the null hypothesis the two models are exchangeable on every cell, so the null distribution
    is built by swapping the two models' values within randomly chosen cells (``scipy.stats.permutation_test``
    with ``permutation_type='samples'``; exact when ``2**n_cells <= n_resamples``).

    Parameters
    ----------
    correct_a, correct_b
        Without ``y_true``: per-cell scores of models A and B (e.g. 1 = correct, 0 = wrong); the statistic
        is the difference of their means (accuracy difference for 0/1 input).
        With ``y_true``: the models' predicted labels per cell; the statistic is the difference of balanced
        accuracies, so the per-cell swap exchanges the two predictions of a cell.
    y_true
        True labels of the cells, or None.
    n_resamples
        Number of random swaps (Monte Carlo p-value ``(b + 1) / (n_resamples + 1)``).
    seed
        Seed of the random swaps.

    Returns
    -------
    dict
        ``difference`` (A - B), ``p_value`` (two-sided), ``statistic`` (``balanced_accuracy`` or ``mean``),
        ``n_cells``, ``n_resamples``.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of equal length, got shapes {a.shape} and {b.shape}")
    n = a.size
    if y_true is None:
        a, b = a.astype(float), b.astype(float)
        name = "mean"

        def statistic(x, y, axis=-1):
            return np.mean(x, axis=axis) - np.mean(y, axis=axis)
    else:
        if len(y_true) != n:
            raise ValueError(f"y_true has {len(y_true)} cells, predictions have {n}")
        y, a, b = _encode(y_true, a, b)
        classes = np.unique(y)
        masks = [y == c for c in classes]
        name = "balanced_accuracy"

        def bacc(pred, axis):
            # mean recall over the classes present in y_true (as metrics.balanced_accuracy), vectorised
            pred = np.moveaxis(pred, axis, -1)
            return np.mean([np.mean(pred[..., m] == c, axis=-1) for m, c in zip(masks, classes)], axis=0)

        def statistic(x, y_, axis=-1):
            return bacc(x, axis) - bacc(y_, axis)
    if n == 0:
        return {"difference": float("nan"), "p_value": float("nan"), "statistic": name, "n_cells": 0,
                "n_resamples": int(n_resamples)}
    res = sps.permutation_test((a, b), statistic, permutation_type="samples", vectorized=True,
                               n_resamples=int(n_resamples), alternative="two-sided", random_state=seed)
    return {"difference": float(res.statistic), "p_value": float(min(res.pvalue, 1.0)), "statistic": name,
            "n_cells": int(n), "n_resamples": int(n_resamples)}


def paired_comparison_table(fold_scores: pd.DataFrame, reference: str, n_train: float, n_test: float,
                            alpha: float = 0.05) -> pd.DataFrame:
    """Every model against a reference on the folds both were scored on (corrected resampled t-test).

    Parameters
    ----------
    fold_scores
        Columns ``model``, ``repeat`` (fold index), ``balanced_accuracy``; one row per model and fold.
    reference
        Model every other model is compared with.
    n_train, n_test
        Training and test cells per fold (see :func:`corrected_resampled_ttest`).
    alpha
        1 - confidence level.

    Returns
    -------
    pandas.DataFrame
        One row per other model: ``model``, ``reference``, ``mean_diff`` (model - reference; positive means the
        model is better), ``ci_low``, ``ci_high``, ``t``, ``p_value``, ``n_folds`` (folds both were scored on).
    """
    missing = {"model", "repeat", "balanced_accuracy"} - set(fold_scores.columns)
    if missing:
        raise ValueError(f"fold_scores lacks columns {sorted(missing)}")
    if fold_scores.duplicated(["model", "repeat"]).any():
        raise ValueError("fold_scores has more than one score for some (model, repeat)")
    wide = fold_scores.pivot(index="repeat", columns="model", values="balanced_accuracy")
    if reference not in wide.columns:
        raise ValueError(f"reference model {reference!r} not in fold_scores (models: {sorted(wide.columns)})")
    rows = []
    for model in [m for m in wide.columns if m != reference]:
        pair = wide[[model, reference]].dropna()
        res = corrected_resampled_ttest(pair[model], pair[reference], n_train, n_test, alpha=alpha)
        rows.append({"model": model, "reference": reference, **{k: res[k] for k in
                     ("mean_diff", "ci_low", "ci_high", "t", "p_value", "n_folds")}})
    return pd.DataFrame(rows, columns=["model", "reference", "mean_diff", "ci_low", "ci_high", "t", "p_value", "n_folds"])


def learning_curve_subsets(train: pd.DataFrame, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                           seed: int = 0) -> dict[float, np.ndarray]:
    """Nested, stratified subsets of the training cells for a learning curve.

    Each class's cells are shuffled once (seeded); the subset for fraction f keeps the first
    ``max(1, round(f * n_class))`` cells of every class, so smaller subsets lie inside larger ones and
    every class keeps at least one cell.

    Parameters
    ----------
    train
        Training cells: ``specimen_id``, ``label``.
    fractions
        Fractions in (0, 1] of each class to keep.
    seed
        Seed of the per-class shuffles.

    Returns
    -------
    dict
        Fraction -> sorted array of specimen ids.
    """
    missing = {"specimen_id", "label"} - set(train.columns)
    if missing:
        raise ValueError(f"train table lacks columns {sorted(missing)}")
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"fractions must lie in (0, 1], got {bad}")
    train = train.drop_duplicates("specimen_id").sort_values("specimen_id")
    rng = np.random.default_rng(seed)
    orders = {label: rng.permutation(group["specimen_id"].to_numpy())
              for label, group in train.groupby("label", sort=True)}
    return {f: np.sort(np.concatenate([ids[:max(1, int(round(f * len(ids))))] for ids in orders.values()]))
            for f in fractions}
