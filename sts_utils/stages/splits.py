"""Splitting stage: the paper's split where a dataset has one, otherwise a seeded stratified split.

``splits.csv`` has one row per (specimen, repeat): ``specimen_id``, ``split`` (``train``/``test``),
``repeat`` (0 .. N_REPEATS-1). Every stage that trains or tests (CNNs, baseline) reads this file, so
the models are compared on exactly the same cells.

Defaults (:func:`default_split`): real datasets get 5 stratified folds, so that every cell is tested once
and each result is a mean ± sd over folds; the simulated ``demo`` cohort gets one held-out split (its
pages run in CI). ``allen`` uses the paper's published split whatever the mode.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedShuffleSplit

from sts_utils.core.config import CLASSES, dataset_dir, require
from sts_utils.core.io import data_dir_lock, write_csv_atomic, write_sidecar
from sts_utils.compute.stats import stratified_kfold_splits
from sts_utils.data.tables import read_cells, read_splits, validate_splits


def stratified_splits(cells: pd.DataFrame, test_fraction: float = 0.2, n_repeats: int = 1, seed: int = 0) -> pd.DataFrame:
    """Seeded stratified train/test splits of ``cells`` (``specimen_id``, ``label``), ``n_repeats`` times."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    unknown = set(cells["label"]) - set(CLASSES)
    if unknown:
        raise ValueError(f"cannot split cells with labels {sorted(unknown)}; expected only {CLASSES}")
    counts = cells["label"].value_counts()
    if (counts < 2).any():
        raise ValueError(f"every class needs at least 2 cells to be split; counts: {counts.to_dict()}")
    cells = cells.sort_values("specimen_id").reset_index(drop=True)
    n_classes = cells["label"].nunique()
    # tiny cohorts: at least one test cell per class (a rounded fraction could leave a class out)
    test_size = max(int(round(test_fraction * len(cells))), n_classes)
    if len(cells) - test_size < n_classes:
        raise ValueError(f"{len(cells)} cells are too few for a stratified split of {n_classes} classes")
    sss = StratifiedShuffleSplit(n_splits=n_repeats, test_size=test_size, random_state=seed)
    frames = []
    for r, (train, test) in enumerate(sss.split(cells["specimen_id"], cells["label"])):
        split = np.where(np.isin(np.arange(len(cells)), test), "test", "train")
        frames.append(pd.DataFrame({"specimen_id": cells["specimen_id"].to_numpy(), "split": split, "repeat": r}))
    return pd.concat(frames, ignore_index=True)


#: Split mode and number of repeats (folds) per dataset when the notebook leaves them unset.
DEFAULT_SPLITS: dict[str, tuple[str, int]] = {"demo": ("holdout", 1)}
DEFAULT_REAL_SPLIT: tuple[str, int] = ("kfold", 5)


def default_split(dataset: str, mode: str | None = None, n_repeats: int | None = None) -> tuple[str, int]:
    """``(mode, n_repeats)`` of ``dataset`` with the given values (not ``None``) taking precedence.

    A mode given without a count gets 5 folds for ``kfold`` and 1 split for ``holdout``.
    """
    default_mode, default_n = DEFAULT_SPLITS.get(dataset, DEFAULT_REAL_SPLIT)
    mode = mode or default_mode
    if n_repeats is None:
        n_repeats = default_n if mode == default_mode else DEFAULT_REAL_SPLIT[1] if mode == "kfold" else 1
    return mode, int(n_repeats)


def paper_splits(cells: pd.DataFrame, paper_split: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Restrict the published split to the cells at hand; report its coverage."""
    merged = cells[["specimen_id"]].merge(paper_split[["specimen_id", "split"]], on="specimen_id", how="left")
    coverage = {
        "cells_with_scalograms": int(len(cells)),
        "in_paper_split": int(merged["split"].notna().sum()),
        "paper_split_size": int(len(paper_split)),
        "paper_cells_missing_here": int((~paper_split["specimen_id"].isin(cells["specimen_id"])).sum()),
    }
    merged = merged.dropna(subset=["split"])
    merged["repeat"] = 0
    return merged.reset_index(drop=True), coverage


def make_splits(dataset: str, data_dir: str | os.PathLike | None = None, test_fraction: float = 0.2,
                n_repeats: int | None = None, seed: int = 0, mode: str | None = None) -> dict:
    """Write ``splits.csv`` for the cells that have a scalogram (labels from ``cells.csv``).

    ``mode="holdout"``: ``n_repeats`` seeded stratified splits with ``test_fraction`` of the cells for testing;
    ``mode="kfold"``: ``n_repeats`` stratified folds, every cell tested once (``repeat`` = fold). For ``allen``
    the paper's split (column ``split`` of ``cells.csv``) is used as published. ``mode``/``n_repeats`` left
    ``None`` take :func:`default_split`'s values for the dataset.
    """
    mode, n_repeats = default_split(dataset, mode, n_repeats)
    if mode not in ("holdout", "kfold"):
        raise ValueError(f"SPLIT_MODE must be 'holdout' or 'kfold', got {mode!r}")
    ddir = dataset_dir(dataset, data_dir)
    index = pd.read_csv(require(ddir / "scalograms" / "index.csv"))
    cells = read_cells(ddir / "cells.csv")
    usable = cells[cells["specimen_id"].isin(index["specimen_id"]) & cells["label"].isin(CLASSES)]
    coverage = None
    if "split" in cells.columns and cells["split"].notna().any():
        splits, coverage = paper_splits(usable, cells[["specimen_id", "split"]].dropna())
    elif mode == "kfold":
        splits = stratified_kfold_splits(usable[["specimen_id", "label"]], n_folds=n_repeats, seed=seed)
    else:
        splits = stratified_splits(usable[["specimen_id", "label"]], test_fraction, n_repeats, seed)
    validate_splits(splits, ddir / "splits.csv")  # checked before anything is written
    with data_dir_lock(ddir):
        path = write_csv_atomic(splits, ddir / "splits.csv")
    write_sidecar(path, {"dataset": dataset, "test_fraction": test_fraction, "n_repeats": n_repeats, "mode": mode,
                         "source": "paper" if coverage else "stratified"},
                  seed=seed, inputs={"index.csv": ddir / "scalograms" / "index.csv", "cells.csv": ddir / "cells.csv"},
                  stage="splitting", extra={"coverage": coverage})
    return {"splits": splits, "coverage": coverage, "counts": split_counts(splits, usable),
            "mode": "paper" if coverage else mode}


def split_reading(result: dict) -> str:
    """One sentence on :func:`make_splits`'s result: how many cells train and test, in how many repeats."""
    counts, splits = result["counts"], result["splits"]
    n_train, n_test = int(counts["train"].sum()), int(counts["test"].sum())
    n = splits["repeat"].nunique()
    if result.get("mode") == "kfold":
        tested = splits[splits["split"] == "test"]
        once = bool(tested["specimen_id"].is_unique) and tested["specimen_id"].nunique() == splits["specimen_id"].nunique()
        return (f"{splits['specimen_id'].nunique()} cells in {n} stratified folds; "
                f"{'every cell is tested exactly once' if once else 'NOT every cell is tested exactly once'}; "
                f"fold 0 trains on {n_train} and tests {n_test} cells.")
    return (f"{n_train} training and {n_test} test cells; {n} repeat(s), "
            f"no cell in both splits of a repeat.")


def split_counts(splits: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per class and split (repeat 0)."""
    df = splits[splits["repeat"] == 0].merge(cells[["specimen_id", "label"]], on="specimen_id")
    table = pd.crosstab(df["label"], df["split"]).reindex(CLASSES).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def load_split(dataset: str, data_dir: str | os.PathLike | None = None, repeat: int = 0) -> pd.DataFrame:
    """``specimen_id``, ``split``, ``label`` of one repeat, with a check that no specimen is in both splits."""
    ddir = dataset_dir(dataset, data_dir)
    splits = read_splits(ddir / "splits.csv")
    splits = splits[splits["repeat"] == repeat]
    cells = read_cells(ddir / "cells.csv")[["specimen_id", "label"]]
    return splits.merge(cells, on="specimen_id", how="left")


def n_repeats_of(dataset: str, data_dir: str | os.PathLike | None = None) -> int:
    """Number of split repeats (or folds) in ``splits.csv``."""
    return int(read_splits(dataset_dir(dataset, data_dir) / "splits.csv")["repeat"].max()) + 1


def coverage_table(coverage: dict) -> pd.DataFrame:
    """The published split's coverage of the cells at hand, as a two-column table."""
    return pd.DataFrame({"what": list(coverage), "cells": list(coverage.values())})
