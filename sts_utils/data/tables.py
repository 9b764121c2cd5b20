"""The stage tables and their one reader each: ``cells.csv``, ``sweeps.csv``, ``spike_trains.parquet``, ``splits.csv``.

Stage I/O. Every stage reads these files through the functions here, which check what the later
stages rely on (columns, unique integer specimen ids, known labels, split values) and fail with one
line naming the file, the row and the fix. Writers check the same before anything is written.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from sts_utils.core.config import CLASSES, UNSURE, require
from sts_utils.core.errors import TableError
from sts_utils.core.io import atomic_path, write_csv_atomic

#: columns every ``cells.csv`` has (others, like ``label_flags`` or ``protocol_version``, are optional)
CELL_COLUMNS = ["specimen_id", "label", "label_source", "source", "qc_status"]
SWEEP_COLUMNS = [
    "specimen_id", "sweep_number", "stimulus_kind", "stimulus_code", "amplitude_pa", "sampling_rate_hz",
    "stim_start_s", "stim_end_s", "sweep_qc", "format", "file", "response_path", "stimulus_path",
]
SPIKE_TRAIN_COLUMNS = ["specimen_id", "sweep_number", "stimulus_kind", "epoch", "epoch_start_s", "epoch_end_s",
                       "spike_times_s", "time_scale"]
SPLIT_COLUMNS = ["specimen_id", "split", "repeat"]
PROBA_COLUMNS = [f"p_{c}" for c in CLASSES]


def _line(k: int) -> int:
    """CSV line of row ``k`` (the header is line 1)."""
    return int(k) + 2


def _refuse_first(bad: pd.Series, path: Path, problem) -> None:
    """One-line ``TableError`` naming the file, the first offending line and ``problem(row index)``."""
    if bad.any():
        k = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(f"{path}: line {_line(k)}: {problem(k)}")


def _check_columns(df: pd.DataFrame, required: list[str], path: Path, fix: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {', '.join(missing)}; {fix}")


def check_ids(df: pd.DataFrame, path: str | os.PathLike, unique: bool = True) -> pd.DataFrame:
    """``df`` with integer ``specimen_id`` (each once when ``unique``), or a one-line ``TableError`` naming the line."""
    path = Path(path)
    ids = pd.to_numeric(df["specimen_id"], errors="coerce")
    _refuse_first(ids.isna() | (ids != np.round(ids)), path,
                  lambda k: f"specimen_id {df['specimen_id'].iloc[k]!r} is not an integer")
    df = df.assign(specimen_id=ids.astype("int64"))
    if unique:
        check_unique(df, "specimen_id", path)
    return df


def check_unique(df: pd.DataFrame, column: str, path: str | os.PathLike) -> None:
    """One-line ``TableError`` naming the file and both lines when a value of ``column`` appears twice."""
    def twice(k: int) -> str:
        value = df[column].iloc[k]
        first = int(np.flatnonzero((df[column] == value).to_numpy())[0])
        return f"{column} {value} appears twice (also line {_line(first)}); each cell must have one row"

    _refuse_first(df[column].duplicated(keep="first"), Path(path), twice)


def check_labels(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """One-line ``TableError`` naming the file and line of the first label that is not a class (or ``Unsure``)."""
    known = (*CLASSES, UNSURE)
    unknown = ~df["label"].isin(known)
    _refuse_first(unknown, Path(path), lambda k: f"unknown label {df['label'].iloc[k]!r} ({int(unknown.sum())} row(s)); "
                                                 f"use one of {', '.join(known)}")


def validate_cells(cells: pd.DataFrame, path: str | os.PathLike = "cells table") -> pd.DataFrame:
    """Check a cells table (columns, unique integer ids, known labels); return it with integer ids."""
    path = Path(path)
    _check_columns(cells, CELL_COLUMNS, path, "rerun notebook 01 (make data) to rewrite it")
    cells = check_ids(cells, path)
    check_labels(cells, path)
    return cells


def read_cells(path: str | os.PathLike) -> pd.DataFrame:
    """``cells.csv``, checked (see :func:`validate_cells`)."""
    path = require(path)
    return validate_cells(pd.read_csv(path), path)


def write_cells(cells: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Check and write ``cells.csv`` atomically, :data:`CELL_COLUMNS` first."""
    cells = validate_cells(cells, path)
    cells = cells[CELL_COLUMNS + [c for c in cells.columns if c not in CELL_COLUMNS]]
    return write_csv_atomic(cells, path)


def read_sweeps(path: str | os.PathLike) -> pd.DataFrame:
    """``sweeps.csv`` (one row per sweep), checked for its columns and integer ids."""
    path = require(path)
    df = pd.read_csv(path)
    _check_columns(df, SWEEP_COLUMNS, path, "rerun notebook 01 (make data) to rewrite it")
    return check_ids(df, path, unique=False)


def write_spike_trains(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the spike-train table (Parquet, one row per sweep epoch).

    Columns: ``specimen_id`` (int), ``sweep_number`` (int), ``stimulus_kind`` (str), ``epoch`` (int),
    ``epoch_start_s``/``epoch_end_s`` (float, the stimulus epoch on the sweep's corrected time axis),
    ``spike_times_s`` (list of float, on the same axis), ``time_scale`` (float: the factor already
    applied to the stored times, 1.0 when none).
    """
    _check_columns(df, SPIKE_TRAIN_COLUMNS, Path(path), "the acquisition stage must provide them")
    with atomic_path(path) as tmp:
        df[SPIKE_TRAIN_COLUMNS].to_parquet(tmp, index=False)
    return Path(path)


def read_spike_trains(path: str | os.PathLike) -> pd.DataFrame:
    """``spike_trains.parquet``, checked; ``spike_times_s`` as float arrays (s)."""
    path = require(path)
    df = pd.read_parquet(path)
    _check_columns(df, SPIKE_TRAIN_COLUMNS, path, "rerun notebook 01 (make data) to rewrite it")
    df = check_ids(df, path, unique=False)
    df["spike_times_s"] = df["spike_times_s"].map(lambda x: np.asarray(x, dtype=float))
    return df


def validate_splits(splits: pd.DataFrame, path: str | os.PathLike = "splits table") -> pd.DataFrame:
    """Check a splits table: columns, split values, no specimen twice within a repeat."""
    path = Path(path)
    _check_columns(splits, SPLIT_COLUMNS, path, "rerun notebook 03 (make splits) to rewrite it")
    splits = check_ids(splits, path, unique=False)
    _refuse_first(~splits["split"].isin(["train", "test"]), path,
                  lambda k: f"split {splits['split'].iloc[k]!r} is neither 'train' nor 'test'")
    _refuse_first(splits.duplicated(["repeat", "specimen_id"]), path,
                  lambda k: f"specimen {int(splits['specimen_id'].iloc[k])} appears twice in repeat "
                            f"{int(splits['repeat'].iloc[k])}; rerun notebook 03 (make splits)")
    return splits


def read_splits(path: str | os.PathLike) -> pd.DataFrame:
    """``splits.csv``, checked (see :func:`validate_splits`)."""
    path = require(path)
    return validate_splits(pd.read_csv(path), path)


def predictions_frame(specimen_ids, y_true: list[str], proba: np.ndarray, model: str, repeat: int = 0) -> pd.DataFrame:
    """A prediction table: ``specimen_id``, ``model``, ``repeat``, ``true``, ``pred`` (most probable class), ``p_<class>``."""
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != len(CLASSES):
        raise ValueError(f"class probabilities must be cells x {len(CLASSES)}, got shape {proba.shape}")
    df = pd.DataFrame({"specimen_id": np.asarray(specimen_ids, dtype=np.int64), "model": model, "repeat": repeat,
                       "true": list(y_true), "pred": [CLASSES[i] for i in proba.argmax(1)]})
    for k, c in enumerate(PROBA_COLUMNS):
        df[c] = proba[:, k]
    return df
