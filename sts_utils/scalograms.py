"""Scalogram stage: each cell becomes a two-channel time–frequency image.

Signal (``SIGNAL``)
    ``voltage``: the membrane potential from ``PRE_S`` before the step onset to ``POST_S`` after its
    offset, anti-alias resampled (polyphase FIR, :func:`scipy.signal.resample_poly`) to ``N_TIMES``
    points. The window starts at each sweep's *own* stimulus onset, so two recordings of one cell
    with different onsets give the same image. ``spikes``: the spike train binned into the same
    ``N_TIMES`` bins (rate in Hz), for spike-time-only data; repeats of a stimulus are averaged.

Transform
    Continuous wavelet transform with PyWavelets' complex Morlet ``cmor1.5-1.0`` (bandwidth 1.5,
    centre frequency 1): a complex wavelet gives the amplitude envelope directly (its modulus does
    not oscillate at the carrier, as a real Morlet's does), and a bandwidth of 1.5 gives about
    three cycles per wavelet, a balance between resolving single spikes in time and firing rates in
    frequency. ``N_SCALES`` rows at log-spaced frequencies from ``F_MIN_HZ`` to ``F_MAX_HZ`` (defaults:
    two cycles per window, and a quarter of the resampled rate), stored in ascending frequency.

    The CWT is computed *multirate*: each octave of frequencies is transformed on a copy of the
    signal decimated (FIR anti-alias, zero phase) so that it sits at 1/16–1/8 of its sampling rate
    (the top octaves at up to 1/4 of the full rate), and its modulus is averaged onto the stored
    time grid. This gives the same image as one full-rate ``pywt.cwt`` over all scales averaged
    onto that grid (the test suite checks it), at a fraction of the cost: low frequencies otherwise
    need wavelets of tens of thousands of samples.

    Each octave's transform is :func:`pywt_cwt_batched`, PyWavelets' own CWT (its wavelet, its
    sampling of the wavelet, its trimming; equal to ``pywt.cwt`` to ~1e-14, tested) with all scales
    in one batched FFT against a cached kernel bank, instead of ``pywt.cwt``'s Python loop of one
    FFT pair per scale, and with an FFT only as long as the kept output needs. It is a few lines
    around ``pywt.integrate_wavelet`` rather than a second library: the wavelet definition stays
    PyWavelets', and the loop was most of the stage's time. ``benchmarks/bench_scalograms.py``
    measures the stage against the paper-style path (``pywt.cwt`` at full rate, float32 files).

Normalisation
    ``log1p(modulus / m)`` with ``m`` the cell's median modulus over both channels, then divided by
    its maximum (values in [0, 1]). Without the log, the slow response to the current step holds
    nearly all the power and spikes end up near zero; the common reference keeps the relative power
    of the two sweeps, and the division removes the cell's overall scale. ``m`` is at least
    ``REFERENCE_FLOOR`` (1e-4, i.e. 80 dB, the ``top_db`` convention of librosa's
    ``amplitude_to_db``) times the peak modulus: where a channel stays silent (spike trains
    without spikes) the median is rounding noise, ~1e-15, and dividing by it would turn that noise
    into structure.

Storage
    ``STORE_TIMES`` time bins (default 480) x ``N_SCALES`` x 2 channels, float16: 345,600 bytes a cell,
    1/20 of the paper's float32 180 x 4,800 x 2 arrays. Per-cell shards are written atomically under
    ``scalograms/cells-<hash of the parameters and TRANSFORM_VERSION>/`` (so an interrupted run
    resumes and a changed parameter starts afresh), then consolidated into
    ``scalograms/scalograms.npy`` (cells x 2 x scales x times) with ``index.csv`` (row -> specimen),
    ``qc.csv`` (every cell's status), ``freqs_hz.npy``, ``times_s.npy`` and ``params.json`` (with
    the store's SHA-256). The shards' arrays are then deleted, so the store is the only copy; a
    later run takes finished cells from the store when ``params.json`` vouches for it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pywt
from scipy import fft as sfft
from scipy import signal as sps
from tqdm import tqdm

from .config import CLASSES, dataset_dir, logger
from .io import (file_sha256, load_npy, save_npy_atomic, write_csv_atomic, write_npy_rows_atomic, write_sidecar,
                 write_text_atomic)
from .sweeps import DEFAULT_OFFSETS_PA, SelectionError, count_spikes_in_window, detect_spikes, select_suprathreshold_sweeps

WAVELET = "cmor1.5-1.0"
REFERENCE_FLOOR = 1e-4  # smallest normalisation reference, relative to the cell's peak modulus
# bump when the images a parameter set gives change (v2: reference floor)
TRANSFORM_VERSION = 2


@dataclass(frozen=True)
class ScalogramParams:
    """Every parameter of the scalogram stage (names match the notebook's parameters)."""

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
            raise ValueError(f"signal must be 'voltage' or 'spikes', got {self.signal!r}")
        for name in ("n_times", "n_scales", "store_times"):
            if int(getattr(self, name)) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        if self.store_times > self.n_times:
            raise ValueError("store_times cannot exceed n_times")
        if self.pre_s < 0 or self.post_s < 0:
            raise ValueError("pre_s and post_s must be >= 0")
        if self.f_min_hz is not None and self.f_max_hz is not None and not 0 < self.f_min_hz < self.f_max_hz:
            raise ValueError(f"need 0 < f_min_hz < f_max_hz, got {self.f_min_hz}, {self.f_max_hz}")

    def frequencies_hz(self, window_s: float) -> np.ndarray:
        """Log-spaced analysis frequencies (ascending) for a window of ``window_s`` seconds."""
        fs = self.n_times / window_s
        f_min = self.f_min_hz if self.f_min_hz is not None else 2.0 / window_s
        f_max = self.f_max_hz if self.f_max_hz is not None else fs / 4.0
        if f_max > fs / 2:
            raise ValueError(f"f_max_hz={f_max} exceeds the Nyquist frequency {fs / 2:g} Hz of the resampled signal")
        return np.geomspace(f_min, f_max, self.n_scales)

    def hash(self) -> str:
        # the transform's version is part of the key, so shards from older code are not reused
        key = {**asdict(self), "transform_version": TRANSFORM_VERSION}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------- transforms

def resample_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resample each row onto ``n_out`` equal bins: bin means when shrinking, linear when growing."""
    x = np.atleast_2d(x)
    n_in = x.shape[1]
    if n_in == n_out:
        return x.copy()
    if n_in % n_out == 0:  # whole bins: a plain mean (the same bin means, without the cumulative sum)
        return x.reshape(x.shape[0], n_out, n_in // n_out).mean(axis=2)
    if n_in > n_out:
        cs = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1, dtype=np.float64)], axis=1)
        edges = np.linspace(0.0, n_in, n_out + 1)
        i0 = np.minimum(np.floor(edges).astype(int), n_in - 1)
        frac = edges - i0
        at_edges = cs[:, i0] * (1 - frac) + cs[:, i0 + 1] * frac
        return np.diff(at_edges, axis=1) / np.diff(edges)
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return np.stack([np.interp(centres, np.arange(n_in), row) for row in x])


@functools.lru_cache(maxsize=64)
def _pywt_kernels(wavelet: str, scales: tuple[float, ...], precision: int) -> tuple[tuple[np.ndarray, int], ...]:
    """The filters ``pywt.cwt`` applies, one per scale: ``(kernel, output offset)``.

    ``pywt.cwt`` convolves the signal with the integrated wavelet sampled at each scale, takes the
    first difference and trims the ends; the difference of a convolution is the convolution with
    the differenced kernel, so each scale is one linear filter ``-sqrt(scale) * diff([0, g, 0])``
    whose output starts ``offset`` samples in.
    """
    w = pywt.ContinuousWavelet(wavelet)
    int_psi, x = pywt.integrate_wavelet(w, precision=precision)
    int_psi = np.conj(int_psi) if w.complex_cwt else int_psi
    step = x[1] - x[0]
    kernels = []
    for scale in scales:
        j = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
        g = int_psi[j[j < int_psi.size]][::-1]
        h = -np.sqrt(scale) * np.diff(g, prepend=0, append=0)
        half = (len(g) - 2) / 2
        kernels.append((h, (math.floor(half) if half > 0 else 0) + 1))
    return tuple(kernels)


@functools.lru_cache(maxsize=64)
def _kernel_bank_fft(wavelet: str, scales: tuple[float, ...], precision: int, n_fft: int,
                     lag_min: int, lag_max: int) -> np.ndarray:
    """FFT of every scale's kernel, placed by lag (so all outputs start at 0) and cut to the lags used."""
    bank = np.zeros((len(scales), n_fft), dtype=complex)
    for row, (h, offset) in zip(bank, _pywt_kernels(wavelet, scales, precision)):
        lags = np.arange(len(h)) - offset
        used = (lags >= lag_min) & (lags <= lag_max)
        row[lags[used] % n_fft] = h[used]
    return sfft.fft(bank, axis=1)


def pywt_cwt_batched(x: np.ndarray, scales: np.ndarray, wavelet: str = WAVELET, precision: int = 12,
                     keep: tuple[int, int] | None = None) -> np.ndarray:
    """``pywt.cwt(x, scales, wavelet, method="fft")[0][..., start:stop]``, all scales in one batched FFT.

    The same wavelet, sampling and trimming as PyWavelets (equal to it to rounding, ~1e-14; tested),
    without its per-scale loop of one FFT pair each. Each scale's filter is placed by lag in one
    cached kernel bank, so a call is one forward FFT of the signal and one batched inverse FFT.
    Only output columns ``keep = (start, stop)`` are returned (default: all); kernel taps that
    cannot reach them are dropped and the FFT is just long enough that no kept column wraps
    around. That matters for low frequencies, whose wavelets are longer than the signal itself.

    ``x`` is (samples,) or (channels, samples); returns complex (scales, stop - start) or
    (channels, scales, stop - start).
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    start, stop = keep if keep is not None else (0, n)
    if not 0 <= start < stop <= n:
        raise ValueError(f"keep={keep} outside 0..{n}")
    scales = tuple(float(s) for s in np.atleast_1d(scales))
    kernels = _pywt_kernels(wavelet, scales, precision)
    # output t reads x[t - lag]: the kept columns need lags in [start - (n - 1), stop - 1]
    lag_min, lag_max = start - (n - 1), stop - 1
    lo = max(lag_min, min(-offset for _, offset in kernels))
    hi = min(lag_max, max(len(h) - 1 - offset for h, offset in kernels))
    # a circular convolution of period P is exact at the kept columns once no used lag is
    # ambiguous modulo P: P > (largest used lag - smallest needed) and vice versa
    # (2-3-5-smooth lengths: pocketfft is slower on the 7- and 11-factor sizes next_fast_len allows)
    n_fft = sfft.next_fast_len(max(n, stop, hi - lag_min + 1, lag_max - lo + 1), real=True)
    bank = _kernel_bank_fft(wavelet, scales, precision, n_fft, lag_min, lag_max)
    spectrum = sfft.fft(x, n_fft, axis=-1)[..., None, :]
    return sfft.ifft(spectrum * bank, axis=-1)[..., start:stop]


def cwt_modulus(x: np.ndarray, sampling_rate_hz: float, freqs_hz: np.ndarray, wavelet: str = WAVELET) -> np.ndarray:
    """Full-rate CWT modulus (rows = ``freqs_hz``), with reflect padding against edge effects.

    The padding is half the signal, capped at half the longest wavelet: a coefficient only sees
    samples within half a wavelet length on either side, so a longer reflection would not change
    any value inside the window (tested).
    """
    x = np.asarray(x, dtype=float) - np.mean(x)
    n = len(x)
    scales = pywt.frequency2scale(wavelet, np.asarray(freqs_hz) / sampling_rate_hz)
    longest = max(len(h) for h, _ in _pywt_kernels(wavelet, tuple(float(s) for s in scales), 12))
    pad = min(n - 1, n // 2, longest // 2 + 2)
    xp = np.pad(x, pad, mode="reflect")
    return np.abs(pywt_cwt_batched(xp, scales, wavelet, keep=(pad, pad + n)))


def multirate_cwt_modulus(x: np.ndarray, sampling_rate_hz: float, freqs_hz: np.ndarray, n_out: int,
                          wavelet: str = WAVELET) -> np.ndarray:
    """CWT modulus on ``n_out`` time bins, each octave computed at a matching decimated rate.

    Rows follow ``freqs_hz``. Frequencies above 1/16 of the current rate (at least 16 samples per
    wavelet cycle, so the sampled wavelet keeps its shape) are done at that rate; the signal is then
    halved (FIR, zero-phase) until every frequency is covered.
    """
    freqs = np.asarray(freqs_hz, dtype=float)
    out = np.empty((len(freqs), n_out), dtype=np.float64)
    todo = np.ones(len(freqs), dtype=bool)
    sig = np.asarray(x, dtype=float) - np.mean(x)
    fs = float(sampling_rate_hz)
    level = 0
    while todo.any():
        can_decimate = len(sig) >= 2 * max(n_out, 64)
        band = todo & ((freqs > fs / 16.0) | (not can_decimate))
        if band.any():
            # pywt's CWT sums over samples with a 1/sqrt(scale) weight, so at half the rate (half
            # the samples, half the scale) the modulus is 1/sqrt(2) smaller: undo it per level
            gain = np.sqrt(2.0) ** level
            out[band] = gain * resample_rows(cwt_modulus(sig, fs, freqs[band], wavelet), n_out)
            todo &= ~band
        if todo.any():
            sig = sps.decimate(sig, 2, ftype="fir", zero_phase=True)
            fs /= 2.0
            level += 1
    return out


def resample_window(t_s: np.ndarray, v: np.ndarray, start_s: float, end_s: float, n_times: int) -> np.ndarray:
    """The trace between ``start_s`` and ``end_s``, anti-alias resampled to ``n_times`` points."""
    rate = 1.0 / float(np.median(np.diff(t_s[: min(len(t_s), 1000)])))
    i0 = int(round((start_s - t_s[0]) * rate))
    i1 = int(round((end_s - t_s[0]) * rate))
    if i0 < 0 or i1 > len(v):
        raise SelectionError("sweep shorter than the analysis window", f"needs {start_s:.3f}-{end_s:.3f} s")
    seg = np.asarray(v[i0:i1], dtype=float)
    ratio = Fraction(n_times, len(seg)).limit_denominator(2000)
    res = sps.resample_poly(seg, ratio.numerator, ratio.denominator, padtype="line")
    if len(res) >= n_times:
        return res[:n_times]
    return np.pad(res, (0, n_times - len(res)), mode="edge")


def bin_spike_train(spike_times_s: np.ndarray, start_s: float, end_s: float, n_times: int) -> np.ndarray:
    """Spike train as a rate (Hz) in ``n_times`` equal bins between ``start_s`` and ``end_s``."""
    counts, edges = np.histogram(np.asarray(spike_times_s, dtype=float), bins=n_times, range=(start_s, end_s))
    return counts / np.diff(edges)


def scalogram_image(signals: list[np.ndarray], sampling_rate_hz: float, freqs_hz: np.ndarray, store_times: int,
                    wavelet: str = WAVELET) -> np.ndarray:
    """Stack the CWT moduli of the channel signals, log-compress and scale to the cell's maximum.

    Returns float32 (channels, scales, store_times) in [0, 1]. A cell whose signals are flat
    (zero modulus everywhere) is skipped with a :class:`SelectionError`.
    """
    # one channel at a time: batching both channels into one (channels, scales, samples) complex
    # array outgrew the CPU cache and ran slower here than two single-channel calls
    img = np.stack([multirate_cwt_modulus(s, sampling_rate_hz, freqs_hz, store_times, wavelet) for s in signals])
    if not np.isfinite(img).all():
        raise SelectionError("non-finite scalogram")
    # log compression relative to the cell's median modulus: the slow step response would
    # otherwise hold nearly all of the dynamic range and leave spikes near zero
    peak = float(img.max())
    if peak <= 0:
        raise SelectionError("flat signal", "zero wavelet modulus in every channel")
    ref = max(float(np.median(img)), REFERENCE_FLOOR * peak)
    img = np.log1p(img / ref)
    return (img / float(img.max())).astype(np.float32)


# -------------------------------------------------------------------------------- one cell at a time

def cell_voltage_signals(cell_sweeps: pd.DataFrame, root: Path, params: ScalogramParams) -> tuple[list[np.ndarray], dict]:
    """Select a cell's sweeps (ipfx spike detection) and return the resampled voltage windows."""
    from .recordings import load_sweep

    ls = cell_sweeps[(cell_sweeps["stimulus_kind"] == "Long Square")].dropna(subset=["amplitude_pa", "stim_start_s"])
    if "sweep_qc" in ls.columns:
        ls = ls[ls["sweep_qc"] == "ok"]  # truncated sweeps and the like are left out (counted in notebook 01)
    ls = ls[ls["amplitude_pa"] > 0].sort_values(["amplitude_pa", "sweep_number"]).copy()
    if ls.empty:
        raise SelectionError("no depolarizing long-square sweep")
    reach = None
    n_spikes, nan_sweeps = [], 0
    cache: dict[int, object] = {}
    for row in ls.itertuples(index=False):
        if reach is not None and row.amplitude_pa > reach:
            n_spikes.append(np.nan)  # beyond every target: not needed
            continue
        sw = load_sweep(row._asdict(), root)
        if not np.isfinite(sw.v_mv).all():
            nan_sweeps += 1
            n_spikes.append(np.nan)
            continue
        spikes = detect_spikes(sw.t_s, sw.v_mv, sw.i_pa, row.stim_start_s, row.stim_end_s)
        n = len(spikes)
        n_spikes.append(n)
        cache[int(row.sweep_number)] = sw
        if n >= 1 and reach is None:
            reach = row.amplitude_pa + max(params.offsets_pa) + params.max_distance_pa
    ls["n_spikes"] = n_spikes
    sel = select_suprathreshold_sweeps(ls, params.offsets_pa, params.max_distance_pa)
    signals, starts = [], []
    for sn in sel.sweep_numbers:
        row = ls[ls["sweep_number"] == sn].iloc[0]
        sw = cache[sn]
        start, end = float(row["stim_start_s"]) - params.pre_s, float(row["stim_end_s"]) + params.post_s
        signals.append(resample_window(sw.t_s, sw.v_mv, start, end, params.n_times))
        starts.append(float(row["stim_start_s"]))
    meta = {"rheobase_pa": sel.rheobase_pa, "rheobase_sweep": sel.rheobase_sweep, "nan_sweeps": nan_sweeps,
            **{f"sweep_ch{k}": s for k, s in enumerate(sel.sweep_numbers)},
            **{f"amplitude_ch{k}_pa": a for k, a in enumerate(sel.amplitudes_pa)},
            **{f"stim_start_ch{k}_s": s for k, s in enumerate(starts)}}
    return signals, meta


def cell_spike_signals(trains: pd.DataFrame, params: ScalogramParams, epochs: tuple[int, ...] = (2, 3)) -> tuple[list[np.ndarray], dict]:
    """Channels from spike trains: one per stimulus epoch, the binned rate averaged over repeats."""
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


def _process_cell(job: tuple) -> tuple[int, str, dict]:
    """Worker: compute one cell's scalogram into its shard (or record why it was skipped)."""
    sid, rows, root, params_dict, freqs, window_s, shard_dir = job
    params = ScalogramParams(**params_dict)
    shard_dir = Path(shard_dir)
    try:
        if params.signal == "spikes":
            if "spike_times_s" in rows.columns:
                signals, meta = cell_spike_signals(rows, params)
            else:
                signals, meta = _voltage_sweeps_as_spike_signals(rows, Path(root), params)
        else:
            signals, meta = cell_voltage_signals(rows, Path(root), params)
        fs = params.n_times / window_s
        img = scalogram_image(signals, fs, freqs, params.store_times, params.wavelet)
        save_npy_atomic(img.astype(np.float16), shard_dir / f"{sid}.npy")
        status = "ok"
    except SelectionError as exc:
        meta, status = {"detail": str(exc)}, exc.reason
    except Exception as exc:  # a broken file must not stop the cohort; it is counted in qc.csv
        meta, status = {"detail": f"{type(exc).__name__}: {exc}"[:300]}, f"error: {type(exc).__name__}"
    write_text_atomic(shard_dir / f"{sid}.json", json.dumps({"status": status, **meta}, default=float))
    return sid, status, meta


def _voltage_sweeps_as_spike_signals(rows: pd.DataFrame, root: Path, params: ScalogramParams) -> tuple[list[np.ndarray], dict]:
    """``SIGNAL=spikes`` on voltage recordings: ipfx spike times of the selected sweeps, binned."""
    from .recordings import load_sweep

    sig_v, meta = cell_voltage_signals(rows, root, params)  # performs the selection
    signals = []
    for k in range(len(params.offsets_pa)):
        row = rows[rows["sweep_number"] == meta[f"sweep_ch{k}"]].iloc[0]
        sw = load_sweep(row.to_dict(), root)
        spikes = detect_spikes(sw.t_s, sw.v_mv, sw.i_pa, None, None)
        t = spikes["threshold_t"].to_numpy() if len(spikes) else np.array([])
        start = float(row["stim_start_s"])
        signals.append(bin_spike_train(t - start, -params.pre_s, float(row["stim_end_s"]) - start + params.post_s, params.n_times))
    return signals, meta


# -------------------------------------------------------------------------------------- the stage

def compute_scalograms(dataset: str, data_dir: str | os.PathLike | None = None, params: ScalogramParams = ScalogramParams(),
                       seed: int = 0, n_jobs: int = 2, progress: bool = True) -> dict:
    """Compute (or resume) the scalograms of every labelled cell of ``dataset`` and consolidate the store.

    Reads ``cells.csv`` and ``sweeps.csv`` (or ``spike_trains.parquet``); writes ``scalograms/``.
    Returns a dict with ``index`` (DataFrame), ``qc`` (DataFrame), ``store`` (path).
    """
    from .recordings import read_spike_trains

    ddir = dataset_dir(dataset, data_dir)
    cells = pd.read_csv(ddir / "cells.csv")
    cells = cells[cells["label"].isin(CLASSES) & (cells["qc_status"] == "ok")]
    spike_path, sweep_path = ddir / "spike_trains.parquet", ddir / "sweeps.csv"
    if spike_path.exists():
        table, input_path = read_spike_trains(spike_path), spike_path
        window_s = float((table["epoch_end_s"] - table["epoch_start_s"]).median()) + params.pre_s + params.post_s
        if params.signal != "spikes":
            raise ValueError(f"{dataset} has spike times only: use SIGNAL='spikes'")
    else:
        table, input_path = pd.read_csv(sweep_path), sweep_path
        ls = table[table["stimulus_kind"] == "Long Square"]
        window_s = float((ls["stim_end_s"] - ls["stim_start_s"]).median()) + params.pre_s + params.post_s
    freqs = params.frequencies_hz(window_s)
    out_dir = ddir / "scalograms"
    shard_dir = out_dir / f"cells-{params.hash()}"
    shard_dir.mkdir(parents=True, exist_ok=True)
    groups = dict(tuple(table.groupby("specimen_id")))
    stored = stored_rows(out_dir, shard_dir)
    jobs, results = [], {}
    for sid in cells["specimen_id"].astype(int):
        done = shard_dir / f"{sid}.json"
        if done.exists():
            rec = json.loads(done.read_text())
            if rec["status"] != "ok" or (shard_dir / f"{sid}.npy").exists() or sid in stored:
                results[sid] = (rec.pop("status"), rec)
                continue
        rows = groups.get(sid)
        if rows is None:
            results[sid] = ("no sweeps", {})
            continue
        jobs.append((sid, rows, str(ddir / "raw"), asdict(params), freqs, window_s, str(shard_dir)))
    logger.info("scalograms: %d cells, %d already done, %d to compute", len(cells), len(results), len(jobs))
    if jobs:
        if n_jobs > 1:
            with ProcessPoolExecutor(max_workers=n_jobs) as pool:
                for sid, status, meta in tqdm(pool.map(_process_cell, jobs, chunksize=2), total=len(jobs),
                                              desc="scalograms", disable=not progress):
                    results[sid] = (status, meta)
        else:
            for job in tqdm(jobs, desc="scalograms", disable=not progress):
                sid, status, meta = _process_cell(job)
                results[sid] = (status, meta)
    return consolidate_store(ddir, cells, results, shard_dir, params, freqs, window_s, seed, input_path, stored)


def stored_rows(out_dir: Path, shard_dir: Path) -> dict[int, int]:
    """``specimen_id -> row`` of the consolidated store, if it can stand in for ``shard_dir``'s shards.

    Trusted only when ``params.json`` (written last) names the same shard folder and records the
    SHA-256 of the store file as it is now: a store replaced by a run that stopped before its
    ``params.json`` was written, or changed by hand, gives ``{}`` and its cells are recomputed.
    """
    meta_path, store_path, index_path = out_dir / "params.json", out_dir / "scalograms.npy", out_dir / "index.csv"
    if not (meta_path.exists() and store_path.exists() and index_path.exists()):
        return {}
    meta = json.loads(meta_path.read_text())
    if meta.get("params", {}).get("shard_dir") != shard_dir.name or meta.get("store_sha256") != file_sha256(store_path):
        return {}
    index = pd.read_csv(index_path)
    if index.empty:
        return {}
    return dict(zip(index["specimen_id"].astype(int), index["row"].astype(int)))


def consolidate_store(ddir: Path, cells: pd.DataFrame, results: dict, shard_dir: Path, params: ScalogramParams,
                      freqs: np.ndarray, window_s: float, seed: int, input_path: Path,
                      stored: dict[int, int] | None = None) -> dict:
    """Write the store, ``index.csv``, ``qc.csv`` and ``params.json``; then retire the per-cell shards.

    Each ok cell's image comes from its shard, or from the previous store (``stored``, see
    :func:`stored_rows`). The store is filled on disk (memory-mapped), so a large cohort is never
    held in memory. Once ``params.json`` is written the shards' ``.npy`` files are deleted (their
    ``.json`` status files stay): the store is then the only copy, 1/20 of the paper's bytes.
    """
    stored = stored or {}
    out_dir = ddir / "scalograms"
    labels = cells.set_index("specimen_id")["label"]
    qc_rows, index_rows = [], []
    for sid in sorted(results):
        status, meta = results[sid]
        qc_rows.append({"specimen_id": sid, "label": labels.get(sid), "status": status, "detail": meta.get("detail", "")})
        if status == "ok":
            index_rows.append({"specimen_id": sid, "label": labels.get(sid), **{k: v for k, v in meta.items() if k != "detail"}})
    index = pd.DataFrame(index_rows)
    qc = pd.DataFrame(qc_rows, columns=["specimen_id", "label", "status", "detail"])
    ids = [int(s) for s in index["specimen_id"]] if len(index) else []
    previous = load_npy(out_dir / "scalograms.npy", mmap=True) if stored else None

    def image(sid: int) -> np.ndarray:
        shard = shard_dir / f"{sid}.npy"
        return load_npy(shard) if shard.exists() else np.asarray(previous[stored[sid]])

    n_channels = image(ids[0]).shape[0] if ids else 2
    shape = (len(ids), n_channels, params.n_scales, params.store_times)
    store_path = write_npy_rows_atomic(out_dir / "scalograms.npy", shape, np.float16, (image(sid) for sid in ids))
    del previous  # the old file is replaced; drop the mapping of it
    if len(index):
        index.insert(1, "row", np.arange(len(index)))
    save_npy_atomic(freqs, out_dir / "freqs_hz.npy")
    times = (np.arange(params.store_times) + 0.5) * window_s / params.store_times - params.pre_s
    save_npy_atomic(times, out_dir / "times_s.npy")
    write_csv_atomic(qc, out_dir / "qc.csv")
    write_csv_atomic(index, out_dir / "index.csv")
    counts = qc["status"].value_counts().to_dict()
    write_sidecar(out_dir, {**asdict(params), "window_s": window_s, "f_min_hz_used": float(freqs[0]),
                            "f_max_hz_used": float(freqs[-1]), "shard_dir": shard_dir.name},
                  seed=seed, inputs={"cells.csv": ddir / "cells.csv", input_path.name: input_path},
                  stage="scalograms", extra={"qc_counts": counts, "n_cells": int(len(index)),
                                             "bytes_per_cell": int(np.prod(shape[1:])) * 2,
                                             "store_sha256": file_sha256(store_path)},
                  path=out_dir / "params.json")
    for sid in ids:  # the store now holds these images: retire the shards
        (shard_dir / f"{sid}.npy").unlink(missing_ok=True)
    logger.info("scalograms: %d cells stored, qc %s", len(index), counts)
    return {"index": index, "qc": qc, "store": store_path}


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
        d = dataset_dir(dataset, data_dir) / "scalograms"
        if not (d / "index.csv").exists():
            raise FileNotFoundError(f"no scalograms in {d}; run notebook 02 (make scalograms DATASET={dataset})")
        return cls(images=load_npy(d / "scalograms.npy", mmap=mmap), index=pd.read_csv(d / "index.csv"),
                   freqs_hz=load_npy(d / "freqs_hz.npy"), times_s=load_npy(d / "times_s.npy"),
                   params=json.loads((d / "params.json").read_text()))

    def get(self, specimen_id: int) -> np.ndarray:
        row = self.index.loc[self.index["specimen_id"] == specimen_id, "row"]
        if row.empty:
            raise KeyError(f"specimen {specimen_id} has no scalogram")
        return np.asarray(self.images[int(row.iloc[0])], dtype=np.float32)
