"""Spikes and sweep choice: ipfx spike detection, one rheobase, the two suprathreshold sweeps.

Pure computation: sweeps come in through a ``load`` callable (sweep-table row -> sweep), so this
module reads no file itself. Every stage that needs spike counts, a rheobase or the chosen sweeps
(the scalogram stage, the f–I curves of notebook 01, the tests of the simulated cohort) calls
:func:`analyse_long_squares` and :func:`select_suprathreshold_sweeps`; there is no second definition.

Rheobase is the smallest long-square amplitude with at least one spike inside the step; the STS
channels are the sweeps nearest to ``rheobase + OFFSETS_PA`` (default ``[40, 50]``, the paper's
choice). Ties go to the higher amplitude, and the channels are distinct sweeps.

Real protocols are coarser than the Allen one: a grid of 25-100 pA bounds the true rheobase only
between its last silent and first spiking step, and may start above it. :func:`rheobase_note`
says which; the tolerance for a chosen sweep is the larger of ``max_distance_pa`` and half the
grid's step (:func:`grid_step_pa`), since no sweep of such a protocol can be nearer (the demo's
20 pA grid keeps the 20 pA tolerance).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from ipfx.feature_extractor import SpikeFeatureExtractor

from sts_utils.core.errors import SelectionError

DEFAULT_OFFSETS_PA = (40.0, 50.0)
#: window after the step in which spikes count as rebound spikes (s)
REBOUND_WINDOW_S = 0.2


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
    """Spikes with ``start_s <= t <= end_s`` (s)."""
    t = np.asarray(spike_times_s, dtype=float)
    return int(((t >= start_s) & (t <= end_s)).sum())


#: columns of :func:`analyse_long_squares`' table
ANALYSIS_COLUMNS = ["sweep_number", "amplitude_pa", "stim_start_s", "stim_end_s", "n_spikes", "rate_hz",
                    "n_spikes_after_step", "width_s"]


@dataclass
class LongSquareAnalysis:
    """Spike counts of a cell's depolarizing long-square sweeps, and the sweeps that were loaded.

    Attributes
    ----------
    table
        One row per sweep (:data:`ANALYSIS_COLUMNS`), by amplitude: ``n_spikes`` inside the step (NaN
        for a sweep that was not analysed: a trace with NaNs, or beyond every target amplitude),
        ``rate_hz`` = spikes / step duration, ``n_spikes_after_step`` within :data:`REBOUND_WINDOW_S`
        after it, ``width_s`` of the first spike.
    sweeps
        ``sweep_number -> sweep`` of every analysed sweep (so the chosen ones are not read again).
    spike_times_s
        ``sweep_number -> threshold times (s)`` of every spike ipfx found in the sweep.
    nan_sweeps
        Sweeps left out because their trace has NaNs.
    """

    table: pd.DataFrame
    sweeps: dict[int, Any] = field(default_factory=dict)
    spike_times_s: dict[int, np.ndarray] = field(default_factory=dict)
    nan_sweeps: int = 0


def analyse_long_squares(rows: pd.DataFrame, load: Callable[[dict], Any], stop_after_pa: float | None = None
                         ) -> LongSquareAnalysis:
    """Detect the spikes of a cell's long-square sweeps, in increasing amplitude.

    Parameters
    ----------
    rows
        The cell's sweep-table rows with ``sweep_number``, ``amplitude_pa`` (pA), ``stim_start_s``,
        ``stim_end_s`` (s). Rows without amplitude or onset are ignored.
    load
        ``load(row_dict)`` returns the sweep (``t_s`` in s, ``v_mv`` in mV, ``i_pa`` in pA).
    stop_after_pa
        When given, sweeps more than this many pA above the rheobase are not loaded (their
        ``n_spikes`` stays NaN): the sweep choice never needs them.

    Each sweep is detected once over its whole length; spikes are then counted inside the step.
    """
    ls = rows.dropna(subset=["amplitude_pa", "stim_start_s"]).sort_values(["amplitude_pa", "sweep_number"])
    out, reach = [], None
    result = LongSquareAnalysis(table=pd.DataFrame(columns=ANALYSIS_COLUMNS))
    for r in ls.itertuples(index=False):
        row = {"sweep_number": int(r.sweep_number), "amplitude_pa": float(r.amplitude_pa),
               "stim_start_s": float(r.stim_start_s), "stim_end_s": float(r.stim_end_s), "n_spikes": np.nan,
               "rate_hz": np.nan, "n_spikes_after_step": np.nan, "width_s": np.nan}
        out.append(row)
        if reach is not None and r.amplitude_pa > reach:
            continue  # beyond every target: not needed
        sw = load(r._asdict())
        if not np.isfinite(sw.v_mv).all():
            result.nan_sweeps += 1
            continue
        spikes = detect_spikes(sw.t_s, sw.v_mv, sw.i_pa)
        t = spikes["threshold_t"].to_numpy() if len(spikes) else np.array([])
        n_in = count_spikes_in_window(t, r.stim_start_s, r.stim_end_s)
        row.update(n_spikes=n_in, rate_hz=n_in / float(r.stim_end_s - r.stim_start_s),
                   n_spikes_after_step=count_spikes_in_window(t, r.stim_end_s + 1e-3, r.stim_end_s + REBOUND_WINDOW_S),
                   width_s=float(spikes["width"].iloc[0]) if len(spikes) and "width" in spikes else np.nan)
        result.sweeps[int(r.sweep_number)] = sw
        result.spike_times_s[int(r.sweep_number)] = t
        if stop_after_pa is not None and n_in >= 1 and reach is None:
            reach = r.amplitude_pa + stop_after_pa
    result.table = pd.DataFrame(out, columns=ANALYSIS_COLUMNS)
    return result


@dataclass
class Selection:
    """The sweeps chosen for a cell: rheobase (pA) and its sweep, one sweep per offset."""

    rheobase_pa: float
    rheobase_sweep: int
    sweep_numbers: tuple[int, ...]
    amplitudes_pa: tuple[float, ...]
    rheobase_note: str = ""
    tolerance_pa: float = np.nan


def find_rheobase(sweeps: pd.DataFrame) -> tuple[float, int]:
    """Rheobase (pA) and its sweep: the smallest amplitude with ``n_spikes >= 1``.

    ``sweeps`` needs ``sweep_number``, ``amplitude_pa`` and ``n_spikes`` (spikes inside the step).

    Raises
    ------
    SelectionError
        ``no spiking long-square sweep``.
    """
    usable = sweeps.dropna(subset=["amplitude_pa", "n_spikes"])
    spiking = usable[usable["n_spikes"] >= 1].sort_values(["amplitude_pa", "sweep_number"])
    if spiking.empty:
        raise SelectionError("no spiking long-square sweep")
    first = spiking.iloc[0]
    return float(first["amplitude_pa"]), int(first["sweep_number"])


def grid_step_pa(amplitudes_pa) -> float:
    """The protocol's amplitude step (pA): the median spacing of its distinct amplitudes; NaN with fewer than two."""
    a = np.unique(np.round(np.asarray(amplitudes_pa, dtype=float), 0))
    return float(np.median(np.diff(a))) if a.size > 1 else np.nan


def selection_tolerance_pa(amplitudes_pa, max_distance_pa: float) -> float:
    """How far (pA) a chosen sweep may be from its target: ``max_distance_pa``, or half the grid step of the
    protocol's depolarizing amplitudes when that is larger (no sweep of the protocol can be nearer)."""
    a = np.asarray(amplitudes_pa, dtype=float)
    step = grid_step_pa(a[np.isfinite(a) & (a > 0)])
    return max(max_distance_pa, step / 2) if np.isfinite(step) else float(max_distance_pa)


def rheobase_note(sweeps: pd.DataFrame, rheobase_pa: float) -> str:
    """Where the true rheobase lies, given the grid: between the last silent and the first spiking step, or at or below the smallest."""
    usable = sweeps.dropna(subset=["amplitude_pa", "n_spikes"])
    silent = usable[(usable["amplitude_pa"] < rheobase_pa) & (usable["amplitude_pa"] > 0)]
    if silent.empty:
        return f"at or below the smallest depolarizing step ({rheobase_pa:g} pA): the protocol starts above rheobase"
    below = float(silent["amplitude_pa"].max())
    return f"between {below:g} and {rheobase_pa:g} pA (grid step {grid_step_pa(usable['amplitude_pa']):g} pA)"


def check_offsets(offsets_pa) -> tuple[float, ...]:
    """Offsets above rheobase (pA): numbers, finite, >= 0, distinct, at least one."""
    try:
        offsets = tuple(float(o) for o in offsets_pa)
    except (TypeError, ValueError):
        raise ValueError(f"OFFSETS_PA must be a list of numbers in pA, e.g. [40, 50], got {offsets_pa!r}") from None
    if not offsets:
        raise ValueError("OFFSETS_PA must name at least one offset above rheobase (pA), e.g. [40, 50]")
    if any(not np.isfinite(o) or o < 0 for o in offsets):
        raise ValueError(f"OFFSETS_PA must be finite and >= 0 pA, got {list(offsets_pa)}")
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"OFFSETS_PA must be distinct (one sweep per channel), got {list(offsets_pa)}")
    return offsets


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
        Offsets above rheobase (pA), one per channel.
    max_distance_pa
        A chosen sweep may be at most this far from its target amplitude (pA), or half the protocol's
        grid step (:func:`grid_step_pa`) when that is larger.

    Raises
    ------
    SelectionError
        ``no spiking long-square sweep``, ``no sweep near rheobase+X pA`` or ``too few distinct sweeps``.
    """
    offsets = check_offsets(offsets_pa)
    rheobase, rheo_sweep = find_rheobase(sweeps)
    usable = sweeps.dropna(subset=["amplitude_pa", "n_spikes"])
    usable = usable[usable["amplitude_pa"] >= rheobase]
    tolerance = selection_tolerance_pa(sweeps["amplitude_pa"], max_distance_pa)
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
        if best["distance"] > tolerance:
            raise SelectionError(f"no sweep near rheobase+{off:g} pA", f"nearest is {best['amplitude_pa'] - rheobase:+g} pA "
                                 f"(tolerance {tolerance:g} pA)")
        chosen.append(int(best["sweep_number"]))
        amps.append(float(best["amplitude_pa"]))
    return Selection(rheobase, rheo_sweep, tuple(chosen), tuple(amps), rheobase_note(sweeps, rheobase), tolerance)
