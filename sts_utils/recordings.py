"""Acquisition stage: dataset registry, cached downloads, sweep tables and labels.

Each dataset (``demo``, ``teeter2018``, ``patchseq``, ``celltypes``, ``allen``) has three steps, as
in MNE's dataset fetchers:

``fetch``
    make the raw files present under ``$STS_DATA_DIR/<dataset>/raw/`` (mirroring the origin's
    relative paths), downloading what is missing through :mod:`pooch` (Allen API, GitHub) or the
    ``dandi`` client (DANDI 000020). A file already there is used as is (offline use: copy the
    files there by hand). Hashes come from the origin where it publishes them (the patch-seq
    manifest's sha256) and otherwise are recorded on first download in ``raw/hashes.lock.json``
    and verified on later runs. Nothing partial is ever left in the cache.
``read``
    one sweep table for every source (:data:`SWEEP_COLUMNS`) and lazy access to ``t, v, i`` or to
    spike times (:func:`load_sweep`).
``label``
    the four classes with ``label_source`` per cell (:func:`label_from_transcriptomic_type`,
    :func:`label_from_cre_line`).

The stage writes ``cells.csv`` (specimen_id, label, label_source, source, qc_status, ...) and
``sweeps.csv`` (or ``spike_trains.parquet`` for spike-time-only data).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .config import CLASSES, UNSURE, logger, offline, raw_dir
from .io import file_sha256, write_csv_atomic, write_text_atomic
from .nwb import (DEMO_STIMULUS_CODES, RecordingError, Sweep, load_nwb1_sweep, load_nwb2_sweep,
                  read_nwb1_sweep_table, read_nwb2_sweep_table, write_nwb2_cell)

SWEEP_COLUMNS = [
    "specimen_id", "sweep_number", "stimulus_kind", "stimulus_code", "amplitude_pa", "sampling_rate_hz",
    "stim_start_s", "stim_end_s", "sweep_qc", "format", "file", "response_path", "stimulus_path",
]
CELL_COLUMNS = ["specimen_id", "label", "label_source", "source", "qc_status"]

TEETER_COMMIT = "dcb232354b1a5c3e348d163cb479ae2ee10c564d"
TEETER_URL = f"https://raw.githubusercontent.com/AllenInstitute/GLIF_Teeter_et_al_2018/{TEETER_COMMIT}/"
STS_PAPER_COMMIT = "294842c0b2409acb0f765c0eb9c30849000fd27b"
STS_PAPER_URL = f"https://raw.githubusercontent.com/smilies-polito/spike-train-scalograms/{STS_PAPER_COMMIT}/"
ALLEN_API = "https://api.brain-map.org"
DANDISET = "000020"


class DataNotAvailableError(FileNotFoundError):
    """Raw files are missing from the cache and cannot be downloaded (offline or origin down)."""


# ----------------------------------------------------------------------------------------- fetching

@dataclass
class RemoteFile:
    """A file of a dataset: its path under ``raw/`` and where it comes from."""

    relpath: str
    url: str
    sha256: str | None = None
    dandi_path: str | None = None  # set for DANDI assets (downloaded with the dandi client)


def _lock_path(cache: Path) -> Path:
    return cache / "hashes.lock.json"


def _read_lock(cache: Path) -> dict[str, str]:
    p = _lock_path(cache)
    return json.loads(p.read_text()) if p.exists() else {}


def _download(entry: RemoteFile, cache: Path) -> Path:
    """Download one file into the cache atomically (pooch or dandi), verifying its hash."""
    target = cache / entry.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.dandi_path is not None:
        from dandi.dandiapi import DandiAPIClient

        from .io import atomic_path

        with DandiAPIClient() as client:
            asset = client.get_dandiset(DANDISET, "draft").get_asset_by_path(entry.dandi_path)
            with atomic_path(target) as tmp:
                tmp.unlink()
                asset.download(tmp)
                if entry.sha256 and file_sha256(tmp) != entry.sha256:
                    raise OSError(f"sha256 mismatch for {entry.dandi_path}")
        return target
    import pooch

    known = f"sha256:{entry.sha256}" if entry.sha256 else None
    path = pooch.retrieve(entry.url, known_hash=known, fname=target.name, path=target.parent,
                          downloader=pooch.HTTPDownloader(progressbar=False, timeout=60), progressbar=False)
    return Path(path)


def ensure_files(entries: list[RemoteFile], cache: Path, what: str) -> list[Path]:
    """Make every entry present in ``cache``; download what is missing, verify what has a hash.

    Raises
    ------
    DataNotAvailableError
        When files are missing and cannot be downloaded; the message names the files, the cache
        folder, and where to get them.
    """
    cache = Path(cache)
    lock = _read_lock(cache)
    missing = [e for e in entries if not (cache / e.relpath).is_file()]
    # verify files that are present against the origin's hash or the lock file; a file already
    # verified with the same size and modification time is not hashed again (patch-seq is 122 GB)
    verified_path = cache / "verified.json"
    verified = json.loads(verified_path.read_text()) if verified_path.exists() else {}
    n_verified = len(verified)
    for e in entries:
        p = cache / e.relpath
        expected = e.sha256 or lock.get(e.relpath)
        if not (p.is_file() and expected):
            continue
        stamp = [p.stat().st_size, p.stat().st_mtime_ns, expected]
        if verified.get(e.relpath) == stamp:
            continue
        if file_sha256(p) != expected:
            raise DataNotAvailableError(f"{p} does not match its recorded sha256 {expected}; delete it to download it again")
        verified[e.relpath] = stamp
    if len(verified) != n_verified:
        write_text_atomic(verified_path, json.dumps(verified, indent=1, sort_keys=True))
    if missing:
        logger.info("%s: %d of %d files missing from %s", what, len(missing), len(entries), cache)
        if offline():
            raise DataNotAvailableError(_missing_message(missing, cache, what, "STS_OFFLINE is set"))
        for e in tqdm(missing, desc=f"downloading {what}"):
            for attempt in range(3):
                try:
                    _download(e, cache)
                    break
                except Exception as exc:  # network errors of requests/urllib/dandi
                    last = exc
                    logger.warning("download of %s failed (attempt %d): %s", e.url, attempt + 1, exc)
            else:
                raise DataNotAvailableError(_missing_message([m for m in missing if not (cache / m.relpath).is_file()],
                                                             cache, what, f"download failed: {last}")) from last
            if not e.sha256:
                lock[e.relpath] = file_sha256(cache / e.relpath)
        write_text_atomic(_lock_path(cache), json.dumps(lock, indent=1, sort_keys=True))
    return [cache / e.relpath for e in entries]


def _missing_message(missing: list[RemoteFile], cache: Path, what: str, reason: str) -> str:
    shown = "\n".join(f"  {cache / e.relpath}  <-  {e.url}" for e in missing[:10])
    more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
    return (f"{len(missing)} file(s) of {what} are not in the cache folder {cache} and cannot be downloaded "
            f"({reason}):\n{shown}{more}\nEither run with internet access, or copy the files to those paths "
            f"(the folder mirrors the origin's relative paths), or set STS_DATA_DIR to a folder that holds them.")


# ------------------------------------------------------------------------------------------- labels

#: Transcriptomic subclass (first word of the t-type alias) -> class.
TTYPE_SUBCLASS_TO_CLASS = {"Pvalb": "Pvalb", "Sst": "Sst", "Vip": "Vip/Lamp5", "Lamp5": "Vip/Lamp5",
                           "Sncg": "Vip/Lamp5", "Serpinf1": "Vip/Lamp5", "Meis2": "Vip/Lamp5"}

#: Cre line -> class, for the Cell Types DB and teeter2018 (see shared/data/README.md).
CRE_TO_CLASS = {
    "Pvalb-IRES-Cre": "Pvalb", "Sst-IRES-Cre": "Sst", "Chrna2-Cre_OE25": "Sst",
    "Vip-IRES-Cre": "Vip/Lamp5", "Ndnf-IRES2-dgCre": "Vip/Lamp5", "Chat-IRES-Cre-neo": "Vip/Lamp5",
    "Htr3a-Cre_NO152": UNSURE, "Nkx2-1-CreERT2": UNSURE,
}
EXCITATORY_CRE_PREFIXES = ("Cux2", "Rorb", "Scnn1a", "Nr5a1", "Rbp4", "Ntsr1", "Ctgf", "Emx1", "Slc17a6",
                           "Slc17a7", "Tlx3", "Sim1", "Fezf2", "Glt25d2", "Oxtr", "Esr2", "Penk", "Rasgrf2",
                           "Nos1", "Gng7", "Syt6", "Efr3a", "Tac2")


def label_from_transcriptomic_type(alias: str | float | None, dendrite_type: str | float | None) -> tuple[str, str]:
    """Class and label source of a patch-seq cell.

    Transcriptomic subclass first (Pvalb, Sst, Vip/Lamp5 family); cells without a type fall back
    to morphology: spiny -> Excitatory, otherwise Unsure.
    """
    if isinstance(alias, str) and alias.strip():
        subclass = alias.split()[0]
        if subclass in TTYPE_SUBCLASS_TO_CLASS:
            return TTYPE_SUBCLASS_TO_CLASS[subclass], "transcriptomic"
        return UNSURE, "transcriptomic (unmapped subclass)"
    if isinstance(dendrite_type, str) and dendrite_type.strip().lower() == "spiny":
        return "Excitatory", "dendrite_type"
    return UNSURE, "no type"


def label_from_cre_line(cre: str | float | None, dendrite_type: str | float | None = None) -> tuple[str, str]:
    """Class and label source of a Cell Types DB / teeter2018 cell from its Cre line."""
    if not isinstance(cre, str) or not cre:
        return UNSURE, "no cre line"
    if cre in CRE_TO_CLASS:
        return CRE_TO_CLASS[cre], "cre_line"
    if cre.startswith(EXCITATORY_CRE_PREFIXES):
        return "Excitatory", "cre_line"
    return UNSURE, "cre_line (unmapped)"


def label_flags(label: str, label_source: str, dendrite_type: str | float | None = None,
                reporter_status: str | float | None = None) -> str:
    """Semicolon-separated flags for labels that disagree with other evidence (empty when none).

    - ``cre_vs_dendrite``: a Cre-line interneuron label on a spiny cell, or Excitatory on an aspiny cell
    - ``reporter_negative``: the Cre reporter was negative, so the Cre line says little about the cell
    - ``excitatory_from_dendrite``: a patch-seq Excitatory label inferred from morphology, not transcriptome
    """
    flags = []
    dt = dendrite_type.strip().lower() if isinstance(dendrite_type, str) else ""
    if label_source == "cre_line" and dt:
        if label == "Excitatory" and dt == "aspiny":
            flags.append("cre_vs_dendrite")
        if label in ("Pvalb", "Sst", "Vip/Lamp5") and dt == "spiny":
            flags.append("cre_vs_dendrite")
    if isinstance(reporter_status, str) and "negative" in reporter_status.lower():
        flags.append("reporter_negative")
    if label_source == "dendrite_type" and label == "Excitatory":
        flags.append("excitatory_from_dendrite")
    return ";".join(flags)


def read_paper_labels(path: str | os.PathLike) -> pd.DataFrame:
    """The STS paper's label file: ``<Label> <specimen_id>`` lines -> specimen_id, label."""
    rows = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{line_no}: expected '<Label> <specimen_id>', got {line!r}")
        label, sid = parts
        if label not in (*CLASSES, UNSURE):
            raise ValueError(f"{path}:{line_no}: unknown class {label!r}")
        rows.append((int(sid), label))
    return pd.DataFrame(rows, columns=["specimen_id", "label"])


def read_paper_split(train_path: str | os.PathLike, test_path: str | os.PathLike) -> pd.DataFrame:
    """The STS paper's split files (``specimen_id, Clamp|Seq`` lines) -> specimen_id, split, source."""
    frames = []
    for split, p in (("train", train_path), ("test", test_path)):
        df = pd.read_csv(p, header=None, names=["specimen_id", "source"], skipinitialspace=True)
        df["split"] = split
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["source"] = out["source"].str.strip().map({"Clamp": "celltypes", "Seq": "patchseq"})
    dup = out["specimen_id"].duplicated(keep=False)
    if dup.any():
        raise ValueError(f"{int(dup.sum())} specimen ids appear in both split files")
    return out


# ------------------------------------------------------------------------------------- sweep tables

def find_step_epoch(i_pa: np.ndarray, sampling_rate_hz: float, min_duration_s: float = 0.1) -> tuple[float, float, float]:
    """Onset (s), offset (s) and amplitude (pA) of the longest constant non-zero step in a stimulus.

    Short test pulses before the step are ignored by taking the longest run. Returns NaNs for a
    stimulus without such a step.
    """
    i = np.asarray(i_pa, dtype=float)
    if i.size == 0 or not np.isfinite(i).all():
        return np.nan, np.nan, np.nan
    active = np.abs(i) > 0.5  # pA
    if not active.any():
        return np.nan, np.nan, 0.0
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    k = int(np.argmax(ends - starts))
    start, end = starts[k], ends[k]
    if (end - start) / sampling_rate_hz < min_duration_s:
        return np.nan, np.nan, np.nan
    # rounded to 0.01 pA: stored currents are quantised, and float noise would split equal steps
    return start / sampling_rate_hz, end / sampling_rate_hz, round(float(np.median(i[start:end])), 2)


_ONTOLOGY = None


def stimulus_kind_of_code(code: str) -> str:
    """Stimulus name of an ipfx stimulus code (``Long Square``, ``Noise 1``, ...), via ipfx's ontology."""
    global _ONTOLOGY
    if _ONTOLOGY is None:
        import ipfx.json_utilities as ju
        from ipfx.stimulus import StimulusOntology

        _ONTOLOGY = StimulusOntology(ju.read(StimulusOntology.DEFAULT_STIMULUS_ONTOLOGY_FILE))
    try:
        return _ONTOLOGY.find_one(code, tag_type="code").tags(tag_type="name")[0][-1]
    except (KeyError, IndexError, ValueError):
        return "unknown"


def scan_nwb2_file(path: Path, specimen_id: int, relative_to: Path) -> pd.DataFrame:
    """Sweep-table rows of one NWB 2 file (all current-clamp sweeps, step timing from the stimulus)."""
    table = read_nwb2_sweep_table(path)
    rows = []
    for r in table.itertuples(index=False):
        kind = stimulus_kind_of_code(r.stimulus_code)
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
    scan = scan_nwb2_file if fmt == "nwb2" else scan_nwb1_file
    tables, qc = [], []
    items = sorted(files.items())
    with ProcessPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        futures = [(sid, pool.submit(_safe_scan, scan, path, sid, root)) for sid, path in items]
        for sid, fut in tqdm(futures, desc=f"reading {fmt} files"):
            table, status = fut.result()
            if table is not None:
                tables.append(table)
            qc.append({"specimen_id": sid, "qc_status": status, "n_sweeps": 0 if table is None else len(table)})
    sweeps = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SWEEP_COLUMNS)
    qc_df = pd.DataFrame(qc, columns=["specimen_id", "qc_status", "n_sweeps"])
    bad = qc_df[qc_df.qc_status != "ok"]
    if len(bad):
        logger.warning("skipped %d of %d files: %s", len(bad), len(qc_df), bad.qc_status.value_counts().to_dict())
    return sweeps, qc_df


def _safe_scan(scan, path: Path, sid: int, root: Path):
    try:
        table = scan(path, sid, root)
    except (RecordingError, OSError, KeyError, ValueError) as exc:
        return None, f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"
    if table.empty:
        return table, "no current-clamp sweeps"
    return table, "ok"


def load_sweep(row: pd.Series | dict, root: str | os.PathLike) -> Sweep:
    """Lazy access to one sweep of the sweep table (``root`` = the dataset's ``raw/`` folder)."""
    row = dict(row)
    path = Path(root) / row["file"]
    if row["format"] == "nwb2":
        return load_nwb2_sweep(path, row["response_path"], row["stimulus_path"])
    if row["format"] == "nwb1":
        return load_nwb1_sweep(path, int(row["sweep_number"]))
    raise ValueError(f"sweep format {row['format']!r} has no voltage trace; use the spike-train table")


# ----------------------------------------------------------------------------------- spike trains

SPIKE_TRAIN_COLUMNS = ["specimen_id", "sweep_number", "stimulus_kind", "epoch", "epoch_start_s", "epoch_end_s",
                       "spike_times_s", "time_scale"]


def write_spike_trains(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the documented spike-train table (Parquet, one row per sweep epoch).

    Columns: ``specimen_id`` (int), ``sweep_number`` (int), ``stimulus_kind`` (str), ``epoch`` (int),
    ``epoch_start_s``/``epoch_end_s`` (float, the stimulus epoch on the sweep's corrected time axis),
    ``spike_times_s`` (list of float, on the same axis), ``time_scale`` (float: the factor already
    applied to the stored times, 1.0 when none).
    """
    from .io import atomic_path

    missing = set(SPIKE_TRAIN_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"spike-train table lacks columns {sorted(missing)}")
    with atomic_path(path) as tmp:
        df[SPIKE_TRAIN_COLUMNS].to_parquet(tmp, index=False)
    return Path(path)


def read_spike_trains(path: str | os.PathLike) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df["spike_times_s"] = df["spike_times_s"].map(lambda x: np.asarray(x, dtype=float))
    return df
