"""Classify new cells with exported model bundles (:mod:`sts_utils.stages.bundle`).

Stage. A cell that no model saw goes through exactly what a training cell went through: the same
sweep choice and signals (:func:`sts_utils.stages.scalograms.cell_signals`), the same transform
(:func:`sts_utils.compute.cwt.scalogram_image`) with the bundle's parameters, analysed window and frequency
axis, and the store's float16 rounding. Every bundle then gives class probabilities; the ensemble
is their mean.

Accepted input (``--input``)
    * a recording of one cell: an NWB 2 file (``.nwb`` with an ``acquisition`` group: DANDI 000020 /
      patch-seq layout, or written by another tool with ``CurrentClampSeries`` and their stimulus
      series), an Allen Cell Types NWB 1 file (``epochs`` and ``acquisition/timeseries``), an Axon
      ``.abf`` file, or a folder of Igor ``.ibw`` waves (one sweep and channel each,
      ``<protocol>_ch<k>_<n>.ibw``). Channels are told apart by their units; the step of each sweep
      comes from its command or stimulus waveform (:mod:`sts_utils.data.rigs`). A cell's id comes from
      ``--cells`` (CSV: ``file``, ``specimen_id``) or a ``sub-<id>`` name, else 1, 2, ... in file
      order; ``cell`` is the file's (or folder's) path.
    * a folder: every recording below it; a folder without recordings: every ``*.csv`` / ``*.parquet``
      below it, read as spike tables.
    * a spike table (``.csv`` or ``.parquet``), for bundles trained on spike trains (teeter2018).
      Columns: ``specimen_id`` (or ``cell_id``, any text), ``sweep_number`` (or ``repeat``), ``epoch``
      (2 and 3: the Noise 1 epochs the models were trained on), ``spike_times_s`` (s, on the sweep's
      time axis, as ``epoch_start_s``); optional ``epoch_start_s`` / ``epoch_end_s`` (s; default
      teeter2018's epochs, 10–13 s and 18–21 s), ``time_scale`` (default 1), ``stimulus_kind``.
      ``spike_times_s`` may be one spike per row (a number; an empty cell = an epoch without spikes)
      or a list per row (a Parquet list, or text such as ``"[10.1, 10.7]"`` or ``"10.1 10.7"``).

Output (``--out``; written to a temporary folder beside it and renamed into place, so nothing is
half-written): ``predictions.csv`` (one row per cell: every model's ``<backbone>_p_<class>``, the
ensemble's ``ensemble_p_<class>``, ``ensemble_class`` and ``ensemble_probability``, the sweeps used with their
amplitudes and step windows (``stim_start_ch<k>_s``/``stim_end_ch<k>_s``), the rheobase and how the
protocol's grid bounds it (``rheobase_note``), the sweeps' QC counts (``sweep_qc``), ``status`` and ``reason``), ``skipped.csv`` (the cells and files that could not be used, with the
reason), ``run.json`` (bundles, their hashes, the setting, the input) and, with ``figures``,
``figures/<specimen_id>.png`` per cell.

Command line::

    python -m sts_utils.stages.predict --models B1 [B2 ...] --input FILE_OR_FOLDER --out FOLDER [--figures]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm import tqdm

from sts_utils.stages.bundle import BundleError, check_compatible, load_bundle, read_card, replace_dir
from sts_utils.core.config import CLASS_COLORS, CLASSES, logger, progress_stream
from sts_utils.compute.cwt import scalogram_image
from sts_utils.core.errors import MissingArtifactError, PredictError, RecordingError, SelectionError, TableError
from sts_utils.core.io import package_versions, write_csv_atomic, write_text_atomic
from sts_utils.data.models import get_device
# recording_format: the input's format, part of this module's interface (a new user's first check)
from sts_utils.data.recordings import TEETER_EPOCHS_S, assign_ids, find_recordings, read_cell_mapping, recording_format, scan_cells  # noqa: F401
from sts_utils.stages.saliency import attribute, paper_style_map
from sts_utils.stages.scalograms import ScalogramParams, analysis_window_s, cell_signals
from sts_utils.stages.fit import predict_proba

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: spike-table columns and the other names accepted for them
SPIKE_TABLE_COLUMNS = {"specimen_id": ("specimen_id", "cell_id"), "sweep_number": ("sweep_number", "repeat"),
                       "epoch": ("epoch",), "spike_times_s": ("spike_times_s",)}
#: what the selection tells about a cell, kept in predictions.csv
META_COLUMNS = ("sweep_ch0", "sweep_ch1", "amplitude_ch0_pa", "amplitude_ch1_pa", "stim_start_ch0_s", "stim_end_ch0_s",
                "stim_start_ch1_s", "stim_end_ch1_s", "rheobase_pa", "rheobase_note", "n_repeats", "time_scale")
#: what predictions.csv says of each cell's step windows, rheobase bracket and sweep QC (notebook 09's table leaves them out)
STEP_COLUMNS = ("stim_start_ch0_s", "stim_end_ch0_s", "stim_start_ch1_s", "stim_end_ch1_s", "rheobase_note", "sweep_qc")
WINDOW_TOLERANCE = 0.01  # relative difference of the input's median step (or epoch) from the training window



# ------------------------------------------------------------------------------------------ input

@dataclass
class NewCells:
    """Cells read from an input, before their scalograms.

    Attributes
    ----------
    kind
        ``sweeps`` (voltage recordings: :data:`sts_utils.data.tables.SWEEP_COLUMNS` rows) or ``spike_trains``
        (:data:`sts_utils.data.tables.SPIKE_TRAIN_COLUMNS` rows).
    table
        Every usable cell's rows, integer ``specimen_id``.
    root
        Folder the sweep rows' ``file`` paths are relative to.
    cells
        One row per cell found: ``specimen_id``, ``cell`` (file path or the table's cell id), ``source``.
    skipped
        Cells or files that could not be read: ``specimen_id`` (may be empty), ``cell``, ``source``, ``reason``.
    """

    kind: str
    table: pd.DataFrame
    root: Path
    cells: pd.DataFrame
    skipped: pd.DataFrame


SKIPPED_COLUMNS = ["specimen_id", "cell", "source", "reason"]


def _input_files(path: Path) -> tuple[str, list[Path], Path]:
    """(``recordings`` or ``tables``, the files, their root folder)."""
    if not path.exists():
        raise PredictError(f"{path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            return "tables", [path], path.parent
        return "recordings", [path], path.parent
    recs = find_recordings(path)
    if recs:
        return "recordings", recs, path
    tables = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                    and not p.name.startswith("."))
    if tables:
        return "tables", tables, path
    raise PredictError(f"{path}: no recording (.nwb, .abf, folders of .ibw) and no spike table (.csv, .parquet) in this folder")


def read_recordings(files: list[Path], root: Path, n_jobs: int = 1, mapping: dict[str, int] | None = None) -> NewCells:
    """Sweep table of NWB 2 / NWB 1 / ABF files and folders of Igor waves; unusable ones are listed with the reason.

    ``mapping`` (:func:`sts_utils.data.recordings.read_cell_mapping`) gives cells their ids; otherwise a ``sub-<id>``
    name, else 1, 2, ... (:func:`sts_utils.data.recordings.scan_cells`).
    """
    cells, table, qc = scan_cells(files, root, n_jobs=n_jobs, mapping=mapping)
    bad = qc.merge(cells, on="specimen_id")
    bad = bad[bad["qc_status"] != "ok"]
    skipped = pd.DataFrame({"specimen_id": bad["specimen_id"], "cell": bad["cell"], "source": bad["source"],
                            "reason": bad["qc_status"]}, columns=SKIPPED_COLUMNS).reset_index(drop=True)
    return NewCells("sweeps", table, root, cells, skipped)


def _parse_times(value, path: Path, line: int) -> np.ndarray:
    """One ``spike_times_s`` entry as a float array: a list or array, text of numbers, a number, or empty."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return np.asarray(value, dtype=float).ravel()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.zeros(0)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return np.array([float(value)])
    text = str(value).strip().strip("[]()").strip()
    if not text:
        return np.zeros(0)
    try:
        return np.array([float(x) for x in re.split(r"[,;\s]+", text) if x], dtype=float)
    except ValueError:
        raise TableError(f"{path}: line {line}: spike_times_s {str(value)[:40]!r} is not a list of times in s") from None


def read_spike_table(path: str | os.PathLike) -> pd.DataFrame:
    """A user's spike table as spike-train rows (:data:`sts_utils.data.tables.SPIKE_TRAIN_COLUMNS` + ``cell``).

    See the module docstring for the accepted shapes.

    Raises
    ------
    TableError
        A missing column (one line naming the file and the columns), an unreadable file or a bad value.
    """
    path = Path(path)
    try:
        df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a file that is not a table
        raise TableError(f"{path}: cannot be read as a {path.suffix} table ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from exc
    rename, missing = {}, []
    for name, aliases in SPIKE_TABLE_COLUMNS.items():
        found = next((a for a in aliases if a in df.columns), None)
        if found is None:
            missing.append(" or ".join(aliases))
        else:
            rename[found] = name
    if missing:
        raise TableError(f"{path}: missing column(s) {', '.join(missing)}; a spike table needs "
                         "specimen_id (or cell_id), sweep_number (or repeat), epoch, spike_times_s")
    df = df.rename(columns=rename)
    df["cell"] = df["specimen_id"].astype(str)
    for col in ("sweep_number", "epoch"):
        vals = pd.to_numeric(df[col], errors="coerce")
        if vals.isna().any():
            k = int(np.flatnonzero(vals.isna().to_numpy())[0])
            raise TableError(f"{path}: line {k + 2}: {col} {df[col].iloc[k]!r} is not an integer")
        df[col] = vals.astype("int64")
    times = [_parse_times(v, path, k + 2) for k, v in enumerate(df["spike_times_s"].tolist())]
    df["spike_times_s"] = times
    for col, default in (("epoch_start_s", 0), ("epoch_end_s", 1)):
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
        fill = df["epoch"].map(lambda e, k=default: TEETER_EPOCHS_S.get(int(e), (np.nan, np.nan))[k])
        df[col] = df[col].fillna(fill)
    if df[["epoch_start_s", "epoch_end_s"]].isna().any().any():
        bad = sorted(df.loc[df["epoch_start_s"].isna() | df["epoch_end_s"].isna(), "epoch"].unique())
        raise TableError(f"{path}: epoch(s) {bad} have no epoch_start_s/epoch_end_s and no default "
                         f"(defaults exist for {sorted(TEETER_EPOCHS_S)}); add the two columns")
    if "time_scale" not in df.columns:
        df["time_scale"] = 1.0
    if "stimulus_kind" not in df.columns:
        df["stimulus_kind"] = "Noise 1"
    keys = ["cell", "sweep_number", "epoch"]
    # one row per spike (or several list rows of one epoch) -> one row per epoch
    out = (df.groupby(keys, sort=True)
             .agg(stimulus_kind=("stimulus_kind", "first"), epoch_start_s=("epoch_start_s", "first"),
                  epoch_end_s=("epoch_end_s", "first"), time_scale=("time_scale", "max"),
                  spike_times_s=("spike_times_s", lambda s: np.sort(np.concatenate(list(s))) if len(s) else np.zeros(0)))
             .reset_index())
    return out


def read_spike_tables(files: list[Path], root: Path) -> NewCells:
    """Spike-train rows of one or more spike tables; integer ids kept where they are unique."""
    frames = []
    for p in files:
        t = read_spike_table(p)
        t["source"] = str(p)
        frames.append(t)
    table = pd.concat(frames, ignore_index=True)
    cells = table[["cell", "source"]].drop_duplicates().reset_index(drop=True)
    wanted = []
    for c in cells["cell"]:
        try:
            v = float(c)
            wanted.append(int(v) if v == round(v) else None)
        except ValueError:
            wanted.append(None)
    cells.insert(0, "specimen_id", assign_ids(wanted))
    table = table.merge(cells, on=["cell", "source"])
    return NewCells("spike_trains", table, root, cells, pd.DataFrame(columns=SKIPPED_COLUMNS))


def read_new_cells(input_path: str | os.PathLike, n_jobs: int = 1, cells: str | os.PathLike | None = None) -> NewCells:
    """Read an input file or folder (NWB 2, NWB 1, ABF, Igor waves or spike tables; see the module docstring).

    Raises
    ------
    RecordingError
        A single input file that cannot be read (a folder lists such files in ``skipped`` instead).
    """
    kind, files, root = _input_files(Path(input_path))
    if kind == "recordings":
        new = read_recordings(files, root, n_jobs=n_jobs, mapping=read_cell_mapping(cells) if cells else None)
        unreadable = new.skipped[new.skipped["reason"].str.startswith("unreadable")]
        if Path(input_path).is_file() and len(unreadable):
            raise RecordingError(unreadable["reason"].iloc[0].removeprefix("unreadable: ").splitlines()[0])
        return new
    return read_spike_tables(files, root)


# -------------------------------------------------------------------------------------- scalograms

def _cell_image(job: tuple) -> tuple[int, str, dict, np.ndarray | None, list[np.ndarray] | None]:
    """Worker: one cell's signals and scalogram (float16, as in the store), or why it was skipped."""
    sid, rows, root, params_dict, freqs, window_s, keep_signals = job
    params = ScalogramParams(**params_dict)
    try:
        signals, meta = cell_signals(rows, Path(root), params)
        img = scalogram_image(signals, params.n_times / window_s, freqs, params.store_times, params.wavelet)
        return sid, "ok", meta, img.astype(np.float16), (signals if keep_signals else None)
    except SelectionError as exc:
        return sid, str(exc), {}, None, None
    except Exception as exc:  # a broken recording must not stop the others; it is listed with the reason
        return sid, f"error: {type(exc).__name__}: {str(exc)[:200]}", {}, None, None


def compute_images(new: NewCells, setting: dict, n_jobs: int = 1, keep_signals: bool = False,
                   progress: bool = True) -> dict[int, tuple]:
    """Every cell's scalogram with a bundle setting (``bundle.json``'s ``scalograms`` block).

    The window is the training window (``window_s``), the frequencies ``params.frequencies_hz(window_s)``,
    as :func:`sts_utils.stages.scalograms.compute_scalograms` computed them for the training cells.

    Returns
    -------
    dict
        ``specimen_id -> (status, meta, image float16 (channels x scales x times) or None, signals or None)``.
    """
    params = ScalogramParams(**{**setting["params"], "offsets_pa": tuple(setting["params"]["offsets_pa"])})
    window_s = float(setting["window_s"])
    freqs = params.frequencies_hz(window_s)
    if not np.allclose(freqs, setting["freqs_hz"], rtol=1e-9, atol=0):
        raise BundleError("the bundle's frequency axis does not follow from its parameters; export it again")
    groups = dict(tuple(new.table.groupby("specimen_id"))) if len(new.table) else {}
    jobs = [(int(sid), rows, str(new.root), asdict(params), freqs, window_s, keep_signals) for sid, rows in groups.items()]
    out = {}
    bar = dict(total=len(jobs), desc="new cells: scalograms", disable=not progress, file=progress_stream())
    if n_jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            results = list(tqdm(pool.map(_cell_image, jobs, chunksize=1), **bar))
    else:
        results = [_cell_image(j) for j in tqdm(jobs, **bar)]
    for sid, status, meta, img, signals in results:
        out[sid] = (status, meta, img, signals)
    return out


def input_window_s(new: NewCells, setting: dict) -> float:
    """The median step (or epoch) plus pre and post of the input (s), as training measured its own; NaN if none."""
    if new.table.empty:
        return float("nan")
    params = ScalogramParams(**{**setting["params"], "offsets_pa": tuple(setting["params"]["offsets_pa"])})
    try:
        return analysis_window_s(new.table, params)
    except ValueError:
        return float("nan")


# -------------------------------------------------------------------------------------- prediction

def _prefixes(cards: list[dict]) -> list[str]:
    names = [c["model"]["backbone"] for c in cards]
    return [n if names.count(n) == 1 else f"{n}-{k + 1}" for k, n in enumerate(names)]


def _check_kind(cards: list[dict], new: NewCells, input_path: Path) -> None:
    kind = cards[0]["scalograms"]["input_kind"]
    if kind != new.kind:
        what = {"sweeps": "voltage recordings (NWB)", "spike_trains": "spike-time tables"}
        raise BundleError(f"{cards[0]['folder']}: trained on {what[kind]} (SIGNAL={cards[0]['scalograms']['params']['signal']}), "
                          f"but {input_path} holds {what[new.kind]}; use a bundle trained on {what[new.kind]}")


def _atomic_out_folder(out_dir: Path) -> Path:
    """A temporary folder beside ``out_dir``; refuses an ``out_dir`` that holds anything but an earlier run."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PredictError(f"{out_dir}: exists and is not a folder; give a folder for --out")
        if any(out_dir.iterdir()) and not (out_dir / "run.json").is_file():
            raise PredictError(f"{out_dir}: not empty and not an earlier predictions folder (no run.json); "
                               "give a new or empty folder for --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.part-", dir=out_dir.parent))


def predict_cells(bundles: list[str | os.PathLike], input: str | os.PathLike, out_dir: str | os.PathLike,
                  figures: bool = False, device: str | None = None, n_jobs: int = 1, progress: bool = True,
                  cells: str | os.PathLike | None = None) -> pd.DataFrame:
    """Classify the cells of ``input`` with every bundle and their ensemble; write ``out_dir``.

    Parameters
    ----------
    bundles
        Bundle folders (:func:`sts_utils.stages.bundle.export_bundle`); all must share one scalogram setting.
    input
        An NWB 2 / NWB 1 file, a spike table (CSV or Parquet), or a folder of either (module docstring).
    out_dir
        Output folder: ``predictions.csv``, ``skipped.csv``, ``run.json`` (and ``figures/``). Must be
        new, empty or an earlier output of this function; it is replaced as a whole at the end.
    figures
        Also write one PNG per predicted cell (signals, scalogram, saliency of the predicted class,
        probabilities).
    device
        ``cpu``, ``cuda``... (default: CUDA when available).
    n_jobs
        Worker processes for reading files and computing scalograms.
    cells
        Optional CSV mapping recordings to cell ids (``file``, ``specimen_id``; :func:`sts_utils.data.recordings.read_cell_mapping`).
    progress
        Progress bars on the terminal.

    Returns
    -------
    pandas.DataFrame
        ``predictions.csv``: one row per cell found, predicted or skipped.

    Raises
    ------
    BundleError
        A path that is not a bundle, an altered ``model.pt``, bundles of different scalogram settings,
        or a bundle trained on another kind of data than ``input``.
    TableError
        A spike table with missing columns or bad values.
    PredictError
        ``input`` missing or empty, ``out_dir`` not usable.
    """
    input_path, out_dir = Path(input), Path(out_dir)
    if not bundles:
        raise BundleError("no model bundle given (--models)")
    cards = [{**read_card(b), "folder": str(b)} for b in bundles]
    setting = check_compatible(cards)
    new = read_new_cells(input_path, n_jobs=n_jobs, cells=cells)
    _check_kind(cards, new, input_path)
    win = input_window_s(new, setting)
    window_note = ""
    if np.isfinite(win) and abs(win - setting["window_s"]) > WINDOW_TOLERANCE * setting["window_s"]:
        window_note = (f"the input's median step/epoch gives a {win:.3f} s window, the models were trained on "
                       f"{setting['window_s']:.3f} s: each cell is still resampled over its own step, as in training")
        logger.warning("%s", window_note)
    dev = get_device(device)
    models = [load_bundle(b, dev)[0] for b in bundles]
    images = compute_images(new, setting, n_jobs=n_jobs, keep_signals=figures, progress=progress)
    ok = [sid for sid in new.cells["specimen_id"] if sid in images and images[sid][0] == "ok"]
    x = np.stack([images[s][2] for s in ok]).astype(np.float32) if ok else np.zeros((0,))
    prefixes = _prefixes(cards)
    probas = [predict_proba(m, x, device=dev) if ok else np.zeros((0, len(CLASSES))) for m in models]
    table = _predictions_table(new, images, ok, probas, prefixes)
    skipped = _skipped_table(new, table)
    tmp = _atomic_out_folder(out_dir)
    try:
        write_csv_atomic(table, tmp / "predictions.csv")
        write_csv_atomic(skipped, tmp / "skipped.csv")
        if figures and ok:
            _write_figures(tmp / "figures", new, images, ok, models, probas, prefixes, setting, progress)
        run = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "input": str(input_path),
               "input_kind": new.kind, "bundles": [{"folder": c["folder"], "backbone": c["model"]["backbone"],
                                                   "dataset": c["training"]["dataset"], "column_prefix": p,
                                                   "model_pt_sha256": c["model_pt_sha256"]} for c, p in zip(cards, prefixes)],
               "scalograms": {k: v for k, v in setting.items() if k not in ("freqs_hz", "times_s")},
               "input_window_s": win, "window_note": window_note, "device": str(dev),
               "n_cells": int(len(table)), "n_predicted": int(len(ok)), "n_skipped": int(len(skipped)),
               "versions": package_versions()}
        write_text_atomic(tmp / "run.json", json.dumps(run, indent=2, default=float) + "\n")
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("new cells: %d predicted, %d skipped -> %s", len(ok), len(skipped), out_dir)
    return table


def _sweeps_used(meta: dict) -> str:
    used = [str(meta[k]) for k in ("sweep_ch0", "sweep_ch1") if k in meta]
    return "; ".join(used)


def _predictions_table(new: NewCells, images: dict, ok: list[int], probas: list[np.ndarray],
                       prefixes: list[str]) -> pd.DataFrame:
    rows = []
    pos = {sid: k for k, sid in enumerate(ok)}
    ens = np.mean(probas, axis=0) if ok else np.zeros((0, len(CLASSES)))
    for c in new.cells.itertuples(index=False):
        sid = int(c.specimen_id)
        row = {"specimen_id": sid, "cell": c.cell, "source": c.source}
        if sid in pos:
            k = pos[sid]
            row.update(status="ok", reason="", ensemble_class=CLASSES[int(ens[k].argmax())],
                       ensemble_probability=float(ens[k].max()))
            row.update({f"ensemble_p_{cl}": float(ens[k, j]) for j, cl in enumerate(CLASSES)})
            for p, pr in zip(prefixes, probas):
                row[f"{p}_class"] = CLASSES[int(pr[k].argmax())]
                row.update({f"{p}_p_{cl}": float(pr[k, j]) for j, cl in enumerate(CLASSES)})
            meta = images[sid][1]
            row["sweeps_used"] = _sweeps_used(meta)
            row["sweep_qc"] = _sweep_qc_counts(new.table, sid)
            row.update({m: meta[m] for m in META_COLUMNS if m in meta})
        else:
            reason = images[sid][0] if sid in images else next(
                (r for r in new.skipped.loc[new.skipped["specimen_id"] == sid, "reason"]), "no usable sweep or spike train")
            row.update(status="skipped", reason=reason, sweep_qc=_sweep_qc_counts(new.table, sid))
        rows.append(row)
    cols = ["specimen_id", "cell", "source", "status", "reason", "ensemble_class", "ensemble_probability",
            *[f"ensemble_p_{cl}" for cl in CLASSES],
            *[c for p in prefixes for c in (f"{p}_class", *[f"{p}_p_{cl}" for cl in CLASSES])],
            "sweeps_used", "sweep_qc"]
    df = pd.DataFrame(rows)
    return df.reindex(columns=cols + [m for m in META_COLUMNS if m in df.columns])


def _sweep_qc_counts(table: pd.DataFrame, sid: int) -> str:
    """``reason: count`` of a cell's sweeps (``ok``, or the check that skipped them); empty for spike tables."""
    if "sweep_qc" not in table.columns:
        return ""
    counts = table.loc[table["specimen_id"] == sid, "sweep_qc"].value_counts()
    return "; ".join(f"{reason}: {n}" for reason, n in counts.items())


def _skipped_table(new: NewCells, table: pd.DataFrame) -> pd.DataFrame:
    return table.loc[table["status"] != "ok", SKIPPED_COLUMNS + ["sweep_qc"]].reset_index(drop=True)


# ----------------------------------------------------------------------------------------- figures
# the one-cell report that --figures writes beside predictions.csv: an output of this stage (which imports no
# presentation module), so it lives here; the pages' figures are in sts_utils.pages.plots

def cell_report_figure(signals: list[np.ndarray], image: np.ndarray, saliency: np.ndarray | None, setting: dict,
                       probabilities: dict[str, np.ndarray], title: str = "", rasters: list[list[np.ndarray]] | None = None):
    """One cell: its analysed signals (or rasters), scalogram channels, saliency of the predicted class, probabilities.

    Parameters
    ----------
    signals
        The channel signals the scalogram was computed from (mV, or rate in Hz), ``n_times`` points over the window.
    image
        The scalogram (channels x scales x times, values in [0, 1]).
    saliency
        Paper-style saliency map (scales x times) of the predicted class, or None.
    setting
        The bundle's ``scalograms`` block (window, frequencies, times, channel names).
    probabilities
        Model name -> class probabilities (in :data:`sts_utils.core.config.CLASSES` order).
    rasters
        Spike-time data: per channel, the spike times (s from epoch onset) of each repeat.
    """
    freqs, times = np.asarray(setting["freqs_hz"]), np.asarray(setting["times_s"])
    pre, window = float(setting["params"]["pre_s"]), float(setting["window_s"])
    names = setting["channel_names"]
    fig, axes = plt.subplots(3, 2, figsize=(10, 8.5), gridspec_kw={"height_ratios": [1, 1.4, 1.4]})
    for k, sig in enumerate(signals[:2]):
        ax = axes[0, k]
        t = (np.arange(len(sig)) + 0.5) * window / len(sig) - pre
        if rasters is not None:
            ax.eventplot([np.asarray(r) for r in rasters[k]], color="k", linelengths=0.8, linewidths=0.5)
            ax.set_ylabel("repeat")
        else:
            ax.plot(t, sig, lw=0.5, color="k")
            ax.set_ylabel("V (mV)")
        ax.set_xlim(times[0], times[-1])
        ax.set_title(names[k], fontsize=8)
    for k in range(min(2, image.shape[0])):
        ax = axes[1, k]
        ax.pcolormesh(times, freqs, image[k], cmap="magma", shading="auto", vmin=0, vmax=1)
        ax.set_yscale("log")
        ax.set_ylabel("frequency (Hz)")
        ax.set_title(f"scalogram, {names[k]}", fontsize=8)
    ax = axes[2, 0]
    if saliency is not None:
        ax.pcolormesh(times, freqs, image.max(axis=0), cmap="Greys", shading="auto", vmin=0, vmax=1)
        a = saliency / saliency.max() if saliency.max() > 0 else saliency
        ax.pcolormesh(times, freqs, np.ma.masked_less(a, 0.15), cmap="inferno", alpha=0.6, shading="auto", vmin=0, vmax=1)
        ax.set_yscale("log")
        ax.set_title("saliency of the predicted class (|gradient|, max over channels)", fontsize=8)
    else:
        ax.axis("off")
    ax.set_xlabel("time from stimulus onset (s)")
    ax = axes[2, 1]
    n = len(probabilities)
    width = 0.8 / max(n, 1)
    for j, (name, p) in enumerate(probabilities.items()):
        ax.bar(np.arange(len(CLASSES)) + (j - (n - 1) / 2) * width, p, width,
               color=[CLASS_COLORS[c] for c in CLASSES], alpha=1.0 if name == "ensemble" else 0.45,
               edgecolor="k" if name == "ensemble" else "none", label=name)
    ax.set_xticks(np.arange(len(CLASSES)), CLASSES, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title("class probabilities (" + ", ".join(probabilities) + "; ensemble outlined)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _write_figures(folder: Path, new: NewCells, images: dict, ok: list[int], models: list, probas: list[np.ndarray],
                   prefixes: list[str], setting: dict, progress: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x = np.stack([images[s][2] for s in ok]).astype(np.float32)
    ens = np.mean(probas, axis=0)
    target = ens.argmax(1)
    sal = paper_style_map(attribute(models[0], x, target, "saliency"))
    cells = new.cells.set_index("specimen_id")
    for k, sid in enumerate(tqdm(ok, desc="new cells: figures", disable=not progress, file=progress_stream())):
        status, meta, img, signals = images[sid]
        rasters = None
        if new.kind == "spike_trains":
            rows = new.table[new.table["specimen_id"] == sid]
            rasters = [[np.asarray(r.spike_times_s) - r.epoch_start_s for r in rows[rows["epoch"] == ep].itertuples()]
                       for ep in (2, 3)]
        probs = {p: pr[k] for p, pr in zip(prefixes, probas)}
        probs["ensemble"] = ens[k]
        title = (f"{cells.loc[sid, 'cell']} (id {sid}): {CLASSES[int(target[k])]} ({ens[k].max():.2f}); "
                 f"sweeps {_sweeps_used(meta) or '-'}; saliency from {prefixes[0]}")
        fig = cell_report_figure(signals, np.asarray(img, dtype=np.float32), sal[k], setting, probs, title, rasters)
        fig.savefig(folder / f"{sid}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)


# --------------------------------------------------------------------------------------------- CLI

EPILOG = """input:
  a recording (.nwb: NWB 2 of any writer or Allen NWB 1; .abf: Axon; a folder of Igor .ibw waves = one cell),
  or a folder of them (searched recursively; unreadable files are listed in skipped.csv); or a spike table (.csv / .parquet, or a folder of them when it holds no .nwb) with columns
  specimen_id (or cell_id), sweep_number (or repeat), epoch (2 and 3), spike_times_s (s; one spike per row,
  or a list per row), optional epoch_start_s, epoch_end_s (default teeter2018's 10-13 s and 18-21 s).
output (OUT, replaced as a whole when it holds an earlier run):
  predictions.csv, skipped.csv, run.json, figures/<specimen_id>.png (--figures)
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m sts_utils.stages.predict``: classify new cells with one or more model bundles."""
    ap = argparse.ArgumentParser(prog="python -m sts_utils.stages.predict", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Classify new cells (Pvalb, Sst, Vip/Lamp5, Excitatory) with exported "
                                             "model bundles; several bundles are averaged into an ensemble.")
    ap.add_argument("--models", nargs="+", required=True, metavar="BUNDLE",
                    help="bundle folders (python -m sts_utils.stages.bundle / make export)")
    ap.add_argument("--input", required=True, help="NWB or ABF file, spike table, or a folder of them (or of Igor waves)")
    ap.add_argument("--out", required=True, help="output folder (new, empty, or an earlier run's)")
    ap.add_argument("--figures", action="store_true", help="one PNG per cell in OUT/figures/")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--n-jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--cells", default=None, metavar="CSV",
                    help="file -> cell id mapping (columns file, specimen_id); default: sub-<id> names, else 1, 2, ...")
    args = ap.parse_args(argv)
    try:
        table = predict_cells(args.models, args.input, args.out, figures=args.figures, device=args.device,
                              n_jobs=args.n_jobs, cells=args.cells)
    except (BundleError, TableError, PredictError, MissingArtifactError, RecordingError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = table[table["status"] == "ok"]
    print(f"{len(table)} cells: {len(ok)} predicted, {len(table) - len(ok)} skipped -> {Path(args.out) / 'predictions.csv'}")
    if len(ok):
        print("predicted: " + ", ".join(f"{c} {n}" for c, n in ok["ensemble_class"].value_counts().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
