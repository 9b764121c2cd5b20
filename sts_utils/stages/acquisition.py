"""Acquisition stage (notebook 01): raw files present, then ``cells.csv`` and the sweep table.

One function per dataset, all with the same signature, in :data:`ACQUIRE`; :func:`acquire` runs one
and writes ``cells.csv`` (checked by :func:`sts_utils.data.tables.write_cells`) plus ``sweeps.csv``
(voltage recordings) or ``spike_trains.parquet`` (spike-time data).

``demo``
    simulates the cohort (:mod:`sts_utils.compute.simulate`) into NWB 2 files in the DANDI 000020 layout.
    Each file is recorded with the design it was simulated from (cell parameters, seed, protocol)
    and its SHA-256 in ``raw/demo_files.json``; a file whose design or content no longer matches is
    simulated again, so the cohort is always a function of ``N_CELLS`` and ``SEED``.
``teeter2018``, ``patchseq``, ``celltypes``, ``allen``
    real Allen data through :mod:`sts_utils.data.registry` (pinned hashes, offline-clear errors).
a folder dataset (``data/<name>/dataset.yaml``, :func:`sts_utils.data.registry.read_folder_dataset`)
    the user's own recordings (ABF, Igor waves, NWB of any writer) read where they lie (``raw/`` links to
    them), one cell per recording, labels from the registration's label file (:func:`folder_cells`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from sts_utils.core.config import CLASSES, DATASET_FILE, UNSURE, dataset_dir, logger, progress_stream
from sts_utils.core.errors import DataNotAvailableError, RecordingError, SelectionError, TableError
from sts_utils.core.io import data_dir_lock, write_csv_atomic, write_sidecar, write_text_atomic
from sts_utils.data.labels import (label_flags, label_from_cre_line, label_from_transcriptomic_type, read_label_file, read_paper_labels,
                     read_paper_split)
from sts_utils.data.nwb import DEMO_STIMULUS_CODES, write_nwb2_cell
from sts_utils.data.recordings import (assign_ids, find_recordings, id_from_name, load_sweep, read_cell_mapping, read_teeter_cell,
                         scan_cells, scan_recordings)
from sts_utils.data.registry import (CELLTYPES_QUERY, TEETER_FEATURES, FolderDataset, RemoteFile, ensure_celltypes_nwb, ensure_files,
                       patchseq_manifest, patchseq_remote_files, remote_file, sts_paper_files, teeter_cell_relpath,
                       read_folder_dataset, verified_sha256)
from sts_utils.compute.simulate import PARAMETER_NAMES, Protocol, cohort_design, simulate_cells
from sts_utils.compute.sweeps import analyse_long_squares, find_rheobase
from sts_utils.data.tables import SWEEP_COLUMNS, write_cells, write_spike_trains

# --------------------------------------------------------------------------------------------- demo

DEMO_METADATA = "demo_patchseq_metadata.csv"
DEMO_FILES = "demo_files.json"


def demo_nwb_relpath(specimen_id: int) -> str:
    """DANDI 000020 style path of a demo cell: ``sub-<id>/sub-<id>_ses-<id>_icephys.nwb``."""
    return f"sub-{specimen_id}/sub-{specimen_id}_ses-{specimen_id}_icephys.nwb"


def _design_fingerprint(row: pd.Series, seed: int, batch_ids: tuple[int, ...], protocol: Protocol) -> str:
    """What a simulated file is a function of: the cell's class and parameters, the seed, its batch, the protocol."""
    key = {"label": row["label"], "params": {k: float(row[k]) for k in PARAMETER_NAMES}, "seed": seed,
           "batch": list(batch_ids), "protocol": asdict(protocol)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _simulate_and_write_batch(design: pd.DataFrame, seed: int, cache: str) -> list[dict]:
    protocol = Protocol()
    out = []
    for rec in simulate_cells(design, seed=seed, protocol=protocol, progress=False):
        sweeps = []
        for k, (amp, v, i) in enumerate(zip(rec["amplitudes_pa"], rec["v_mv"], rec["i_pa"])):
            if amp < 0:
                code = DEMO_STIMULUS_CODES["subthreshold"]
            elif amp < rec["rheobase_pa"]:
                code = DEMO_STIMULUS_CODES["rheobase"]
            else:
                code = DEMO_STIMULUS_CODES["suprathreshold"]
            sweeps.append({"sweep_number": k + 1, "v_mv": v, "i_pa": i, "stimulus_code": code})
        sid = rec["specimen_id"]
        if sweeps:
            write_nwb2_cell(Path(cache) / demo_nwb_relpath(sid), sid, sweeps, protocol.sampling_rate_hz,
                            subject_id=str(sid), description="simulated long-square protocol (STS demo cohort)",
                            notes={"simulated": True, "class": rec["label"], "model_rheobase_pa": rec["rheobase_pa"]})
        out.append({"specimen_id": sid, "model_rheobase_pa": rec["rheobase_pa"], "n_sweeps": len(sweeps)})
    return out


def generate_demo_cohort(cache: Path, n_cells_per_class: int = 100, seed: int = 0, batch_size: int = 100,
                         n_jobs: int = 2) -> pd.DataFrame:
    """Simulate the demo cohort into ``cache`` (one NWB 2 file per cell) and write its metadata table.

    A batch is simulated again unless every one of its files exists with the design fingerprint
    and the content hash recorded when it was written, so an interrupted generation resumes, a
    changed ``N_CELLS`` or seed never reuses a file simulated for another design, and a corrupted
    file is remade. The metadata table mimics the patch-seq metadata (``cell_specimen_id``,
    ``dendrite_type``, ``corresponding_AIT2.3.1_alias``) so labels go through the same rule as
    the real data: interneurons get a simulated transcriptomic alias, excitatory cells none and ``spiny``.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    protocol = Protocol()
    design = cohort_design(n_cells_per_class, seed)
    batches = [design.iloc[s:s + batch_size] for s in range(0, len(design), batch_size)]
    record_path = cache / DEMO_FILES
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    verified: dict = {}
    expected: dict[str, str] = {}
    todo = []
    for b in batches:
        ids = tuple(int(s) for s in b.specimen_id)
        fresh = True
        for _, row in b.iterrows():
            rel = demo_nwb_relpath(int(row.specimen_id))
            expected[rel] = _design_fingerprint(row, seed, ids, protocol)
            seen = record.get(rel, {})
            path = cache / rel
            if not (path.is_file() and seen.get("design") == expected[rel]
                    and seen.get("sha256") == verified_sha256(path, cache, verified)):
                fresh = False
        if not fresh:
            todo.append(b)
    logger.info("demo cohort: %d cells in %d batches, %d to simulate", len(design), len(batches), len(todo))
    results = {}
    model_table = cache / "demo_model_parameters.csv"
    if model_table.exists():
        for r in pd.read_csv(model_table).to_dict("records"):
            if "model_rheobase_pa" in r:
                results[int(r["specimen_id"])] = {k: r[k] for k in ("specimen_id", "model_rheobase_pa", "n_sweeps")}
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, n_jobs)) as pool:
            futures = [pool.submit(_simulate_and_write_batch, b, seed, str(cache)) for b in todo]
            for fut in tqdm(futures, desc="simulating demo cells (batches)", file=progress_stream()):
                for r in fut.result():
                    results[int(r["specimen_id"])] = r
        for b in todo:
            for sid in b.specimen_id:
                rel = demo_nwb_relpath(int(sid))
                if (cache / rel).is_file():
                    record[rel] = {"design": expected[rel], "sha256": verified_sha256(cache / rel, cache, verified)}
                else:
                    record.pop(rel, None)  # never spiked: no file
        write_text_atomic(record_path, json.dumps(record, indent=1, sort_keys=True))
    res = pd.DataFrame([results[int(s)] for s in design.specimen_id if int(s) in results],
                       columns=["specimen_id", "model_rheobase_pa", "n_sweeps"])
    design = design.merge(res, on="specimen_id", how="left")
    write_csv_atomic(design, model_table)
    alias = {"Pvalb": "Pvalb Sim", "Sst": "Sst Sim", "Vip/Lamp5": "Vip Sim", "Excitatory": np.nan}
    meta = pd.DataFrame({
        "cell_specimen_id": design.specimen_id,
        "dendrite_type": np.where(design.label == "Excitatory", "spiny", "aspiny"),
        "corresponding_AIT2.3.1_alias": design.label.map(alias),
        "simulated_class": design.label,
        "simulated": True,
    })
    write_csv_atomic(meta, cache / DEMO_METADATA)
    return design


def _acquire_demo(ddir: Path, seed: int, max_cells: int | None, n_jobs: int, n_cells: int
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cache = ddir / "raw"
    design = generate_demo_cohort(cache, n_cells_per_class=n_cells, seed=seed, n_jobs=n_jobs)
    meta = pd.read_csv(cache / DEMO_METADATA)
    cells = _patchseq_cells(meta)
    cells["source"] = "demo (simulated)"
    cells["protocol_version"] = "simulated"
    cells = cells.merge(design[["specimen_id", "model_rheobase_pa"]], on="specimen_id", how="left")
    cells = stratified_subset(cells, max_cells, seed)
    files = {int(s): cache / demo_nwb_relpath(int(s)) for s in cells.specimen_id if (cache / demo_nwb_relpath(int(s))).is_file()}
    sweeps, qc = scan_recordings(files, "nwb2", cache, n_jobs=n_jobs)
    return cells, sweeps, {"qc": qc}


# ----------------------------------------------------------------------------------------- patchseq

def _patchseq_cells(meta: pd.DataFrame) -> pd.DataFrame:
    labels = [label_from_transcriptomic_type(a, d) for a, d in zip(meta["corresponding_AIT2.3.1_alias"], meta["dendrite_type"])]
    cells = pd.DataFrame({
        "specimen_id": meta["cell_specimen_id"].astype("int64"),
        "label": [lab for lab, _ in labels],
        "label_source": [src for _, src in labels],
        "dendrite_type": meta["dendrite_type"],
        "ttype": meta["corresponding_AIT2.3.1_alias"],
    })
    cells["label_flags"] = [label_flags(r.label, r.label_source, r.dendrite_type) for r in cells.itertuples()]
    return cells


def _acquire_patchseq(ddir: Path, seed: int, max_cells: int | None, n_jobs: int, n_cells: int = 0
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    meta, manifest = patchseq_manifest()
    cells = _patchseq_cells(meta)
    cells["source"] = "patchseq"
    cells["protocol_version"] = "patchseq"
    cells = cells[cells.specimen_id.isin(manifest.cell_specimen_id)]
    cells = stratified_subset(cells, max_cells, seed)
    remote = patchseq_remote_files(manifest)
    cache = ddir / "raw"
    ensure_files([remote[int(s)] for s in cells.specimen_id], cache, "DANDI 000020 (patch-seq NWB 2)")
    files = {int(s): cache / remote[int(s)].relpath for s in cells.specimen_id}
    sweeps, qc = scan_recordings(files, "nwb2", cache, n_jobs=n_jobs)
    return cells, sweeps, {"qc": qc}


# ----------------------------------------------------------------------------------------- celltypes

def _celltypes_cells(spec: pd.DataFrame) -> pd.DataFrame:
    labels = [label_from_cre_line(c, d) for c, d in zip(spec.get("line_name"), spec.get("tag__dendrite_type"))]
    cells = pd.DataFrame({
        "specimen_id": spec["specimen__id"].astype("int64"),
        "label": [lab for lab, _ in labels], "label_source": [s for _, s in labels],
        "cre_line": spec.get("line_name"), "dendrite_type": spec.get("tag__dendrite_type"),
        "reporter_status": spec.get("cell_reporter_status"),
    })
    cells["label_flags"] = [label_flags(r.label, r.label_source, r.dendrite_type, r.reporter_status) for r in cells.itertuples()]
    return cells


def _acquire_celltypes(ddir: Path, seed: int, max_cells: int | None, n_jobs: int, n_cells: int = 0
                       ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cache = ddir / "raw"
    details = ensure_files([RemoteFile("cell_types_specimen_details.json", CELLTYPES_QUERY)], cache,
                           "Allen Cell Types specimen details")[0]
    rows = json.loads(details.read_text())
    cells = _celltypes_cells(pd.DataFrame(rows.get("msg", rows) if isinstance(rows, dict) else rows))
    cells["source"] = "celltypes"
    cells["protocol_version"] = "celltypes"
    cells = stratified_subset(cells, max_cells, seed)
    files = {int(s): ensure_celltypes_nwb(int(s), cache)
             for s in tqdm(cells.specimen_id, desc="Cell Types DB NWB files", file=progress_stream())}
    sweeps, qc = scan_recordings(files, "nwb1", cache, n_jobs=n_jobs)
    return cells, sweeps, {"qc": qc}


# ------------------------------------------------------------------------------------------- allen

def _acquire_allen(ddir: Path, seed: int, max_cells: int | None, n_jobs: int, n_cells: int = 0
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    paper = sts_paper_files(ddir / "raw")
    labels = read_paper_labels(paper["labels"])
    split = read_paper_split(paper["train"], paper["test"])
    ps_cells, ps_sweeps, ps_extra = _acquire_patchseq(dataset_dir("patchseq", ddir.parent), seed, None, n_jobs)
    ct_cells, ct_sweeps, ct_extra = _acquire_celltypes(dataset_dir("celltypes", ddir.parent), seed, None, n_jobs)
    derived = pd.concat([ps_cells, ct_cells], ignore_index=True)
    cells = labels.merge(derived.rename(columns={"label": "derived_label"}), on="specimen_id", how="inner")
    cells["label_source"] = "sts_paper"
    cells = cells.merge(split[["specimen_id", "split"]], on="specimen_id", how="left")
    cells = stratified_subset(cells, max_cells, seed)
    sweeps = pd.concat([ps_sweeps, ct_sweeps], ignore_index=True)
    return cells, sweeps[sweeps.specimen_id.isin(cells.specimen_id)], {"qc": pd.concat([ps_extra["qc"], ct_extra["qc"]])}


def label_agreement(cells: pd.DataFrame) -> pd.DataFrame:
    """Cross-table of published labels (rows) against labels derived from metadata (columns)."""
    return pd.crosstab(cells["label"], cells["derived_label"].fillna("missing"), margins=True)


# --------------------------------------------------------------------------------------- teeter2018

def _acquire_teeter(ddir: Path, seed: int, max_cells: int | None, n_jobs: int, n_cells: int = 0
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cache = ddir / "raw"
    table = ensure_files([remote_file("teeter2018", TEETER_FEATURES)], cache, "teeter2018 feature table")[0]
    feats = pd.read_csv(table)
    labels = [label_from_cre_line(c) for c in feats["cre"]]
    cells = pd.DataFrame({"specimen_id": feats["specimen_ID"].astype("int64"), "label": [x for x, _ in labels],
                          "label_source": [s for _, s in labels], "cre_line": feats["cre"], "excitation": feats["excitation"]})
    cells["label_flags"] = ""
    cells["source"] = "teeter2018"
    cells = stratified_subset(cells, max_cells, seed)
    rel = {int(r.specimen_id): teeter_cell_relpath(int(r.specimen_id), r.cre_line) for r in cells.itertuples()}
    ensure_files([remote_file("teeter2018", p) for p in rel.values()], cache, "teeter2018 spike trains")
    frames, qc = [], []
    for sid, p in tqdm(sorted(rel.items()), desc="reading teeter2018 cells", file=progress_stream()):
        try:
            df = read_teeter_cell(cache / p, sid)
            status = "ok" if len(df) else "no Noise 1 sweep with spikes"
        except (OSError, ValueError, KeyError, RecordingError) as exc:
            df, status = pd.DataFrame(), f"unreadable: {type(exc).__name__}: {exc}"
        frames.append(df)
        qc.append({"specimen_id": sid, "qc_status": status, "n_sweeps": df["sweep_number"].nunique() if len(df) else 0})
    trains = pd.concat(frames, ignore_index=True)
    scale = trains.groupby("specimen_id")["time_scale"].max()
    cells["time_scale"] = cells.specimen_id.map(scale).fillna(1.0)
    cells["protocol_version"] = np.where(cells["time_scale"] > 1.0, "newer (25 kHz index)", "older (20 kHz index)")
    return cells, trains, {"qc": pd.DataFrame(qc), "spike_trains": True}


# ------------------------------------------------------------------------------------ folder datasets

def link_recordings(ddir: Path, recordings: Path) -> Path:
    """``ddir/raw``: the recordings folder itself, or a link to it (every stage reads a dataset's files there).

    Raises
    ------
    DataNotAvailableError
        ``raw`` already is another folder (never deleted: it may hold the user's files).
    """
    raw = ddir / "raw"
    if raw.exists() and raw.resolve() == recordings.resolve():
        return raw
    if raw.is_symlink():
        raw.unlink()  # a link to a folder the registration no longer names
    elif raw.exists():
        raise DataNotAvailableError(f"{raw} is a folder but the registration names the recordings {recordings}; "
                                    "move the files there, or set 'recordings: raw' in dataset.yaml")
    raw.symlink_to(recordings.resolve(), target_is_directory=True)
    return raw


def folder_cells(spec: FolderDataset, raw: Path) -> tuple[pd.DataFrame, list[Path]]:
    """One row per recording of a folder dataset (``specimen_id``, ``cell``, ``label``, ``label_source``), and the files.

    Ids come from the ``cells`` mapping, else the label file's ``specimen_id`` beside its ``file``, else a
    ``sub-<id>`` name, else 1, 2, ... in file order. A recording the label file does not name is ``Unsure``
    (kept, never trained on).
    """
    files = find_recordings(raw)
    if not files:
        raise DataNotAvailableError(f"{spec.recordings}: no recording (.abf, .nwb, folders of .ibw waves) in the folder "
                                    f"{spec.registration} registers")
    rel = [str(p.relative_to(raw)) for p in files]
    labels = read_label_file(spec.labels, rel)
    mapping = read_cell_mapping(spec.cells) if spec.cells else {}
    if {"file", "specimen_id"} <= set(labels.columns):
        mapping = {**dict(zip(labels["file"], labels["specimen_id"].astype(int))), **mapping}
    ids = assign_ids([mapping.get(r, id_from_name(p)) for r, p in zip(rel, files)])
    cells = pd.DataFrame({"specimen_id": pd.Series(ids, dtype="int64"), "cell": rel})
    key = "file" if "file" in labels.columns else "specimen_id"
    by_key = labels.set_index(key)["label"]
    keyed = cells["cell"] if key == "file" else cells["specimen_id"]
    if key == "specimen_id":
        stray = sorted(set(by_key.index) - set(cells["specimen_id"]))
        if stray:
            raise TableError(f"{spec.labels}: specimen_id {stray[0]} names no recording of {spec.recordings} "
                             f"({len(stray)} such id(s)); the recordings' ids are {sorted(ids)[:5]}...")
    cells["label"] = keyed.map(by_key).fillna(UNSURE).to_numpy()
    cells["label_source"] = np.where(keyed.isin(by_key.index), "labels.csv", "not in labels.csv")
    return cells, files


def _acquire_folder(ddir: Path, seed: int, max_cells: int | None, n_jobs: int, n_cells: int = 0
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    spec = read_folder_dataset(ddir / DATASET_FILE)
    raw = link_recordings(ddir, spec.recordings)
    cells, files = folder_cells(spec, raw)
    cells["source"] = ddir.name
    cells["label_flags"] = ""
    cells = stratified_subset(cells, max_cells, seed)
    chosen = {c: sid for c, sid in zip(cells["cell"], cells["specimen_id"])}
    found, sweeps, qc = scan_cells([p for p in files if str(p.relative_to(raw)) in chosen], raw, n_jobs=n_jobs,
                                   mapping=chosen)
    cells["protocol_version"] = cells["specimen_id"].map(found.set_index("specimen_id")["format"]).to_numpy()
    if sweeps.empty:
        sweeps = pd.DataFrame(columns=SWEEP_COLUMNS + ["file_sha256"])
    return cells, sweeps, {"qc": qc}


# -------------------------------------------------------------------------------------- common

def stratified_subset(cells: pd.DataFrame, max_cells: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_cells`` cells, sampled per label in proportion to its count (seeded).

    Every class present keeps at least one cell; ``None`` or 0 keeps all cells.
    """
    if not max_cells or max_cells >= len(cells):
        return cells.sort_values("specimen_id").reset_index(drop=True)
    if max_cells < 1:
        raise ValueError(f"MAX_CELLS must be positive, got {max_cells}")
    rng = np.random.default_rng(seed)
    counts = cells["label"].value_counts()
    quota = np.maximum(1, np.floor(counts / counts.sum() * max_cells)).astype(int)
    picked = []
    for label, q in quota.items():
        idx = cells.index[cells["label"] == label].to_numpy()
        picked.extend(rng.choice(idx, size=min(q, len(idx)), replace=False))
    return cells.loc[sorted(picked)].sort_values("specimen_id").reset_index(drop=True)


AcquireFn = Callable[[Path, int, "int | None", int, int], "tuple[pd.DataFrame, pd.DataFrame, dict]"]

#: dataset -> acquisition function ``(dataset folder, seed, max_cells, n_jobs, n_cells)``; a registered folder
#: dataset (:func:`sts_utils.core.config.registration_file`) is acquired by :data:`ACQUIRE_FOLDER`
ACQUIRE: dict[str, AcquireFn] = {"demo": _acquire_demo, "teeter2018": _acquire_teeter, "patchseq": _acquire_patchseq,
                                 "celltypes": _acquire_celltypes, "allen": _acquire_allen}
ACQUIRE_FOLDER: AcquireFn = _acquire_folder


def acquire(dataset: str, data_dir: str | os.PathLike | None = None, seed: int = 0, max_cells: int | None = None,
            n_cells: int = 100, n_jobs: int = 2) -> dict:
    """Run the acquisition stage of ``dataset``; write ``cells.csv`` and the sweep / spike-train table.

    Parameters
    ----------
    n_cells
        Demo only: simulated cells per class.
    max_cells
        Stratified subset of at most this many cells (taken before any download).

    Returns
    -------
    dict with ``cells`` (DataFrame), ``table`` (sweeps or spike trains), ``qc`` (per-file status), ``paths``.
    """
    ddir = dataset_dir(dataset, data_dir)
    if int(n_cells) < 1:
        raise ValueError(f"N_CELLS must be >= 1 (simulated cells per class), got {n_cells}")
    ddir.mkdir(parents=True, exist_ok=True)
    with data_dir_lock(ddir):
        cells, table, extra = ACQUIRE.get(dataset, ACQUIRE_FOLDER)(ddir, seed, max_cells, n_jobs, int(n_cells))
        qc = extra["qc"]
        status = qc.set_index("specimen_id")["qc_status"]
        cells["qc_status"] = cells.specimen_id.map(status).fillna("no recording")
        paths = {}
        if extra.get("spike_trains"):
            paths["spike_trains"] = write_spike_trains(table, ddir / "spike_trains.parquet")
        else:
            paths["sweeps"] = write_csv_atomic(table, ddir / "sweeps.csv")
        # cells.csv last: it is the stage's make target, so it exists only once everything else does
        paths["cells"] = write_cells(cells, ddir / "cells.csv")
        params = {"dataset": dataset, "max_cells": max_cells, "n_cells": n_cells}
        for p in paths.values():
            write_sidecar(p, params, seed=seed, stage="acquisition",
                          extra={"n_cells": int(len(cells)), "qc_counts": qc["qc_status"].value_counts().to_dict()})
    return {"cells": pd.read_csv(paths["cells"]), "table": table, "qc": qc, "paths": paths}


# ------------------------------------------------------------------------------- looking at the cohort

def cohort_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per class and label source (rows) and source dataset (columns)."""
    return pd.crosstab([cells["label"], cells["label_source"]], cells["source"]).reset_index()


def qc_summary(qc: pd.DataFrame, table: pd.DataFrame, cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Counts behind notebook 01's QC tables: files per status, sweeps per status, labels per flag."""
    out = {"files": qc["qc_status"].str.split(":").str[0].value_counts().rename_axis("qc_status").reset_index(name="cells")}
    if "sweep_qc" in table.columns:
        out["sweeps"] = table["sweep_qc"].value_counts().rename_axis("sweep_qc").reset_index(name="sweeps")
    if "label_flags" in cells.columns:
        flags = cells["label_flags"].fillna("").astype(str).str.split(";").explode().replace("", "none")
        out["flags"] = flags.value_counts().rename_axis("label_flags").reset_index(name="cells")
    return out


def fi_and_examples(cells: pd.DataFrame, sweeps: pd.DataFrame, root: Path, rng: np.random.Generator,
                    n_cells: int = 12) -> tuple[pd.DataFrame, dict[str, list]]:
    """f–I rows of ``n_cells`` random cells per class, and one example cell per class.

    Returns
    -------
    fi
        One row per analysed sweep (:func:`sts_utils.compute.sweeps.analyse_long_squares`) with
        ``specimen_id``, ``label`` and ``above_rheobase_pa``, from 40 pA below to 120 pA above rheobase.
    examples
        ``class -> [(title, t_s, v_mv)]``: the first analysed cell's sweeps at rheobase and rheobase + 40 pA.
    """
    ok = cells[(cells.qc_status == "ok") & cells.label.isin(CLASSES)]
    groups = dict(tuple(sweeps[sweeps.stimulus_kind == "Long Square"].groupby("specimen_id")))
    examples, fi_rows = {}, []
    for label in CLASSES:
        ids = ok.loc[ok.label == label, "specimen_id"].to_numpy()
        if len(ids) == 0:
            continue
        for sid in rng.choice(ids, size=min(n_cells, len(ids)), replace=False):
            rows = groups.get(sid)
            if rows is None:
                continue
            counts = analyse_long_squares(rows, lambda row: load_sweep(row, root)).table
            try:
                rheo, _ = find_rheobase(counts)
            except SelectionError:
                continue
            fi_rows.append(counts.assign(specimen_id=sid, label=label, above_rheobase_pa=counts.amplitude_pa - rheo))
            if label not in examples:
                panels = []
                for name, target in (("rheobase", rheo), ("rheobase + 40 pA", rheo + 40)):
                    row = rows.iloc[(rows.amplitude_pa - target).abs().argmin()]
                    sw = load_sweep(row, root)
                    panels.append((f"{name} ({row.amplitude_pa:.0f} pA), cell {sid}", sw.t_s, sw.v_mv))
                examples[label] = panels
    fi = pd.concat(fi_rows, ignore_index=True) if fi_rows else pd.DataFrame(columns=["above_rheobase_pa", "rate_hz", "label"])
    return fi[(fi.above_rheobase_pa >= -40) & (fi.above_rheobase_pa <= 120)], examples


def example_rasters(cells: pd.DataFrame, trains: pd.DataFrame) -> dict[str, tuple[int, list[np.ndarray]]]:
    """Per class, the first readable cell's spike trains (s from each epoch's onset), one row per repeat and epoch."""
    out = {}
    for label in CLASSES:
        ids = cells.loc[(cells.label == label) & (cells.qc_status == "ok"), "specimen_id"]
        if ids.empty:
            continue
        rows = trains[trains.specimen_id == ids.iloc[0]]
        out[label] = (int(ids.iloc[0]), [np.asarray(r.spike_times_s) - r.epoch_start_s for r in rows.itertuples()])
    return out


def protocol_versions(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per class (rows) and protocol version (columns)."""
    return pd.crosstab(cells.label, cells.protocol_version).reset_index()
