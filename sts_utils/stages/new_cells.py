"""New cells after :func:`sts_utils.stages.predict.predict_cells`: what notebook 09 reads from the predictions.

Stage. :func:`unlabelled_cells` gives the cells of a dataset that no model saw (label ``Unsure``) as an input
for :func:`~sts_utils.stages.predict.predict_cells`; :func:`class_distribution` summarises the predicted classes
per group (:func:`no_predictions` is the table of a dataset without a cell to classify);
:func:`agreement_table` compares the balanced accuracy on labelled new cells with the test split's; and
:func:`agreement_reading` and :func:`distribution_reading` write the page's reading from those numbers. The
page's figure of the predicted classes is :func:`sts_utils.pages.plots.distribution_figure`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from sts_utils.core.config import CLASSES, UNSURE, dataset_dir, require
from sts_utils.compute.metrics import balanced_accuracy, bootstrap_ci
from sts_utils.data.tables import read_cells, read_spike_trains, read_sweeps, write_spike_trains


def unlabelled_cells(dataset: str, data_dir: str | os.PathLike | None, out_dir: str | os.PathLike
                     ) -> tuple[Path, pd.DataFrame]:
    """The cells of ``dataset`` that no model saw because their label is ``Unsure``, as an input for :func:`predict_cells`.

    Spike-time datasets: their rows of ``spike_trains.parquet`` are written to
    ``<out_dir>/unsure_spike_trains.parquet``. Voltage datasets: their recording files are linked into
    ``<out_dir>/raw/`` as ``sub-<specimen_id>.nwb`` (symbolic links), so the ids read from the names are theirs.

    Returns
    -------
    input_path, cells
        What to give :func:`predict_cells`, and the ``Unsure`` rows of ``cells.csv`` (``cre_line`` and
        the other columns, to group the predictions by).
    """
    ddir = dataset_dir(dataset, data_dir)
    cells = read_cells(ddir / "cells.csv")
    unsure = cells[cells["label"] == UNSURE].reset_index(drop=True)
    out_dir = Path(out_dir)
    if (ddir / "spike_trains.parquet").exists():
        trains = read_spike_trains(ddir / "spike_trains.parquet")
        path = out_dir / "unsure_spike_trains.parquet"
        write_spike_trains(trains[trains["specimen_id"].isin(unsure["specimen_id"])], path)
        return path, unsure
    sweeps = read_sweeps(require(ddir / "sweeps.csv"))
    files = sweeps.loc[sweeps["specimen_id"].isin(unsure["specimen_id"]), ["specimen_id", "file"]].drop_duplicates("specimen_id")
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for sid, rel in zip(files["specimen_id"], files["file"]):
        link = raw / f"sub-{int(sid)}.nwb"  # the DANDI-style name whose id predict reads back
        if not link.is_symlink():
            link.symlink_to((ddir / "raw" / rel).resolve())
    return raw, unsure


def class_distribution(predictions: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per group (``by``): cells, predicted, skipped, count and share of each ensemble class, and confidence.

    Confidence is the ensemble's probability of the class it predicts (mean and median over the group's cells).
    """
    rows = []
    for g, d in predictions.groupby(by, sort=True):
        ok = d[d["status"] == "ok"]
        row = {by: g, "cells": len(d), "predicted": len(ok), "skipped": int((d["status"] != "ok").sum())}
        for c in CLASSES:
            n = int((ok["ensemble_class"] == c).sum())
            row[f"n_{c}"] = n
            row[f"share_{c}"] = n / len(ok) if len(ok) else np.nan
        row["mean_confidence"] = float(ok["ensemble_probability"].mean()) if len(ok) else np.nan
        row["median_confidence"] = float(ok["ensemble_probability"].median()) if len(ok) else np.nan
        rows.append(row)
    columns = [by, "cells", "predicted", "skipped", *[f"{k}_{c}" for c in CLASSES for k in ("n", "share")],
               "mean_confidence", "median_confidence"]
    return pd.DataFrame(rows, columns=columns)


def no_predictions() -> pd.DataFrame:
    """The predictions table of a dataset without a cell to classify (every cell labelled): no rows."""
    return pd.DataFrame({"specimen_id": pd.Series(dtype="int64"), "source": pd.Series(dtype=object),
                         "status": pd.Series(dtype=object), "reason": pd.Series(dtype=object),
                         "ensemble_class": pd.Series(dtype=object), "ensemble_probability": pd.Series(dtype=float)})


def agreement_table(predictions: pd.DataFrame, truth: pd.Series, results: pd.DataFrame | None, seed: int = 0,
                    n_boot: int = 1000) -> pd.DataFrame:
    """Balanced accuracy (95 % bootstrap CI) of each model and the ensemble on labelled new cells, beside the test split's.

    Parameters
    ----------
    predictions
        :func:`predict_cells`'s table.
    truth
        ``specimen_id -> true class`` of the new cells.
    results
        ``results_table.csv`` (its ``model``, ``balanced_accuracy``, ``ci_low``, ``ci_high``), or None.

    Returns
    -------
    pandas.DataFrame
        One row per model: ``new_cells``, ``new_bacc``, ``new_ci_low``, ``new_ci_high``, ``test_bacc``,
        ``test_ci_low``, ``test_ci_high`` and ``agrees`` (the new cells' estimate lies in the test CI, or the CIs overlap).
    """
    ok = predictions[predictions["status"] == "ok"].copy()
    ok["true"] = ok["specimen_id"].map(truth)
    ok = ok[ok["true"].isin(CLASSES)]
    first = f"_p_{CLASSES[0]}"
    models = [c[: -len(first)] for c in ok.columns if c.endswith(first) and c != f"ensemble{first}"] + ["ensemble"]
    rows = []
    for m in models:
        point, lo, hi = bootstrap_ci(ok["true"], ok[f"{m}_class"], balanced_accuracy, n_boot=n_boot, seed=seed)
        row = {"model": m, "new_cells": len(ok), "new_bacc": point, "new_ci_low": lo, "new_ci_high": hi,
               "test_bacc": np.nan, "test_ci_low": np.nan, "test_ci_high": np.nan}
        if results is not None and (results["model"] == m).any():
            r = results[results["model"] == m].iloc[0]
            row.update(test_bacc=float(r["balanced_accuracy"]), test_ci_low=float(r["ci_low"]), test_ci_high=float(r["ci_high"]))
        t_lo, t_hi = row["test_ci_low"], row["test_ci_high"]
        if np.isfinite(t_lo) and np.isfinite(t_hi):
            inside = t_lo <= point <= t_hi
            overlap = np.isfinite(lo) and np.isfinite(hi) and lo <= t_hi and t_lo <= hi
            row["agrees"] = bool(inside or overlap)
        else:
            row["agrees"] = None
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_reading(agreement: pd.DataFrame, n_skipped: int, tag: str = "") -> str:
    """A reading of :func:`agreement_table`, written from its numbers."""
    parts = []
    for r in agreement.itertuples(index=False):
        test = (f"test split {r.test_bacc:.3f} (95 % CI {r.test_ci_low:.3f}–{r.test_ci_high:.3f})"
                if np.isfinite(r.test_bacc) else "no test-split row")
        verdict = "" if r.agrees is None else ("agrees" if r.agrees else "**does not agree**")
        parts.append(f"{r.model}: {r.new_bacc:.3f} (95 % CI {r.new_ci_low:.3f}–{r.new_ci_high:.3f}) vs {test} {verdict}".strip())
    n = int(agreement["new_cells"].iloc[0]) if len(agreement) else 0
    disagree = [r.model for r in agreement.itertuples() if r.agrees is False]
    verdict = ("Every model's balanced accuracy on the new cells is compatible with its test-split estimate, so the "
               "test split was not a lucky draw." if not disagree else
               f"{', '.join(disagree)} differ from their test-split estimate beyond the CIs: the test split may not "
               "represent new cells of this kind, or the new cohort is too small to tell.")
    return (f"Balanced accuracy on {n} new cells{tag} ({n_skipped} skipped, listed in the predictions table): "
            + "; ".join(parts) + f". {verdict}")


def distribution_reading(summary: pd.DataFrame, by: str, tag: str = "") -> str:
    """A reading of :func:`class_distribution`: each group's most frequent predicted class, its share and the confidence."""
    if summary.empty:
        return "No cell was left to classify" + tag + ": every cell of the dataset has one of the four labels."
    parts = []
    for r in summary.to_dict("records"):
        if not r["predicted"]:
            parts.append(f"{r[by]}: no cell predicted ({r['skipped']} skipped)")
            continue
        shares = sorted(((r[f"share_{c}"], c) for c in CLASSES), reverse=True)
        (s1, c1), (s2, c2) = shares[0], shares[1]
        parts.append(f"{r[by]} ({r['predicted']} cells, {r['skipped']} skipped): {s1:.0%} {c1}, {s2:.0%} {c2}; "
                     f"mean confidence {r['mean_confidence']:.2f}")
    chance = 1 / len(CLASSES)
    low = [str(r[by]) for r in summary.to_dict("records") if r["predicted"] and r["mean_confidence"] < chance + 0.15]
    note = (f" The models are barely more confident than chance ({chance:.2f}) for {', '.join(low)}: these cells look "
            "like none of the training classes in particular." if low else "")
    return "By group" + tag + ": " + "; ".join(parts) + "." + note
