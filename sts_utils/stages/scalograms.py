"""Scalogram stage (notebook 02): each cell becomes a two-channel time–frequency image.

Signal (``SIGNAL``)
    ``voltage``: the membrane potential from ``PRE_S`` before the step onset to ``POST_S`` after its
    offset, anti-alias resampled to ``N_TIMES`` points (:func:`sts_utils.compute.signals.resample_window`).
    The window starts at each sweep's *own* stimulus onset, so two recordings of one cell with
    different onsets give the same image. The two sweeps are chosen by
    :func:`sts_utils.compute.sweeps.select_suprathreshold_sweeps` (rheobase + ``OFFSETS_PA``). ``spikes``:
    the spike train binned into the same ``N_TIMES`` bins (rate in Hz), for spike-time data (one
    channel per stimulus epoch, repeats averaged) or for the chosen sweeps' ipfx spike times.

Transform
    :func:`sts_utils.compute.cwt.scalogram_image`: complex Morlet CWT at ``N_SCALES`` log-spaced
    frequencies from ``F_MIN_HZ`` to ``F_MAX_HZ`` (defaults: two cycles per window, and a quarter
    of the resampled rate), computed multirate, log-compressed and scaled to [0, 1].

Storage and reuse
    ``STORE_TIMES`` time bins (default 480) x ``N_SCALES`` x 2 channels, float16: 345,600 bytes a
    cell, 1/20 of the paper's float32 180 x 4,800 x 2 arrays (:mod:`sts_utils.data.store`). Per-cell
    results are written atomically under ``scalograms/cells-<hash of the parameters and
    TRANSFORM_VERSION>/`` with a *fingerprint* of everything the cell's image is a function of: its
    ``cells.csv`` row, its sweep rows (with the recording file's SHA-256) or spike-train rows, the
    parameters and the transform version. A rerun reuses a cell's image (from its shard, or from
    the consolidated store when ``params.json`` vouches for the store) only when the fingerprint is
    unchanged; errors are never reused, so a restored file is read again. A run where no cell gives
    an image keeps the previous store and says why.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from sts_utils.core.config import CLASSES, check_whole_number, dataset_dir, logger, progress_stream
from sts_utils.compute.cwt import TRANSFORM_VERSION, WAVELET, scalogram_image
from sts_utils.core.errors import DiskFullError, SelectionError
from sts_utils.core.io import data_dir_lock, load_npy, save_npy_atomic, write_text_atomic
from sts_utils.data.recordings import load_sweep
from sts_utils.compute.signals import bin_spike_train, resample_window
from sts_utils.data.store import stored_rows, write_store
from sts_utils.compute.sweeps import DEFAULT_OFFSETS_PA, LongSquareAnalysis, Selection, analyse_long_squares, check_offsets, detect_spikes, \
    select_suprathreshold_sweeps, selection_tolerance_pa
from sts_utils.data.tables import read_cells, read_spike_trains, read_sweeps

#: image channels the CNNs' input mapping (0, 1, 0) needs
N_CHANNELS = 2


@dataclass(frozen=True)
class ScalogramParams:
    """Every parameter of the scalogram stage (names match the notebook's parameters; units in names).

    Checked where they enter: a bad value is a one-line ``ValueError`` naming the parameter.
    """

    signal: str = "voltage"
    offsets_pa: tuple[float, ...] = DEFAULT_OFFSETS_PA
    pre_s: float = 0.1
    post_s: float = 0.1
    n_times: int = 4800
    n_scales: int = 180
    f_min_hz: float | None = None
    f_max_hz: float | None = None
    store_times: int = 480
    wavelet: str = WAVELET
    max_distance_pa: float = 20.0

    def __post_init__(self):
        if self.signal not in ("voltage", "spikes"):
            raise ValueError(f"SIGNAL must be 'voltage' or 'spikes', got {self.signal!r}")
        offsets = check_offsets(self.offsets_pa)
        if len(offsets) != N_CHANNELS:
            raise ValueError(f"OFFSETS_PA must give {N_CHANNELS} offsets (the image's two channels, e.g. [40, 50]), "
                             f"got {list(self.offsets_pa)}: the CNNs copy channel 0 as their third input channel "
                             "and need channels 0 and 1")
        object.__setattr__(self, "offsets_pa", offsets)
        for name in ("n_times", "n_scales", "store_times"):
            check_whole_number(name.upper(), getattr(self, name), 2)
        if self.store_times > self.n_times:
            raise ValueError(f"STORE_TIMES ({self.store_times}) cannot exceed N_TIMES ({self.n_times})")
        if self.pre_s < 0 or self.post_s < 0:
            raise ValueError(f"PRE_S and POST_S must be >= 0 s, got {self.pre_s}, {self.post_s}")
        if not self.max_distance_pa > 0:
            raise ValueError(f"max_distance_pa must be > 0 pA, got {self.max_distance_pa}")
        for name in ("f_min_hz", "f_max_hz"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name.upper()} must be a frequency above 0 Hz, got {value}")
        if self.f_min_hz is not None and self.f_max_hz is not None and not self.f_min_hz < self.f_max_hz:
            raise ValueError(f"need F_MIN_HZ < F_MAX_HZ, got {self.f_min_hz} and {self.f_max_hz}")

    def frequencies_hz(self, window_s: float) -> np.ndarray:
        """Log-spaced analysis frequencies (Hz, ascending) for a window of ``window_s`` seconds.

        Raises
        ------
        ValueError
            when a bound is above the resampled signal's Nyquist frequency, or the bounds (after the
            defaults are filled in) are not ascending.
        """
        fs = self.n_times / window_s
        f_min = self.f_min_hz if self.f_min_hz is not None else 2.0 / window_s
        f_max = self.f_max_hz if self.f_max_hz is not None else fs / 4.0
        nyquist = fs / 2
        for name, value in (("F_MIN_HZ", f_min), ("F_MAX_HZ", f_max)):
            # relative tolerance: 1.0 + 0.1 + 0.1 s is 1.2000000000000002 s in floating point
            if value >= nyquist * (1 - 1e-9):
                raise ValueError(f"{name}={value:g} Hz is at or above the Nyquist frequency {nyquist:.6g} Hz of the "
                                 f"signal resampled to N_TIMES={self.n_times} over {window_s:.6g} s; choose a lower "
                                 f"{name} or a larger N_TIMES")
        if not f_min < f_max:
            raise ValueError(f"frequencies must ascend: F_MIN_HZ={f_min:g} Hz is not below F_MAX_HZ={f_max:g} Hz")
        return np.geomspace(f_min, f_max, self.n_scales)

    def hash(self) -> str:
        """Short hash of the parameters and the transform's version (names the shard folder)."""
        key = {**asdict(self), "transform_version": TRANSFORM_VERSION}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def cell_fingerprint(params_hash: str, cell_row: dict, rows: pd.DataFrame | None) -> str:
    """Hash of everything a cell's image is a function of: parameters, ``cells.csv`` row, sweep or spike rows.

    Sweep rows carry the recording file's SHA-256; spike-train rows carry the spike times themselves.
    """
    h = hashlib.sha256(params_hash.encode())
    h.update(json.dumps({k: str(v) for k, v in sorted(cell_row.items())}).encode())
    if rows is not None:
        for r in rows.sort_values([c for c in ("sweep_number", "epoch") if c in rows.columns]).itertuples(index=False):
            for v in r:
                h.update(np.asarray(v, dtype=float).tobytes() if isinstance(v, np.ndarray) else str(v).encode())
                h.update(b"|")
    return h.hexdigest()[:20]


# -------------------------------------------------------------------------------- one cell at a time

def select_cell_sweeps(cell_sweeps: pd.DataFrame, root: Path, params: ScalogramParams
                       ) -> tuple[LongSquareAnalysis, Selection]:
    """Spike counts of a cell's usable depolarizing long squares (ipfx) and the chosen sweeps."""
    ls = cell_sweeps[(cell_sweeps["stimulus_kind"] == "Long Square")].dropna(subset=["amplitude_pa", "stim_start_s"])
    if "sweep_qc" in ls.columns:
        ls = ls[ls["sweep_qc"] == "ok"]  # truncated sweeps and the like are left out (counted in notebook 01)
    ls = ls[ls["amplitude_pa"] > 0]
    if ls.empty:
        qc = cell_sweeps["sweep_qc"].value_counts() if "sweep_qc" in cell_sweeps.columns else pd.Series(dtype=int)
        bad = "; ".join(f"{reason}: {n}" for reason, n in qc.items() if reason != "ok")
        raise SelectionError("no depolarizing long-square sweep", f"sweeps skipped: {bad}" if bad else "")
    # sweeps beyond the farthest target plus the tolerance are never chosen (a coarse grid widens the tolerance)
    reach_pa = max(params.offsets_pa) + selection_tolerance_pa(ls["amplitude_pa"], params.max_distance_pa)
    analysis = analyse_long_squares(ls, lambda row: load_sweep(row, root), stop_after_pa=reach_pa)
    return analysis, select_suprathreshold_sweeps(analysis.table, params.offsets_pa, params.max_distance_pa)


def _selection_meta(analysis: LongSquareAnalysis, sel: Selection) -> dict:
    rows = [analysis.table.loc[analysis.table.sweep_number == sn].iloc[0] for sn in sel.sweep_numbers]
    return {"rheobase_pa": sel.rheobase_pa, "rheobase_sweep": sel.rheobase_sweep, "nan_sweeps": analysis.nan_sweeps,
            "rheobase_note": sel.rheobase_note, "tolerance_pa": sel.tolerance_pa,
            **{f"sweep_ch{k}": s for k, s in enumerate(sel.sweep_numbers)},
            **{f"amplitude_ch{k}_pa": a for k, a in enumerate(sel.amplitudes_pa)},
            **{f"stim_start_ch{k}_s": float(r["stim_start_s"]) for k, r in enumerate(rows)},
            **{f"stim_end_ch{k}_s": float(r["stim_end_s"]) for k, r in enumerate(rows)}}


def cell_voltage_signals(cell_sweeps: pd.DataFrame, root: Path, params: ScalogramParams) -> tuple[list[np.ndarray], dict]:
    """The chosen sweeps' onset-aligned voltage windows (mV, ``n_times`` points each) and the choice made."""
    analysis, sel = select_cell_sweeps(cell_sweeps, root, params)
    signals = []
    for sn in sel.sweep_numbers:
        row = analysis.table[analysis.table["sweep_number"] == sn].iloc[0]
        sw = analysis.sweeps[sn]
        signals.append(resample_window(sw.t_s, sw.v_mv, row["stim_start_s"] - params.pre_s,
                                       row["stim_end_s"] + params.post_s, params.n_times))
    return signals, _selection_meta(analysis, sel)


def cell_voltage_spike_signals(cell_sweeps: pd.DataFrame, root: Path, params: ScalogramParams
                               ) -> tuple[list[np.ndarray], dict]:
    """``SIGNAL=spikes`` on voltage recordings: the chosen sweeps' ipfx spike times, binned as rates (Hz)."""
    analysis, sel = select_cell_sweeps(cell_sweeps, root, params)
    signals = []
    for sn in sel.sweep_numbers:
        row = analysis.table[analysis.table["sweep_number"] == sn].iloc[0]
        start = float(row["stim_start_s"])
        signals.append(bin_spike_train(analysis.spike_times_s[sn] - start, -params.pre_s,
                                       float(row["stim_end_s"]) - start + params.post_s, params.n_times))
    return signals, _selection_meta(analysis, sel)


def cell_spike_signals(trains: pd.DataFrame, params: ScalogramParams, epochs: tuple[int, ...] = (2, 3)
                       ) -> tuple[list[np.ndarray], dict]:
    """Channels from spike trains: one per stimulus epoch, the binned rate (Hz) averaged over repeats."""
    signals = []
    for ep in epochs:
        rows = trains[trains["epoch"] == ep]
        if rows.empty:
            raise SelectionError(f"no spike train for epoch {ep}")
        rates = [bin_spike_train(np.asarray(r.spike_times_s) - r.epoch_start_s, -params.pre_s,
                                 (r.epoch_end_s - r.epoch_start_s) + params.post_s, params.n_times)
                 for r in rows.itertuples(index=False)]
        signals.append(np.mean(rates, axis=0))
    if sum(float(s.sum()) for s in signals) == 0:
        raise SelectionError("no spikes in the analysed epochs")
    meta = {"n_repeats": int(trains["sweep_number"].nunique()), "time_scale": float(trains["time_scale"].max()),
            **{f"sweep_ch{k}": f"epoch {ep}" for k, ep in enumerate(epochs)}}
    return signals, meta


def cell_signals(rows: pd.DataFrame, root: Path, params: ScalogramParams) -> tuple[list[np.ndarray], dict]:
    """The channel signals of one cell, whatever its data (voltage sweeps or spike trains) and ``SIGNAL``."""
    if "spike_times_s" in rows.columns:
        return cell_spike_signals(rows, params)
    if params.signal == "spikes":
        return cell_voltage_spike_signals(rows, root, params)
    return cell_voltage_signals(rows, root, params)


def _process_cell(job: tuple) -> tuple[int, str, dict]:
    """Worker: compute one cell's scalogram into its shard, or record why it was skipped."""
    sid, rows, root, params_dict, freqs, window_s, shard_dir, fingerprint = job
    params = ScalogramParams(**params_dict)
    shard_dir = Path(shard_dir)
    try:
        signals, meta = cell_signals(rows, Path(root), params)
        img = scalogram_image(signals, params.n_times / window_s, freqs, params.store_times, params.wavelet)
        save_npy_atomic(img.astype(np.float16), shard_dir / f"{sid}.npy")
        status = "ok"
    except SelectionError as exc:
        meta, status = {"detail": str(exc)}, exc.reason
    except DiskFullError:  # not this cell's fault: the run stops, with one line, and no cell records it
        raise
    except Exception as exc:  # a broken file must not stop the cohort; it is counted in qc.csv and retried next run
        meta, status = {"detail": f"{type(exc).__name__}: {exc}"[:300]}, f"error: {type(exc).__name__}"
    write_text_atomic(shard_dir / f"{sid}.json", json.dumps({"status": status, "fingerprint": fingerprint, **meta},
                                                            default=float))
    return sid, status, meta


# -------------------------------------------------------------------------------------- the stage

def analysis_window_s(table: pd.DataFrame, params: ScalogramParams) -> float:
    """Length (s) of the analysed window: the median step or epoch plus ``PRE_S`` and ``POST_S``."""
    if "spike_times_s" in table.columns:
        core = (table["epoch_end_s"] - table["epoch_start_s"]).median()
    else:
        ls = table[table["stimulus_kind"] == "Long Square"]
        core = (ls["stim_end_s"] - ls["stim_start_s"]).median()
    if not np.isfinite(core):
        raise ValueError("no long-square step or stimulus epoch with a known duration in the sweep table")
    return float(core) + params.pre_s + params.post_s


def compute_scalograms(dataset: str, data_dir: str | os.PathLike | None = None, params: ScalogramParams = ScalogramParams(),
                       seed: int = 0, n_jobs: int = 2, progress: bool = True) -> dict:
    """Compute (or resume) the scalograms of every labelled cell of ``dataset`` and write the store.

    Reads ``cells.csv`` and ``sweeps.csv`` (or ``spike_trains.parquet``); writes ``scalograms/``.
    Cells left out before the transform (label ``Unsure``, an unreadable recording) are listed in
    ``qc.csv`` with the reason. Returns a dict with ``index`` and ``qc`` (DataFrames) and ``store`` (path).

    Raises
    ------
    ValueError
        ``spikes`` data with ``SIGNAL='voltage'``, or no cell gave an image (the previous store is kept).
    """
    ddir = dataset_dir(dataset, data_dir)
    with data_dir_lock(ddir):
        all_cells = read_cells(ddir / "cells.csv")
        spike_path, sweep_path = ddir / "spike_trains.parquet", ddir / "sweeps.csv"
        if spike_path.exists():
            if params.signal != "spikes":
                raise ValueError(f"{spike_path} holds spike times only: use SIGNAL='spikes'")
            table, input_path = read_spike_trains(spike_path), spike_path
        else:
            table, input_path = read_sweeps(sweep_path), sweep_path
        window_s = analysis_window_s(table, params)
        freqs = params.frequencies_hz(window_s)
        usable = all_cells["label"].isin(CLASSES) & (all_cells["qc_status"] == "ok")
        results: dict[int, tuple[str, dict]] = {}
        for r in all_cells[~usable].itertuples(index=False):
            reason = f"not a training class ({r.label})" if r.label not in CLASSES else f"acquisition: {r.qc_status}"
            results[int(r.specimen_id)] = (reason, {})
        cells = all_cells[usable]
        out_dir = ddir / "scalograms"
        shard_dir = out_dir / f"cells-{params.hash()}"
        shard_dir.mkdir(parents=True, exist_ok=True)
        groups = dict(tuple(table.groupby("specimen_id")))
        stored = stored_rows(out_dir, shard_dir)
        params_hash = params.hash()
        jobs, fingerprints = [], {}
        for cell in cells.to_dict("records"):
            sid = int(cell["specimen_id"])
            rows = groups.get(sid)
            fingerprints[sid] = fp = cell_fingerprint(params_hash, cell, rows)
            if rows is None:
                results[sid] = ("no sweeps", {})
                continue
            done = shard_dir / f"{sid}.json"
            if done.exists():
                rec = json.loads(done.read_text())
                status = rec.pop("status")
                reusable = rec.pop("fingerprint", None) == fp and not status.startswith("error")
                if reusable and (status != "ok" or (shard_dir / f"{sid}.npy").exists() or stored.get(sid, (0, ""))[1] == fp):
                    results[sid] = (status, rec)
                    continue
            (shard_dir / f"{sid}.npy").unlink(missing_ok=True)  # stale: computed from other inputs
            jobs.append((sid, rows, str(ddir / "raw"), asdict(params), freqs, window_s, str(shard_dir), fp))
        logger.info("scalograms: %d cells, %d reused, %d to compute", len(cells), len(cells) - len(jobs), len(jobs))
        if jobs:
            bar = dict(total=len(jobs), desc="scalograms", disable=not progress, file=progress_stream())
            if n_jobs > 1:
                with ProcessPoolExecutor(max_workers=n_jobs) as pool:
                    for sid, status, meta in tqdm(pool.map(_process_cell, jobs, chunksize=2), **bar):
                        results[sid] = (status, meta)
            else:
                for job in tqdm(jobs, **bar):
                    sid, status, meta = _process_cell(job)
                    results[sid] = (status, meta)
        return _consolidate(ddir, all_cells, results, fingerprints, shard_dir, params, freqs, window_s, seed,
                            input_path, stored)


def _consolidate(ddir: Path, cells: pd.DataFrame, results: dict, fingerprints: dict, shard_dir: Path,
                 params: ScalogramParams, freqs: np.ndarray, window_s: float, seed: int, input_path: Path,
                 stored: dict[int, tuple[int, str]]) -> dict:
    """Write the store from the shards (or the previous store's rows), then retire the shards' arrays."""
    out_dir = ddir / "scalograms"
    labels = cells.set_index("specimen_id")["label"]
    qc_rows, index_rows = [], []
    for sid in sorted(results):
        status, meta = results[sid]
        qc_rows.append({"specimen_id": sid, "label": labels.get(sid), "status": status, "detail": meta.get("detail", "")})
        if status == "ok":
            index_rows.append({"specimen_id": sid, "label": labels.get(sid),
                               **{k: v for k, v in meta.items() if k != "detail"}, "fingerprint": fingerprints[sid]})
    qc = pd.DataFrame(qc_rows, columns=["specimen_id", "label", "status", "detail"])
    counts = qc["status"].value_counts().to_dict()
    if not index_rows:
        raise ValueError(f"no cell of {ddir} gave a scalogram (status counts: {counts}); the previous store in "
                         f"{out_dir} is kept. Check the parameters (OFFSETS_PA, F_MIN_HZ, F_MAX_HZ, SIGNAL) and "
                         f"{out_dir / shard_dir.name} for each cell's reason")
    index = pd.DataFrame(index_rows)
    previous = load_npy(out_dir / "scalograms.npy", mmap=True) if stored else None

    def image(sid: int) -> np.ndarray:
        shard = shard_dir / f"{sid}.npy"
        return load_npy(shard) if shard.exists() else np.asarray(previous[stored[sid][0]])

    shape = (len(index), image(int(index["specimen_id"].iloc[0])).shape[0], params.n_scales, params.store_times)
    times = (np.arange(params.store_times) + 0.5) * window_s / params.store_times - params.pre_s
    store_path = write_store(out_dir, index, qc, image, shape, freqs, times,
                             {**asdict(params), "window_s": window_s, "f_min_hz_used": float(freqs[0]),
                              "f_max_hz_used": float(freqs[-1]), "shard_dir": shard_dir.name},
                             seed, {"cells.csv": ddir / "cells.csv", input_path.name: input_path}, {"qc_counts": counts})
    previous = None  # the old file is replaced; drop the mapping of it
    for sid in index["specimen_id"]:  # the store now holds these images: retire the shards
        (shard_dir / f"{int(sid)}.npy").unlink(missing_ok=True)
    logger.info("scalograms: %d cells stored, qc %s", len(index), counts)
    index = pd.read_csv(out_dir / "index.csv")
    return {"index": index, "qc": qc, "store": store_path}


# ------------------------------------------------------------------------------------ looking at it

def channel_names(dataset: str, data_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """What the image's channels are, for titles: the two stimulus epochs, or rheobase + each offset."""
    ddir = dataset_dir(dataset, data_dir)
    meta = json.loads((ddir / "scalograms" / "params.json").read_text())["params"]
    if (ddir / "spike_trains.parquet").exists():
        return ("noise epoch 2", "noise epoch 3")
    return tuple(f"rheobase + {o:g} pA" for o in meta["offsets_pa"])


def example_sweep_panel(dataset: str, store, data_dir: str | os.PathLike | None = None, row: int = 0) -> dict:
    """Arguments of :func:`sts_utils.pages.plots.sweep_to_scalogram_figure` for one cell's channel 0.

    Voltage data: the chosen sweep's trace and its ipfx spikes. Spike-time data: the rate (Hz, mean
    of the repeats in 120 bins) and the raster of every repeat of epoch 2.
    """
    ddir = dataset_dir(dataset, data_dir)
    example = store.index.iloc[row]
    sid = int(example.specimen_id)
    if (ddir / "spike_trains.parquet").exists():
        trains = read_spike_trains(ddir / "spike_trains.parquet")
        reps = trains[(trains.specimen_id == sid) & (trains.epoch == 2)]
        spikes = [r.spike_times_s - r.epoch_start_s for r in reps.itertuples()]
        n_bins = 120
        edges = np.linspace(store.times_s[0], store.times_s[-1], n_bins + 1)
        rate = np.mean([bin_spike_train(s, edges[0], edges[-1], n_bins) for s in spikes], axis=0)
        return dict(t_s=edges[:-1] + np.diff(edges) / 2, v_mv=rate, spike_times_s=spikes, img=store.get(sid)[0],
                    freqs_hz=store.freqs_hz, times_s=store.times_s, stim_start_s=0.0,
                    title=f"{example.label} cell {sid}, Noise 1 epoch 2, {len(spikes)} repeats",
                    ylabel="rate (Hz, mean of repeats)")
    sweeps = read_sweeps(ddir / "sweeps.csv")
    r = sweeps[(sweeps.specimen_id == sid) & (sweeps.sweep_number == example.sweep_ch0)].iloc[0]
    sw = load_sweep(r, ddir / "raw")
    spikes = detect_spikes(sw.t_s, sw.v_mv, sw.i_pa)
    return dict(t_s=sw.t_s, v_mv=sw.v_mv, spike_times_s=spikes["threshold_t"], img=store.get(sid)[0],
                freqs_hz=store.freqs_hz, times_s=store.times_s, stim_start_s=r.stim_start_s,
                title=f"{example.label} cell {sid}, {r.amplitude_pa:.0f} pA (rheobase {example.rheobase_pa:.0f} pA)")


def qc_table(qc: pd.DataFrame) -> pd.DataFrame:
    """Cells per scalogram status (rows) and class (columns)."""
    return qc.groupby(["status", "label"]).size().unstack(fill_value=0).reset_index()
