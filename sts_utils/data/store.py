"""The scalogram store: one memory-mapped ``.npy`` array of every cell's image, its index and axes.

Stage I/O. ``scalograms/`` holds ``scalograms.npy`` (cells x channels x scales x times, float16),
``index.csv`` (row -> specimen, label, the sweeps used, and the fingerprint of the inputs the image
was computed from), ``qc.csv`` (every cell's status), ``freqs_hz.npy`` (ascending, Hz),
``times_s.npy`` (s from stimulus onset) and ``params.json`` (the stage's parameters and the store's
SHA-256, written last). Nothing is unpickled.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sts_utils.core.config import dataset_dir, require
from sts_utils.core.io import file_sha256, load_npy, save_npy_atomic, write_csv_atomic, write_npy_rows_atomic, write_sidecar


def stored_rows(out_dir: Path, shard_dir: Path) -> dict[int, tuple[int, str]]:
    """``specimen_id -> (row, fingerprint)`` of the consolidated store, if it can stand in for shards.

    Trusted only when ``params.json`` (written last) names the same shard folder and records the
    SHA-256 of the store file as it is now: a store replaced by a run that stopped before its
    ``params.json`` was written, or changed by hand, gives ``{}`` and its cells are recomputed. A
    caller reuses a row only when its fingerprint equals the cell's current one.
    """
    meta_path, store_path, index_path = out_dir / "params.json", out_dir / "scalograms.npy", out_dir / "index.csv"
    if not (meta_path.exists() and store_path.exists() and index_path.exists()):
        return {}
    meta = json.loads(meta_path.read_text())
    if meta.get("params", {}).get("shard_dir") != shard_dir.name or meta.get("store_sha256") != file_sha256(store_path):
        return {}
    index = pd.read_csv(index_path)
    if index.empty or "fingerprint" not in index.columns:
        return {}
    return {int(s): (int(r), str(f)) for s, r, f in zip(index["specimen_id"], index["row"], index["fingerprint"])}


def write_store(out_dir: Path, index: pd.DataFrame, qc: pd.DataFrame, image: Callable[[int], np.ndarray],
                shape: tuple[int, ...], freqs_hz: np.ndarray, times_s: np.ndarray, params: dict, seed: int,
                inputs: dict[str, Path], extra: dict) -> Path:
    """Write the store, ``freqs_hz.npy``, ``times_s.npy``, ``qc.csv``, ``index.csv`` and, last, ``params.json``.

    ``image(specimen_id)`` gives each indexed cell's image; the array is filled row by row on
    disk (memory-mapped), so a large cohort is never held in memory.
    """
    ids = [int(s) for s in index["specimen_id"]] if len(index) else []
    store_path = write_npy_rows_atomic(out_dir / "scalograms.npy", shape, np.float16, (image(sid) for sid in ids))
    if len(index):
        index = index.copy()
        index.insert(1, "row", np.arange(len(index)))
    save_npy_atomic(freqs_hz, out_dir / "freqs_hz.npy")
    save_npy_atomic(times_s, out_dir / "times_s.npy")
    write_csv_atomic(qc, out_dir / "qc.csv")
    write_csv_atomic(index, out_dir / "index.csv")
    write_sidecar(out_dir, params, seed=seed, inputs=inputs, stage="scalograms",
                  extra={**extra, "n_cells": len(ids), "bytes_per_cell": int(np.prod(shape[1:])) * 2,
                         "store_sha256": file_sha256(store_path), "index_sha256": file_sha256(out_dir / "index.csv"),
                         "store_stat": _stat(store_path)},
                  path=out_dir / "params.json")
    return store_path


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def check_consistent(out_dir: Path, meta: dict) -> None:
    """Refuse a store whose array or index is not the one ``params.json`` (written last) describes.

    A run interrupted while it wrote the store leaves the new array beside the previous index and
    parameters; loading them together would put one run's images under another's rows. The array is
    hashed only when its size or modification time differ from the record (a copied folder).
    """
    fix = f"run notebook 02 again (make scalograms) to rewrite {out_dir}"
    store_path, index_path = out_dir / "scalograms.npy", out_dir / "index.csv"
    if "index_sha256" in meta and file_sha256(index_path) != meta["index_sha256"]:
        raise ValueError(f"{index_path} is not the index {out_dir / 'params.json'} records; {fix}")
    if "store_sha256" in meta and meta.get("store_stat") != _stat(store_path) \
            and file_sha256(store_path) != meta["store_sha256"]:
        raise ValueError(f"{store_path} is not the array {out_dir / 'params.json'} records (an interrupted run?); {fix}")


@dataclass
class ScalogramStore:
    """Read access to a dataset's consolidated scalograms (no pickle, memory-mapped)."""

    images: np.ndarray
    index: pd.DataFrame
    freqs_hz: np.ndarray
    times_s: np.ndarray
    params: dict = field(default_factory=dict)

    @classmethod
    def load(cls, dataset: str, data_dir: str | os.PathLike | None = None, mmap: bool = True) -> "ScalogramStore":
        """Open ``data/<dataset>/scalograms/`` (a missing store names notebook 02 and ``make scalograms``)."""
        d = dataset_dir(dataset, data_dir) / "scalograms"
        require(d / "index.csv")
        meta = json.loads(require(d / "params.json").read_text())
        check_consistent(d, meta)
        return cls(images=load_npy(d / "scalograms.npy", mmap=mmap), index=pd.read_csv(d / "index.csv"),
                   freqs_hz=load_npy(d / "freqs_hz.npy"), times_s=load_npy(d / "times_s.npy"), params=meta)

    def get(self, specimen_id: int) -> np.ndarray:
        """One cell's image as float32 (channels x scales x times)."""
        row = self.index.loc[self.index["specimen_id"] == specimen_id, "row"]
        if row.empty:
            raise KeyError(f"specimen {specimen_id} has no scalogram")
        return np.asarray(self.images[int(row.iloc[0])], dtype=np.float32)

    def rows(self, specimen_ids) -> np.ndarray:
        """Store rows of ``specimen_ids`` (in that order); an id without a scalogram raises ``KeyError``."""
        lookup = dict(zip(self.index["specimen_id"].astype(int), self.index["row"].astype(int)))
        missing = [int(s) for s in specimen_ids if int(s) not in lookup]
        if missing:
            raise KeyError(f"{len(missing)} specimen(s) have no scalogram, e.g. {missing[:3]}")
        return np.array([lookup[int(s)] for s in specimen_ids], dtype=int)

    def class_examples(self, classes) -> dict[str, np.ndarray]:
        """Per class, the image of the first cell of that class in the index."""
        return {c: self.get(int(self.index[self.index.label == c].specimen_id.iloc[0]))
                for c in classes if (self.index.label == c).any()}

    def class_means(self, classes) -> dict[str, np.ndarray]:
        """Per class, the mean image over its cells (float32)."""
        return {c: np.asarray(self.images[self.index[self.index.label == c].row.to_numpy()], dtype=np.float32).mean(axis=0)
                for c in classes if (self.index.label == c).any()}
