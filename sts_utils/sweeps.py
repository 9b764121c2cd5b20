"""Sweeps and spikes: spike detection with ipfx and the choice of the two suprathreshold sweeps.

Rheobase is the smallest long-square amplitude with at least one spike inside the step; the STS
channels are the sweeps nearest to ``rheobase + OFFSETS_PA`` (default ``[40, 50]``, the paper's
choice). Ties go to the higher amplitude, and the two channels are distinct sweeps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_OFFSETS_PA = (40.0, 50.0)


class SelectionError(ValueError):
    """A cell without the sweeps STS needs; ``reason`` is a short, countable category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


def detect_spikes(t_s: np.ndarray, v_mv: np.ndarray, i_pa: np.ndarray | None, start_s: float | None = None,
                  end_s: float | None = None) -> pd.DataFrame:
    """Spikes of one sweep with ipfx's ``SpikeFeatureExtractor`` (its documented defaults).

    The 10 kHz Bessel filter that ipfx applies by default needs a sampling rate above 20 kHz;
    slower recordings are analysed unfiltered. Returns ipfx's spike table (one row per spike,
    ``threshold_t`` in s, ``width`` in s, ...); an empty table when there is none.

    Raises
    ------
    ValueError
        for a trace with NaNs (ipfx would silently return garbage).
    """
    from ipfx.feature_extractor import SpikeFeatureExtractor

    v = np.asarray(v_mv, dtype=float)
    t = np.asarray(t_s, dtype=float)
    if not np.isfinite(v).all():
        raise ValueError("voltage trace contains NaN or inf")
    rate = 1.0 / float(np.median(np.diff(t[:100]))) if len(t) > 1 else 0.0
    filt = 10.0 if rate > 20_000 else None
    i = np.zeros_like(v) if i_pa is None else np.asarray(i_pa, dtype=float)
    ext = SpikeFeatureExtractor(start=start_s, end=end_s, filter=filt)
    return ext.process(t, v, i)


def count_spikes_in_window(spike_times_s: np.ndarray, start_s: float, end_s: float) -> int:
    t = np.asarray(spike_times_s, dtype=float)
    return int(((t >= start_s) & (t <= end_s)).sum())


@dataclass
class Selection:
    """The two sweeps chosen for a cell."""

    rheobase_pa: float
    rheobase_sweep: int
    sweep_numbers: tuple[int, ...]
    amplitudes_pa: tuple[float, ...]


def find_rheobase(sweeps: pd.DataFrame) -> tuple[float, int]:
    """Rheobase (pA) and its sweep: the smallest amplitude with ``n_spikes >= 1``.

    ``sweeps`` needs ``sweep_number``, ``amplitude_pa`` and ``n_spikes`` (spikes inside the step).
    """
    usable = sweeps.dropna(subset=["amplitude_pa", "n_spikes"])
    spiking = usable[usable["n_spikes"] >= 1].sort_values(["amplitude_pa", "sweep_number"])
    if spiking.empty:
        raise SelectionError("no spiking long-square sweep")
    first = spiking.iloc[0]
    return float(first["amplitude_pa"]), int(first["sweep_number"])


def select_suprathreshold_sweeps(
    sweeps: pd.DataFrame, offsets_pa: tuple[float, ...] | list[float] = DEFAULT_OFFSETS_PA, max_distance_pa: float = 20.0
) -> Selection:
    """Choose one sweep per offset: nearest to ``rheobase + offset``, ties to the higher amplitude.

    Parameters
    ----------
    sweeps
        One cell's long-square sweeps: ``sweep_number``, ``amplitude_pa``, ``n_spikes`` (NaN for a
        sweep that could not be analysed, e.g. NaNs in its trace; such sweeps are never chosen).
    offsets_pa
        Offsets above rheobase, one per channel.
    max_distance_pa
        A chosen sweep may be at most this far from its target amplitude.

    Raises
    ------
    SelectionError
        ``no spiking long-square sweep``, ``no sweep near rheobase+X pA`` or ``too few distinct sweeps``.
    """
    offsets = [float(o) for o in offsets_pa]
    if not offsets:
        raise ValueError("offsets_pa must name at least one offset")
    if any(not np.isfinite(o) or o < 0 for o in offsets):
        raise ValueError(f"offsets_pa must be finite and >= 0, got {offsets_pa}")
    rheobase, rheo_sweep = find_rheobase(sweeps)
    usable = sweeps.dropna(subset=["amplitude_pa", "n_spikes"])
    usable = usable[usable["amplitude_pa"] >= rheobase]
    chosen: list[int] = []
    amps: list[float] = []
    for off in offsets:
        target = rheobase + off
        cand = usable[~usable["sweep_number"].isin(chosen)].copy()
        if cand.empty:
            raise SelectionError("too few distinct sweeps", f"{len(offsets)} needed")
        cand["distance"] = (cand["amplitude_pa"] - target).abs()
        # nearest first; among equals the higher amplitude; then the later sweep (a repeat)
        cand = cand.sort_values(["distance", "amplitude_pa", "sweep_number"], ascending=[True, False, False])
        best = cand.iloc[0]
        if best["distance"] > max_distance_pa:
            raise SelectionError(f"no sweep near rheobase+{off:g} pA", f"nearest is {best['amplitude_pa'] - rheobase:+g} pA")
        chosen.append(int(best["sweep_number"]))
        amps.append(float(best["amplitude_pa"]))
    return Selection(rheobase, rheo_sweep, tuple(chosen), tuple(amps))


def spike_count_table(cell_sweeps: pd.DataFrame, root) -> pd.DataFrame:
    """Spikes inside the step of every long-square sweep of one cell (ipfx detection).

    Returns ``sweep_number``, ``amplitude_pa``, ``n_spikes``, ``rate_hz`` (spikes / step duration),
    and ``n_spikes_after_step`` (rebound spikes within 0.2 s after the step).
    """
    from .recordings import load_sweep

    rows = []
    ls = cell_sweeps[cell_sweeps["stimulus_kind"] == "Long Square"].dropna(subset=["amplitude_pa", "stim_start_s"])
    for r in ls.sort_values("amplitude_pa").itertuples(index=False):
        sw = load_sweep(r._asdict(), root)
        if not np.isfinite(sw.v_mv).all():
            continue
        spikes = detect_spikes(sw.t_s, sw.v_mv, sw.i_pa, None, None)
        t = spikes["threshold_t"].to_numpy() if len(spikes) else np.array([])
        n_in = count_spikes_in_window(t, r.stim_start_s, r.stim_end_s)
        rows.append({"sweep_number": int(r.sweep_number), "amplitude_pa": float(r.amplitude_pa), "n_spikes": n_in,
                     "rate_hz": n_in / float(r.stim_end_s - r.stim_start_s),
                     "n_spikes_after_step": count_spikes_in_window(t, r.stim_end_s + 1e-3, r.stim_end_s + 0.2),
                     "width_s": float(spikes["width"].iloc[0]) if len(spikes) and "width" in spikes else np.nan})
    return pd.DataFrame(rows)
