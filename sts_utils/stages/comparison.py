"""Comparison stage (notebook 08): does STS beat features on the *same* input, beyond chance?

On the split(s) of ``splits.csv`` the CNNs and the LightGBM baseline were scored on:

Same-input baseline
    LightGBM on features of the very signals the CNNs see. Spike-time data (teeter2018): Elephant
    spike-train statistics of the two stimulus epochs' spike trains (:mod:`sts_utils.compute.spike_train_features`).
    Voltage data: the ipfx long-square features of the same recordings the CNNs' sweeps come from
    (``baseline/features_used.csv``, notebook 05), which is then the same model as the baseline row.
Fusion
    The best CNN's class probabilities stacked with the same-input features
    (:func:`sts_utils.compute.fusion.fit_fusion`). The CNN view's training-cell probabilities are out-of-fold: the
    CNN is refit (its stored best settings, no new search) on inner folds of the training split, each
    predicting the fold it did not see; its test probabilities are those of the model trained on the whole
    training split (notebook 04). No test cell influences any fitted parameter.
Paired comparisons
    Every model against the same-input baseline and against the best model, on the same test cells: the
    difference in balanced accuracy and a paired permutation test over cells (swapping the two models'
    predictions per cell); with several repeats, also Nadeau & Bengio's corrected resampled t-test over them.
Learning curves
    Balanced accuracy of the best CNN and of the feature models trained on nested stratified 25/50/75/100 %
    subsets of the training split (the CNN with its stored settings, no new search).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from sts_utils.stages.baseline import class_proba, make_lgbm, prepare_xy, search_lightgbm
from sts_utils.core.config import CLASSES, dataset_dir, require
from sts_utils.compute.metrics import balanced_accuracy, bootstrap_ci, headline_predictions
from sts_utils.data.models import get_device, load_checkpoint, model_dir
from sts_utils.compute.spike_train_features import spike_train_feature_table
from sts_utils.stages.splits import load_split, n_repeats_of
from sts_utils.compute.stats import learning_curve_subsets, paired_comparison_table, paired_permutation_test
from sts_utils.data.store import ScalogramStore
from sts_utils.data.tables import predictions_frame, read_spike_trains
from sts_utils.stages.fit import TrainConfig, as_tensor, fit, predict_proba, train_val_split
from sts_utils.compute.fusion import fit_fusion

SAME_INPUT = "lightgbm_same_input"
FUSION = "fusion"


def same_input_features(dataset: str, data_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, str]:
    """Features of the signals the CNNs see, one row per cell, and what they are."""
    ddir = dataset_dir(dataset, data_dir)
    if (ddir / "spike_trains.parquet").exists():
        return (spike_train_feature_table(read_spike_trains(ddir / "spike_trains.parquet"), epochs=(2, 3)),
                "Elephant spike-train statistics of Noise 1 epochs 2 and 3 (the CNNs' two channels)")
    return (pd.read_csv(require(ddir / "baseline" / "features_used.csv")),
            "ipfx long-square features of the same recordings (the baseline's table)")


def stored_train_config(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None) -> TrainConfig:
    """The settings a trained backbone was refit with (its best search parameters), from ``config.json``."""
    cfg = json.loads(require(model_dir(dataset, backbone, data_dir) / "config.json").read_text())["train"]
    known = {f.name for f in fields(TrainConfig)}
    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in known}
    return TrainConfig(**cfg)


def cnn_fit_predict(x_train, y_train: np.ndarray, x_eval, cfg: TrainConfig) -> np.ndarray:
    """Train a CNN with ``cfg`` (early stopping on a stratified part of the training cells); probabilities of ``x_eval``."""
    tr, va = train_val_split(y_train, cfg.val_fraction, cfg.seed)
    model, _, _ = fit(x_train[tr], y_train[tr], x_train[va], y_train[va], cfg, progress=False)
    return predict_proba(model, x_eval)


@dataclass
class ComparisonResult:
    """What notebook 08 shows."""

    predictions: pd.DataFrame
    paired: pd.DataFrame
    learning_curve: pd.DataFrame
    summary: pd.DataFrame
    features_description: str
    best_cnn: str
    extra: dict = field(default_factory=dict)


def run_comparison(dataset: str, backbones: list[str], data_dir: str | os.PathLike | None = None, n_iter: int = 30,
                   fusion_folds: int = 2, fractions: tuple[float, ...] = (0.25, 0.5, 1.0), seed: int = 0,
                   n_resamples: int = 10000, device: str | None = None, progress: bool = True) -> ComparisonResult:
    """Same-input baseline, fusion, paired comparisons and learning curves on ``splits.csv`` (repeat 0 for
    fusion and the learning curve; every repeat for the baseline and the paired tests)."""
    ddir = dataset_dir(dataset, data_dir)
    predictions = pd.read_csv(require(ddir / "predictions.csv"))
    features, description = same_input_features(dataset, data_dir)
    store = ScalogramStore.load(dataset, data_dir)
    cnns = [b for b in backbones if b in set(predictions.model)]
    scored = {b: headline_predictions(predictions[predictions.model == b])[0] for b in cnns}
    best_cnn = max(cnns, key=lambda b: balanced_accuracy(scored[b]["true"], scored[b]["pred"]))
    frames, fits = [], {}
    for repeat in range(n_repeats_of(dataset, data_dir)):
        split = load_split(dataset, data_dir, repeat)
        split = split[split.label.isin(CLASSES) & split.specimen_id.isin(store.index.specimen_id)]
        Xtr, ytr, ids_tr, _ = prepare_xy(features, split[split.split == "train"])
        Xte, yte, ids_te, _ = prepare_xy(features, split[split.split == "test"])
        model, best, _ = search_lightgbm(Xtr, ytr, n_iter=n_iter, seed=seed + repeat, progress=progress)
        frames.append(predictions_frame(ids_te, [CLASSES[i] for i in yte], class_proba(model, Xte[Xtr.columns]),
                                        SAME_INPUT, repeat))
        fits[repeat] = (best, Xtr, ytr, ids_tr, Xte, yte, ids_te)
    same = pd.concat(frames, ignore_index=True)
    best_params, Xtr, ytr, ids_tr, Xte, yte, ids_te = fits[0]

    # fusion on repeat 0: out-of-fold CNN probabilities on the training cells, the trained CNN's on the test cells
    # (inner folds: at most as many as the rarest class has training cells, so every fold holds every class)
    fusion_folds = max(2, min(fusion_folds, int(np.bincount(ytr).min())))
    cfg = stored_train_config(dataset, best_cnn, data_dir)
    x_train = as_tensor(store.images[store.rows(ids_tr)])
    x_test = np.asarray(store.images[store.rows(ids_te)], dtype=np.float32)
    oof = np.zeros((len(ytr), len(CLASSES)))
    for inner_train, inner_eval in StratifiedKFold(fusion_folds, shuffle=True, random_state=seed).split(np.zeros(len(ytr)), ytr):
        oof[inner_eval] = cnn_fit_predict(x_train[inner_train], ytr[inner_train], x_train[inner_eval], cfg)
    trained, _ = load_checkpoint(model_dir(dataset, best_cnn, data_dir), get_device(device))
    cnn_test = predict_proba(trained, x_test)
    fused = fit_fusion([oof, Xtr.to_numpy(dtype=float)], ytr, [cnn_test, Xte[Xtr.columns].to_numpy(dtype=float)],
                       seed=seed, n_folds=fusion_folds, kinds=["oof", "features"])
    fusion = predictions_frame(ids_te, [CLASSES[i] for i in yte], fused, FUSION, 0)
    all_predictions = pd.concat([predictions, same, fusion], ignore_index=True)

    paired = paired_table(all_predictions, best_cnn, n_train=len(ytr), n_resamples=n_resamples, seed=seed)
    curve = learning_curve(store, cfg, best_cnn, best_params, Xtr, ytr, ids_tr, Xte, yte, ids_te, fractions, seed,
                           full_proba=cnn_test)
    summary = summary_table(all_predictions, seed)
    return ComparisonResult(all_predictions, paired, curve, summary, description, best_cnn,
                            {"n_features": int(Xtr.shape[1]), "fusion_folds": fusion_folds})


def summary_table(predictions: pd.DataFrame, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per model: balanced accuracy with its CI (k folds pooled, else repeat 0: ``scored_on``), and
    mean ± sd over repeats."""
    rows = []
    for model, g in predictions.groupby("model", sort=False):
        first, scored_on = headline_predictions(g)
        point, lo, hi = bootstrap_ci(first["true"], first["pred"], n_boot=n_boot, seed=seed)
        per = [balanced_accuracy(r["true"], r["pred"]) for _, r in g.groupby("repeat")]
        rows.append({"model": model, "balanced_accuracy": point, "ci_low": lo, "ci_high": hi,
                     "mean_over_repeats": float(np.mean(per)), "sd_over_repeats": float(np.std(per)),
                     "n_repeats": len(per), "scored_on": scored_on, "test_cells": len(first)})
    return pd.DataFrame(rows)


def paired_table(predictions: pd.DataFrame, best_cnn: str, n_train: float, n_resamples: int = 10000,
                 seed: int = 0) -> pd.DataFrame:
    """Every model against the same-input baseline and against the best model, on the test cells both scored.

    Columns: ``model``, ``reference``, ``difference`` (balanced accuracy, model - reference, on the cells
    both scored: k folds pooled, else repeat 0), ``p_permutation`` (paired permutation test over those
    cells), and with several repeats ``mean_diff``,
    ``ci_low``, ``ci_high``, ``p_corrected_t`` (corrected resampled t-test over repeats, with ``n_train``
    training cells per repeat).
    """
    first = pd.concat([headline_predictions(g)[0] for _, g in predictions.groupby("model", sort=False)])
    scores = {m: balanced_accuracy(g["true"], g["pred"]) for m, g in first.groupby("model")}
    best = max(scores, key=scores.get)
    rows = []
    for reference in dict.fromkeys([SAME_INPUT, best]):
        ref = first[first.model == reference].set_index("specimen_id")
        for model in [m for m in scores if m != reference]:
            g = first[first.model == model].set_index("specimen_id")
            cells = g.index.intersection(ref.index)
            test = paired_permutation_test(g.loc[cells, "pred"].to_numpy(), ref.loc[cells, "pred"].to_numpy(),
                                           y_true=g.loc[cells, "true"].to_numpy(), n_resamples=n_resamples, seed=seed)
            rows.append({"model": model, "reference": reference, "difference": test["difference"],
                         "p_permutation": test["p_value"], "n_cells": test["n_cells"]})
    table = pd.DataFrame(rows)
    repeats = predictions.groupby("model")["repeat"].nunique()
    several = repeats[repeats > 1].index
    if len(several) > 1:
        fold = pd.DataFrame([{"model": m, "repeat": r, "balanced_accuracy": balanced_accuracy(g["true"], g["pred"])}
                             for (m, r), g in predictions[predictions.model.isin(several)].groupby(["model", "repeat"])])
        n_test = float(predictions[predictions.repeat == 0].groupby("model").size().median())
        tests = [paired_comparison_table(fold, ref, n_train, n_test) for ref in table["reference"].unique() if ref in several]
        if tests:
            t = pd.concat(tests, ignore_index=True).rename(columns={"p_value": "p_corrected_t"})
            table = table.merge(t[["model", "reference", "mean_diff", "ci_low", "ci_high", "p_corrected_t", "n_folds"]],
                                on=["model", "reference"], how="left")
    return table


def learning_curve(store: ScalogramStore, cfg: TrainConfig, backbone: str, lgbm_params: dict, Xtr: pd.DataFrame,
                   ytr: np.ndarray, ids_tr: pd.Series, Xte: pd.DataFrame, yte: np.ndarray, ids_te: pd.Series,
                   fractions: tuple[float, ...], seed: int = 0, full_proba: np.ndarray | None = None) -> pd.DataFrame:
    """Balanced accuracy of the best CNN and of the same-input LightGBM on nested subsets of the training cells.

    ``full_proba``: the test-cell probabilities of the CNN already trained on every training cell with
    ``cfg`` (notebook 04's model); the subset of all training cells then uses them instead of a refit.
    """
    train = pd.DataFrame({"specimen_id": np.asarray(ids_tr), "label": [CLASSES[i] for i in ytr]})
    subsets = learning_curve_subsets(train, fractions, seed)
    x_train = as_tensor(store.images[store.rows(ids_tr)])
    x_test = np.asarray(store.images[store.rows(ids_te)], dtype=np.float32)
    position = {int(s): k for k, s in enumerate(np.asarray(ids_tr))}
    rows = []
    for fraction, ids in subsets.items():
        idx = np.array(sorted(position[int(s)] for s in ids))
        lgbm = make_lgbm(lgbm_params, seed).fit(Xtr.iloc[idx], ytr[idx])
        rows.append({"model": SAME_INPUT, "fraction": fraction, "n_train": len(idx),
                     "balanced_accuracy": balanced_accuracy(yte, lgbm.predict(Xte[Xtr.columns]))})
        if full_proba is not None and len(idx) == len(ytr):
            proba = full_proba
        else:
            proba = cnn_fit_predict(x_train[idx], ytr[idx], x_test, cfg)
        rows.append({"model": backbone, "fraction": fraction, "n_train": len(idx),
                     "balanced_accuracy": balanced_accuracy(yte, proba.argmax(1))})
    return pd.DataFrame(rows)


def _p_text(p: float) -> str:
    """A p-value as text at 3 decimals; below 0.001 (a permutation p can be 0) as ``p < 0.001``."""
    return f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"


def comparison_reading(result: ComparisonResult, alpha: float = 0.05) -> str:
    """Markdown: what the paired tests and the learning curve say, from their numbers.

    With several folds (or repeats) the verdict follows the corrected resampled t-test, which accounts for
    the folds' overlapping training sets; the permutation test over cells (which holds the trained models
    fixed) is given beside it. With one split the permutation test decides.
    """
    lines = []
    vs_same = result.paired[result.paired.reference == SAME_INPUT]
    for r in vs_same.itertuples():
        verdict = "beats" if r.difference > 0 else "trails"
        corrected = getattr(r, "p_corrected_t", float("nan"))
        perm = f"paired permutation {_p_text(r.p_permutation)} over {r.n_cells} test cells"
        if pd.notna(corrected):
            sig = "beyond chance" if corrected < alpha else "not beyond chance"
            lines.append(f"- **{r.model}** {verdict} the same-input features by {abs(r.difference):.3f} balanced accuracy "
                         f"(corrected resampled t-test over {int(r.n_folds)} folds {_p_text(corrected)}, "
                         f"mean difference {r.mean_diff:+.3f}, 95 % CI {r.ci_low:+.3f} to {r.ci_high:+.3f}; {perm}): {sig}.")
        else:
            sig = "beyond chance" if r.p_permutation < alpha else "not beyond chance"
            lines.append(f"- **{r.model}** {verdict} the same-input features by {abs(r.difference):.3f} balanced accuracy "
                         f"({perm}; one split, so no fold-level test): {sig}.")
    curve = result.learning_curve.pivot(index="fraction", columns="model", values="balanced_accuracy")
    if len(curve) > 1 and result.best_cnn in curve and SAME_INPUT in curve:
        gap = curve[SAME_INPUT] - curve[result.best_cnn]

        def lead(g: float) -> str:
            return f"the feature model leads by {g:.3f}" if g > 0 else f"{result.best_cnn} leads by {-g:.3f}" if g < 0 else "they tie"
        lines.append(f"- Learning curve (first split): at {curve.index[0]:.0%} of the training cells {lead(gap.iloc[0])}; at "
                     f"{curve.index[-1]:.0%}, {lead(gap.iloc[-1])}"
                     + (" — the gap narrows with more data." if abs(gap.iloc[-1]) < abs(gap.iloc[0]) else
                        " — more data does not close it here."))
    return "\n".join(lines)
