"""The dataset registry: ``fetch`` -> ``read`` -> ``label`` for every dataset name of DESIGN.md.

:func:`acquire` is what notebook 01 calls: it makes the raw files present (generating the demo
cohort, or fetching/reading the cache for the real datasets) and writes ``cells.csv`` plus the
sweep table (``sweeps.csv``) or the spike-train table (``spike_trains.parquet``).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .config import CLASSES, UNSURE, check_dataset, dataset_dir, logger, raw_dir
from .io import write_csv_atomic, write_sidecar
from .recordings import (ALLEN_API, STS_PAPER_URL, TEETER_URL, DataNotAvailableError, RemoteFile, ensure_files,
                         label_flags, label_from_cre_line, label_from_transcriptomic_type, read_paper_labels,
                         read_paper_split, scan_recordings, write_spike_trains)

# ------------------------------------------------------------------------------------------- demo

DEMO_METADATA = "demo_patchseq_metadata.csv"


def demo_nwb_relpath(specimen_id: int) -> str:
    """DANDI 000020 style path of a demo cell: ``sub-<id>/sub-<id>_ses-<id>_icephys.nwb``."""
    return f"sub-{specimen_id}/sub-{specimen_id}_ses-{specimen_id}_icephys.nwb"


def _simulate_and_write_batch(design: pd.DataFrame, seed: int, cache: str) -> list[dict]:
    from .nwb import DEMO_STIMULUS_CODES, write_nwb2_cell
    from .simulate import Protocol, simulate_cells

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

    Batches whose files all exist are not simulated again, so an interrupted generation resumes.
    The metadata table mimics the patch-seq metadata (``cell_specimen_id``, ``dendrite_type``,
    ``corresponding_AIT2.3.1_alias``) so labels go through the same rule as the real data:
    interneurons get a simulated transcriptomic alias, excitatory cells none and ``spiny``.
    """
    from .simulate import PARAMETER_NAMES, cohort_design

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    design = cohort_design(n_cells_per_class, seed)
    batches = [design.iloc[s:s + batch_size] for s in range(0, len(design), batch_size)]
    todo = [b for b in batches if not all((cache / demo_nwb_relpath(int(s))).is_file() for s in b.specimen_id)]
    logger.info("demo cohort: %d cells in %d batches, %d to simulate", len(design), len(batches), len(todo))
    results: list[dict] = []
    model_table = cache / "demo_model_parameters.csv"
    if model_table.exists():
        results = pd.read_csv(model_table)[["specimen_id", "model_rheobase_pa", "n_sweeps"]].to_dict("records")
    done_ids = {int(r["specimen_id"]) for r in results}
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, n_jobs)) as pool:
            futures = [pool.submit(_simulate_and_write_batch, b, seed, str(cache)) for b in todo]
            for fut in tqdm(futures, desc="simulating demo cells (batches)"):
                results.extend(r for r in fut.result() if r["specimen_id"] not in done_ids)
    res = pd.DataFrame(results).drop_duplicates("specimen_id")
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


def _acquire_demo(ddir: Path, n_cells: int, seed: int, max_cells: int | None, n_jobs: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
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


def patchseq_manifest() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patch-seq metadata and NWB file manifest that ipfx ships (2020-06-26 release)."""
    import ipfx

    base = Path(ipfx.__file__).parent / "data_release"
    meta = pd.read_csv(base / "20200625_patchseq_metadata_mouse.csv")
    manifest = pd.read_csv(base / "2020-06-26_mouse_file_manifest.csv")
    manifest = manifest[(manifest.technique == "intracellular_electrophysiology") & (manifest.file_type == "nwb")]
    manifest = manifest.dropna(subset=["cell_specimen_id"]).copy()
    manifest["cell_specimen_id"] = manifest["cell_specimen_id"].astype("int64")
    return meta, manifest


def patchseq_remote_files(manifest: pd.DataFrame) -> dict[int, RemoteFile]:
    out = {}
    for r in manifest.itertuples():
        subject = r.file_name.split("_")[0]
        rel = f"{subject}/{r.file_name}"
        out[int(r.cell_specimen_id)] = RemoteFile(relpath=rel, url=f"dandi://DANDI/{'000020'}/{rel}", sha256=r.sha256_checksum, dandi_path=rel)
    return out


def _acquire_patchseq(ddir: Path, seed: int, max_cells: int | None, n_jobs: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    meta, manifest = patchseq_manifest()
    cells = _patchseq_cells(meta)
    cells["source"] = "patchseq"
    cells["protocol_version"] = "patchseq"
    cells = cells[cells.specimen_id.isin(manifest.cell_specimen_id)]
    cells = stratified_subset(cells, max_cells, seed)
    remote = patchseq_remote_files(manifest)
    entries = [remote[int(s)] for s in cells.specimen_id]
    cache = ddir / "raw"
    ensure_files(entries, cache, "DANDI 000020 (patch-seq NWB 2)")
    files = {int(s): cache / remote[int(s)].relpath for s in cells.specimen_id}
    sweeps, qc = scan_recordings(files, "nwb2", cache, n_jobs=n_jobs)
    return cells, sweeps, {"qc": qc}


# ----------------------------------------------------------------------------------------- celltypes

CELLTYPES_QUERY = (f"{ALLEN_API}/api/v2/data/query.json?criteria=model::ApiCellTypesSpecimenDetail,"
                   "rma::criteria,[donor__species$eq'Mus musculus'],rma::options[num_rows$eqall]")


def celltypes_nwb_url(specimen_id: int) -> str:
    """Allen API query that returns the well-known NWB file of a specimen's ephys result."""
    return (f"{ALLEN_API}/api/v2/data/query.json?criteria=model::Specimen,rma::criteria,[id$eq{specimen_id}],"
            "ephys_result(well_known_files(well_known_file_type[name$eqNWBDownload]))")


def _celltypes_specimens(cache: Path) -> pd.DataFrame:
    ensure_files([RemoteFile("cell_types_specimen_details.json", CELLTYPES_QUERY)], cache, "Allen Cell Types specimen details")
    rows = json.loads((cache / "cell_types_specimen_details.json").read_text())
    rows = rows.get("msg", rows) if isinstance(rows, dict) else rows
    return pd.DataFrame(rows)


def _download_celltypes_nwb(specimen_id: int, cache: Path) -> None:
    """Resolve the NWB download link of a specimen through the API, then fetch it with pooch."""
    import pooch

    rel = f"specimen_{specimen_id}/ephys.nwb"
    if (cache / rel).is_file():
        return
    q = Path(pooch.retrieve(celltypes_nwb_url(specimen_id), known_hash=None, fname=f"specimen_{specimen_id}.json",
                            path=cache / "queries", progressbar=False))
    msg = json.loads(q.read_text())["msg"][0]
    link = msg["ephys_result"]["well_known_files"][0]["download_link"]
    ensure_files([RemoteFile(rel, ALLEN_API + link)], cache, f"Cell Types DB NWB of {specimen_id}")


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


def _acquire_celltypes(ddir: Path, seed: int, max_cells: int | None, n_jobs: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cache = ddir / "raw"
    cells = _celltypes_cells(_celltypes_specimens(cache))
    cells["source"] = "celltypes"
    cells["protocol_version"] = "celltypes"
    cells = stratified_subset(cells, max_cells, seed)
    for sid in tqdm(cells.specimen_id, desc="Cell Types DB NWB files"):
        _download_celltypes_nwb(int(sid), cache)
    files = {int(s): cache / f"specimen_{int(s)}/ephys.nwb" for s in cells.specimen_id}
    sweeps, qc = scan_recordings(files, "nwb1", cache, n_jobs=n_jobs)
    return cells, sweeps, {"qc": qc}


# ------------------------------------------------------------------------------------------- allen

def sts_paper_files(cache: Path, shared: Path | None = None) -> dict[str, Path]:
    """The STS paper's labels and split (downloaded from its pinned commit, or found in ``cache``)."""
    names = {"labels": "data/cell_types_GouwensAll_new.txt", "train": "data/Train_split.csv", "test": "data/Test_split.csv"}
    entries = [RemoteFile(rel, STS_PAPER_URL + rel) for rel in names.values()]
    paths = ensure_files(entries, cache / "sts_paper", "STS paper labels and split")
    return dict(zip(names, paths))


def _acquire_allen(ddir: Path, seed: int, max_cells: int | None, n_jobs: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cache = ddir / "raw"
    paper = sts_paper_files(cache)
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

TEETER_FEATURES = "GLIF_clustering/features_7_27_17.csv"
#: Noise 1 epochs (s) on the stated 20 kHz time base; the first epoch never evokes spikes here.
TEETER_EPOCHS_S = {1: (2.0, 5.0), 2: (10.0, 13.0), 3: (18.0, 21.0)}
TEETER_STRETCH = 1.25


def teeter_time_scale(spike_times_s: np.ndarray) -> float:
    """Detect the 1.25x stretched time base of newer teeter2018 sweeps from where the spikes fall.

    Spikes of a Noise 1 sweep lie in its 2nd and 3rd noise epochs. On the stated time base these
    are 10-13 s and 18-21 s; stretched sweeps have them at 12.5-16.25 s and 22.5-26.25 s. The
    sweep is stretched when more of its spikes fall into the stretched windows than into the
    stated ones. Returns 1.25 for a stretched sweep, 1.0 otherwise (also when it has no spikes).
    """
    t = np.asarray(spike_times_s, dtype=float)
    if t.size == 0:
        return 1.0
    in_stated = sum(((t >= a) & (t < b + 0.05)).sum() for a, b in (TEETER_EPOCHS_S[2], TEETER_EPOCHS_S[3]))
    in_stretched = sum(((t >= a * TEETER_STRETCH) & (t < b * TEETER_STRETCH + 0.05)).sum()
                       for a, b in (TEETER_EPOCHS_S[2], TEETER_EPOCHS_S[3]))
    return TEETER_STRETCH if in_stretched > in_stated else 1.0


def read_teeter_cell(path: Path, specimen_id: int) -> pd.DataFrame:
    """Spike-train rows (epochs 2 and 3 of every Noise 1 sweep with spikes) of one teeter2018 cell."""
    d = json.loads(Path(path).read_text())
    dt = float(d["dt_used_for_preprocessor_calculations"])
    rows = []
    for key, sw in sorted(d["sweep_properties"].get("noise1", {}).items(), key=lambda kv: int(kv[0])):
        if sw.get("spike_ind") is None:
            continue
        t = np.asarray(sw["spike_ind"], dtype=float) * dt
        scale = teeter_time_scale(t)
        t = t / scale
        for epoch in (2, 3):
            a, b = TEETER_EPOCHS_S[epoch]
            rows.append({"specimen_id": int(specimen_id), "sweep_number": int(sw["sweep_num"]), "stimulus_kind": "Noise 1",
                         "epoch": epoch, "epoch_start_s": a, "epoch_end_s": b,
                         "spike_times_s": t[(t >= a - 0.5) & (t < b + 0.5)], "time_scale": scale})
    return pd.DataFrame(rows)


def _acquire_teeter(ddir: Path, seed: int, max_cells: int | None, n_jobs: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cache = ddir / "raw"
    ensure_files([RemoteFile(TEETER_FEATURES, TEETER_URL + TEETER_FEATURES)], cache, "teeter2018 feature table")
    feats = pd.read_csv(cache / TEETER_FEATURES)
    labels = [label_from_cre_line(c) for c in feats["cre"]]
    cells = pd.DataFrame({"specimen_id": feats["specimen_ID"].astype("int64"), "label": [x for x, _ in labels],
                          "label_source": [s for _, s in labels], "cre_line": feats["cre"], "excitation": feats["excitation"]})
    cells["label_flags"] = ""
    cells["source"] = "teeter2018"
    cells = stratified_subset(cells, max_cells, seed)
    rel = {int(r.specimen_id): f"mouse_struc_data_dir/{r.specimen_id}_{r.cre_line}/{r.specimen_id}_{r.cre_line}_preprocessor_values.json"
           for r in cells.itertuples()}
    ensure_files([RemoteFile(p, TEETER_URL + p) for p in rel.values()], cache, "teeter2018 spike trains")
    frames, qc = [], []
    for sid, p in tqdm(sorted(rel.items()), desc="reading teeter2018 cells"):
        try:
            df = read_teeter_cell(cache / p, sid)
            status = "ok" if len(df) else "no Noise 1 sweep with spikes"
        except (OSError, ValueError, KeyError) as exc:
            df, status = pd.DataFrame(), f"unreadable: {type(exc).__name__}: {exc}"
        frames.append(df)
        qc.append({"specimen_id": sid, "qc_status": status, "n_sweeps": df["sweep_number"].nunique() if len(df) else 0})
    trains = pd.concat(frames, ignore_index=True)
    scale = trains.groupby("specimen_id")["time_scale"].max()
    cells["time_scale"] = cells.specimen_id.map(scale).fillna(1.0)
    cells["protocol_version"] = np.where(cells["time_scale"] > 1.0, "newer (25 kHz index)", "older (20 kHz index)")
    return cells, trains, {"qc": pd.DataFrame(qc), "spike_trains": True}


# -------------------------------------------------------------------------------------- common

def stratified_subset(cells: pd.DataFrame, max_cells: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_cells`` cells, sampled per label in proportion to its count (seeded).

    Every class present keeps at least one cell; ``None`` or 0 keeps all cells.
    """
    if not max_cells or max_cells >= len(cells):
        return cells.sort_values("specimen_id").reset_index(drop=True)
    if max_cells < 1:
        raise ValueError(f"max_cells must be positive, got {max_cells}")
    rng = np.random.default_rng(seed)
    counts = cells["label"].value_counts()
    quota = np.maximum(1, np.floor(counts / counts.sum() * max_cells)).astype(int)
    picked = []
    for label, q in quota.items():
        idx = cells.index[cells["label"] == label].to_numpy()
        picked.extend(rng.choice(idx, size=min(q, len(idx)), replace=False))
    return cells.loc[sorted(picked)].sort_values("specimen_id").reset_index(drop=True)


ACQUIRE = {"demo": _acquire_demo, "patchseq": _acquire_patchseq, "celltypes": _acquire_celltypes,
           "allen": _acquire_allen, "teeter2018": _acquire_teeter}


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
    dict with ``cells`` (DataFrame), ``sweeps`` (DataFrame), ``qc`` (per-file status), ``paths``.
    """
    check_dataset(dataset)
    ddir = dataset_dir(dataset, data_dir)
    ddir.mkdir(parents=True, exist_ok=True)
    if dataset == "demo":
        cells, table, extra = _acquire_demo(ddir, n_cells, seed, max_cells, n_jobs)
    else:
        cells, table, extra = ACQUIRE[dataset](ddir, seed, max_cells, n_jobs)
    qc = extra["qc"]
    status = qc.set_index("specimen_id")["qc_status"]
    cells["qc_status"] = cells.specimen_id.map(status).fillna("no recording")
    unknown = ~cells.label.isin([*CLASSES, UNSURE])
    if unknown.any():
        raise ValueError(f"unknown labels in cells table: {sorted(cells.label[unknown].unique())}")
    front = ["specimen_id", "label", "label_source", "source", "qc_status"]
    cells = cells[front + [c for c in cells.columns if c not in front]]
    paths = {"cells": write_csv_atomic(cells, ddir / "cells.csv")}
    if extra.get("spike_trains"):
        paths["spike_trains"] = write_spike_trains(table, ddir / "spike_trains.parquet")
    else:
        paths["sweeps"] = write_csv_atomic(table, ddir / "sweeps.csv")
    params = {"dataset": dataset, "max_cells": max_cells, "n_cells": n_cells}
    for name, p in paths.items():
        write_sidecar(p, params, seed=seed, stage="acquisition",
                      extra={"n_cells": int(len(cells)), "qc_counts": qc["qc_status"].value_counts().to_dict()})
    return {"cells": cells, "table": table, "qc": qc, "paths": paths}
