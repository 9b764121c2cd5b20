"""Recording files -> the sweep table, and one sweep back from it.

Stage I/O. NWB 2 (patch-seq, demo, other tools), NWB 1 (Allen Cell Types DB), Axon ABF and folders of
Igor waves (:mod:`sts_utils.data.rigs`) are scanned into one sweep table (:data:`sts_utils.data.tables.SWEEP_COLUMNS`, plus each file's SHA-256, so that every result
computed from a file can name the content it came from); :func:`load_sweep` reads one sweep back
lazily. A folder of recordings becomes cells with ids from the user's mapping or the files (:func:`find_recordings`,
:func:`scan_cells`: what ``make predict`` and a registered folder dataset read). teeter2018's spike-time files are read into spike-train rows (:func:`read_teeter_cell`),
with the 1.25x stretched time base of newer recordings detected and undone.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import ipfx.json_utilities as ju
import numpy as np
import pandas as pd
from ipfx.stimulus import StimulusOntology
from tqdm import tqdm

from sts_utils.core.config import logger, progress_stream
from sts_utils.core.errors import RecordingError, TableError
from sts_utils.core.io import file_sha256
from sts_utils.data.nwb import Sweep, load_nwb1_sweep, load_nwb2_sweep, read_nwb1_sweep_table, read_nwb2_sweep_table
from sts_utils.data.rigs import load_abf_sweep, load_ibw_sweep, rows_from_traces, scan_abf_file, scan_ibw_cell
from sts_utils.compute.steps import find_step_epoch
from sts_utils.data.tables import SWEEP_COLUMNS

#: one cell's recording in one file
RECORDING_SUFFIXES = (".nwb", ".abf")
#: one Igor wave per sweep and channel: a folder of them is one cell
IGOR_SUFFIX = ".ibw"

# ------------------------------------------------------------------------------------- sweep tables

_ONTOLOGY: StimulusOntology | None = None


def stimulus_kind_of_code(code: str) -> str:
    """Stimulus name of an ipfx stimulus code (``Long Square``, ``Noise 1``, ...), via ipfx's ontology."""
    global _ONTOLOGY
    if _ONTOLOGY is None:  # read once per process
        _ONTOLOGY = StimulusOntology(ju.read(StimulusOntology.DEFAULT_STIMULUS_ONTOLOGY_FILE))
    try:
        return _ONTOLOGY.find_one(code, tag_type="code").tags(tag_type="name")[0][-1]
    except (KeyError, IndexError, ValueError):
        return "unknown"


def scan_nwb2_file(path: Path, specimen_id: int, relative_to: Path) -> pd.DataFrame:
    """Sweep-table rows of one NWB 2 file (all current-clamp sweeps, step timing from the stimulus).

    Files whose stimulus codes ipfx's ontology knows (DANDI 000020, patch-seq, demo) take their
    stimulus kinds from the codes. Files written by other tools (no known code) are read like any
    rig's recording (:func:`sts_utils.data.rigs.rows_from_traces`): the step comes from the stimulus
    series itself, which may be a measured, noisy current, and implausible sweeps are counted skips.
    """
    table = read_nwb2_sweep_table(path)
    kinds = [stimulus_kind_of_code(c) for c in table["stimulus_code"]]
    if len(table) and all(k.lower() == "unknown" for k in kinds):
        sweeps = []
        for r in table.itertuples(index=False):
            sw = load_nwb2_sweep(path, r.response_path, r.stimulus_path)
            sweeps.append({"sweep_number": r.sweep_number, "stimulus_code": r.stimulus_code, "v_mv": sw.v_mv,
                           "i_pa": sw.i_pa, "sampling_rate_hz": sw.sampling_rate_hz, "response_path": r.response_path,
                           "stimulus_path": r.stimulus_path})
        return rows_from_traces(specimen_id, sweeps, "nwb2", str(path.relative_to(relative_to)))
    rows = []
    for r, kind in zip(table.itertuples(index=False), kinds):
        start = end = amp = np.nan
        qc = "ok"
        if r.n_samples < getattr(r, "n_samples_stimulus", r.n_samples):
            qc = "truncated"  # the recording stopped before the stimulus did
        if kind == "Long Square":
            sw = load_nwb2_sweep(path, r.response_path, r.stimulus_path)
            start, end, amp = find_step_epoch(sw.i_pa, sw.sampling_rate_hz)
            if not np.isfinite(start):
                qc = "no step found"
        elif kind == "unknown":
            qc = "unknown stimulus code"
        rows.append({
            "specimen_id": int(specimen_id), "sweep_number": int(r.sweep_number), "stimulus_kind": kind,
            "stimulus_code": r.stimulus_code, "amplitude_pa": amp, "sampling_rate_hz": r.sampling_rate_hz,
            "stim_start_s": start, "stim_end_s": end, "sweep_qc": qc, "format": "nwb2",
            "file": str(path.relative_to(relative_to)), "response_path": r.response_path, "stimulus_path": r.stimulus_path,
        })
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def scan_nwb1_file(path: Path, specimen_id: int, relative_to: Path) -> pd.DataFrame:
    """Sweep-table rows of one Allen NWB 1 file."""
    table = read_nwb1_sweep_table(path)
    rows = []
    for r in table.itertuples(index=False):
        start = end = np.nan
        amp = r.amplitude_pa
        if r.stimulus_name == "Long Square":
            sw = load_nwb1_sweep(path, r.sweep_number)
            start, end, amp_measured = find_step_epoch(sw.i_pa, sw.sampling_rate_hz)
            amp = amp if np.isfinite(amp) else amp_measured
        rows.append({
            "specimen_id": int(specimen_id), "sweep_number": int(r.sweep_number), "stimulus_kind": r.stimulus_name,
            "stimulus_code": r.stimulus_name, "amplitude_pa": amp, "sampling_rate_hz": r.sampling_rate_hz,
            "stim_start_s": start, "stim_end_s": end,
            "sweep_qc": "ok" if r.stimulus_name != "Long Square" or np.isfinite(start) else "no step found", "format": "nwb1",
            "file": str(path.relative_to(relative_to)), "response_path": "", "stimulus_path": "",
        })
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def scan_recordings(files: dict[int, Path], fmt: str, root: Path, n_jobs: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan many files into one sweep table; unreadable files are skipped and reported.

    Returns
    -------
    sweeps : the sweep table of every readable file
    qc : one row per file: specimen_id, qc_status (``ok`` or the reason it was skipped), n_sweeps
    """
    scan = SCANNERS[fmt]
    tables, qc = [], []
    items = sorted(files.items())
    with ProcessPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        futures = [(sid, pool.submit(_safe_scan, scan, path, sid, root)) for sid, path in items]
        for sid, fut in tqdm(futures, desc=f"reading {fmt} files", file=progress_stream()):
            table, status = fut.result()
            if table is not None:
                tables.append(table)
            qc.append({"specimen_id": sid, "qc_status": status, "n_sweeps": 0 if table is None else len(table)})
    sweeps = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SWEEP_COLUMNS + ["file_sha256"])
    qc_df = pd.DataFrame(qc, columns=["specimen_id", "qc_status", "n_sweeps"])
    bad = qc_df[qc_df.qc_status != "ok"]
    if len(bad):
        logger.warning("skipped %d of %d files: %s", len(bad), len(qc_df), bad.qc_status.value_counts().to_dict())
    return sweeps, qc_df


#: sweep-table ``format`` -> the function that scans one cell's recording (a file, or an Igor folder)
SCANNERS = {"nwb2": scan_nwb2_file, "nwb1": scan_nwb1_file, "abf": scan_abf_file, "ibw": scan_ibw_cell}


def _safe_scan(scan, path: Path, sid: int, root: Path):
    try:
        table = scan(path, sid, root)
    except (RecordingError, OSError, KeyError, ValueError) as exc:
        return None, f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"
    if table.empty:
        return table, "no current-clamp sweeps"
    # the content the cell's results come from (the file is in the page cache after the scan)
    return table.assign(file_sha256=file_sha256(path)), "ok"


def recording_format(path: str | os.PathLike) -> str:
    """``abf`` (an ``.abf`` file), ``ibw`` (a folder of Igor waves), else ``nwb2`` or ``nwb1`` from the HDF5 layout.

    Raises
    ------
    RecordingError
        Not an HDF5 file, or neither layout.
    """
    path = Path(path)
    if path.is_dir():
        return "ibw"
    if path.suffix.lower() == ".abf":
        return "abf"
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: not an HDF5/NWB file ({str(exc).splitlines()[0][:120]}); the file is truncated "
                             "or damaged: copy or export it again") from exc
    with f:
        if "epochs" in f and "acquisition" in f and "timeseries" in f["acquisition"]:
            return "nwb1"
        if "acquisition" in f:
            return "nwb2"
    raise RecordingError(f"{path}: HDF5 file with neither an NWB 2 'acquisition' group nor the Allen NWB 1 layout")


def id_from_name(path: Path) -> int | None:
    """The specimen id a DANDI-style name states (``sub-<id>``); None otherwise.

    Other digits in a name (a year, a cell's number in a series) are not ids: such cells get ids
    from the user's mapping (``--cells``) or 1, 2, ... in file order.
    """
    m = re.search(r"sub-(\d+)", path.name)
    return int(m.group(1)) if m else None


def read_cell_mapping(path: str | os.PathLike) -> dict[str, int]:
    """A user's file -> cell mapping: CSV with ``file`` (path relative to the input folder) and ``specimen_id`` (integer).

    Raises
    ------
    TableError
        Missing columns or an id that is not an integer (one line naming the file and the fix).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: cannot be read as a CSV table ({type(exc).__name__})") from exc
    missing = [c for c in ("file", "specimen_id") if c not in df.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {', '.join(missing)}; a cell mapping needs file (relative to "
                         "the input folder; a folder for Igor waves) and specimen_id (an integer)")
    ids = pd.to_numeric(df["specimen_id"], errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        k = int(np.flatnonzero(bad.to_numpy())[0])
        raise TableError(f"{path}: line {k + 2}: specimen_id {df['specimen_id'].iloc[k]!r} is not an integer")
    return {str(Path(f)): int(i) for f, i in zip(df["file"], ids)}


def assign_ids(wanted: list[int | None]) -> list[int]:
    """``wanted`` ids where given and unique; the others get 1, 2, ... (skipping the ids in use)."""
    seen, out = set(), []
    taken = {w for w in wanted if w is not None}
    nxt = 1
    for w in wanted:
        if w is None or w in seen:
            while nxt in taken or nxt in seen:
                nxt += 1
            w = nxt
        seen.add(w)
        out.append(w)
    return out


def find_recordings(folder: str | os.PathLike) -> list[Path]:
    """Every cell's recording below ``folder``, sorted: ``.nwb`` and ``.abf`` files, and folders of ``.ibw`` waves."""
    files = [p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")]
    recs = [p for p in files if p.suffix.lower() in RECORDING_SUFFIXES]
    recs += sorted({p.parent for p in files if p.suffix.lower() == IGOR_SUFFIX})  # a cell's Igor waves share a folder
    return sorted(recs)


def scan_cells(files: list[Path], root: Path, n_jobs: int = 1, mapping: dict[str, int] | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One cell per recording (a file, or a folder of Igor waves) of any format, scanned into the sweep table.

    ``mapping`` (:func:`read_cell_mapping`: path relative to ``root`` -> id) gives cells their ids; otherwise a
    ``sub-<id>`` name (:func:`id_from_name`), else 1, 2, ... in file order (:func:`assign_ids`).

    Returns
    -------
    cells
        ``specimen_id``, ``cell`` (path relative to ``root``), ``source`` (the path), ``format`` (empty when unknown).
    sweeps
        The sweep table of every readable recording (``file`` relative to ``root``).
    qc
        One row per cell: ``specimen_id``, ``qc_status`` (``ok`` or why it was skipped), ``n_sweeps``.
    """
    mapping = mapping or {}
    ids = assign_ids([mapping.get(str(p.relative_to(root)), id_from_name(p)) for p in files])
    cells = pd.DataFrame({"specimen_id": pd.Series(ids, dtype="int64"), "cell": [str(p.relative_to(root)) for p in files],
                          "source": [str(p) for p in files], "format": ""})
    by_format: dict[str, dict[int, Path]] = {fmt: {} for fmt in SCANNERS}
    qc = []
    for k, (sid, p) in enumerate(zip(ids, files)):
        try:
            fmt = recording_format(p)
        except RecordingError as exc:
            qc.append({"specimen_id": sid, "qc_status": f"unreadable: {exc}", "n_sweeps": 0})
            continue
        by_format[fmt][sid] = p
        cells.loc[k, "format"] = fmt
    tables = []
    for fmt, group in by_format.items():
        if group:
            sweeps, scanned = scan_recordings(group, fmt, root, n_jobs=n_jobs)
            tables.append(sweeps)
            qc.extend(scanned.to_dict("records"))
    tables = [t for t in tables if len(t)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return cells, table, pd.DataFrame(qc, columns=["specimen_id", "qc_status", "n_sweeps"])


def load_sweep(row: pd.Series | dict, root: str | os.PathLike) -> Sweep:
    """Lazy access to one sweep of the sweep table (``root`` = the dataset's ``raw/`` folder)."""
    row = dict(row)
    path = Path(root) / row["file"]
    if row["format"] == "nwb2":
        return load_nwb2_sweep(path, row["response_path"], row["stimulus_path"])
    if row["format"] == "nwb1":
        return load_nwb1_sweep(path, int(row["sweep_number"]))
    if row["format"] == "abf":
        return load_abf_sweep(path, int(row["sweep_number"]), row["response_path"], row["stimulus_path"])
    if row["format"] == "ibw":
        return load_ibw_sweep(path, row["response_path"], row["stimulus_path"])
    raise ValueError(f"sweep format {row['format']!r} has no voltage trace; use the spike-train table")


# --------------------------------------------------------------------------------------- teeter2018

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
