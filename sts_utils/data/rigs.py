"""Recordings from other rigs: Axon ABF (pClamp), Igor binary waves, and the shared path into the sweep table.

Stage I/O. Whatever wrote the file, a cell's sweeps become rows of the one sweep table
(:data:`sts_utils.data.tables.SWEEP_COLUMNS`) through :func:`rows_from_traces`: the test step of the
protocol comes from the recorded command or stimulus waveform (:func:`sts_utils.compute.steps.protocol_step`,
a measured noisy current reduced to its step), never from an assumed protocol; each sweep keeps its
own sampling rate; a sweep whose values no membrane or amplifier gives is a counted skip
(``sweep_qc`` names the check), never rescaled.

Channels are chosen by their units, never by their position (in some ABF files the current comes
first); units are converted to pA and mV (:data:`sts_utils.compute.steps.CURRENT_TO_PA`, :data:`sts_utils.compute.steps.VOLTAGE_TO_MV`). A sweep-table
row names its channels in ``response_path`` (voltage) and ``stimulus_path`` (current):

* ``abf``: ``file`` is the ``.abf``; ``adc<k>`` for an input channel, ``dac<k>`` for the command.
  ``sweep_number`` is pClamp's (from 1).
* ``ibw``: ``file`` is the cell's folder of waves (one sweep and channel per ``.ibw``, paired by the
  name they share: ``<protocol>_ch<k>_<n>``); the two paths are the waves' names in that folder.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyabf
from igor2 import binarywave

from sts_utils.core.errors import RecordingError
from sts_utils.data.nwb import Sweep
from sts_utils.compute.steps import CURRENT_TO_PA, MIN_LONG_SQUARE_S, VOLTAGE_TO_MV, plausibility_problem, protocol_step, resting_mv, unit_factor
from sts_utils.data.tables import SWEEP_COLUMNS

# ------------------------------------------------------------------------------ traces -> sweep rows

def rows_from_traces(specimen_id: int, sweeps: list[dict], fmt: str, file: str) -> pd.DataFrame:
    """Sweep-table rows of one cell's sweeps, with the step found in each protocol's current waveforms.

    Parameters
    ----------
    sweeps
        Dicts with ``sweep_number``, ``stimulus_code`` (the protocol's name), ``v_mv``, ``i_pa``,
        ``sampling_rate_hz``, ``response_path``, ``stimulus_path``.
    fmt, file
        The rows' ``format`` and ``file`` (relative to the dataset's or input's root).

    Sweeps of one protocol (``stimulus_code``) are analysed together, so a fixed pre-step is told from
    the stepped epoch. ``sweep_qc`` is ``ok``, ``no step found`` or the failed plausibility check.
    """
    rows = []
    codes = list(dict.fromkeys(sw["stimulus_code"] for sw in sweeps))
    for code in codes:
        group = [sw for sw in sweeps if sw["stimulus_code"] == code]
        step = protocol_step([sw["i_pa"] for sw in group], [sw["sampling_rate_hz"] for sw in group])
        for k, sw in enumerate(group):
            start = end = amp = np.nan
            kind, qc = "unknown", "no step found"
            if step is not None:
                start, end, amp = step.start_s[k], step.end_s[k], step.amplitude_pa[k]
                kind = "Long Square" if end - start >= MIN_LONG_SQUARE_S else "Short Square"
                qc = plausibility_problem(resting_mv(sw["v_mv"], sw["sampling_rate_hz"], start), amp) or "ok"
            rows.append({"specimen_id": int(specimen_id), "sweep_number": int(sw["sweep_number"]), "stimulus_kind": kind,
                         "stimulus_code": code, "amplitude_pa": amp, "sampling_rate_hz": float(sw["sampling_rate_hz"]),
                         "stim_start_s": start, "stim_end_s": end, "sweep_qc": qc, "format": fmt, "file": file,
                         "response_path": sw["response_path"], "stimulus_path": sw["stimulus_path"]})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


# ----------------------------------------------------------------------------------------------- ABF

def _open_abf(path: Path):
    try:
        return pyabf.ABF(str(path))
    except Exception as exc:  # pyabf raises struct.error, IndexError, ValueError... for a damaged header
        raise RecordingError(f"{path}: cannot be read as an Axon ABF file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:100] if str(exc) else 'damaged header'}); "
                             "export it again from pClamp or remove it from the folder") from exc


def abf_channels(abf, path: Path) -> tuple[str, str]:
    """(voltage channel, current source) of an ABF file, chosen by units: ``adc<k>`` / ``dac<k>``.

    The current is the command (DAC 0) when it is in current units, else the one input channel in
    current units (a measured current). The voltage is the input channel in voltage units whose first
    sweep has a plausible resting potential when there are several.

    Raises
    ------
    RecordingError
        No voltage or no current channel, or several plausible voltage channels.
    """
    volts = [k for k, u in enumerate(abf.adcUnits) if unit_factor(u, VOLTAGE_TO_MV)]
    amps = [k for k, u in enumerate(abf.adcUnits) if unit_factor(u, CURRENT_TO_PA)]
    if not volts:
        raise RecordingError(f"{path}: no input channel in voltage units (units {abf.adcUnits}); not a current-clamp recording")
    if len(volts) > 1:
        plausible = []
        for k in volts:
            abf.setSweep(0, channel=k)
            v = abf.sweepY * unit_factor(abf.adcUnits[k], VOLTAGE_TO_MV)
            if not plausibility_problem(float(np.median(v)), 0.0):
                plausible.append(k)
        if len(plausible) != 1:
            raise RecordingError(f"{path}: {len(plausible) or 'no'} of the voltage channels {volts} look like a membrane "
                                 "potential; keep only the recorded cell's channel")
        volts = plausible
    if abf.dacUnits and unit_factor(abf.dacUnits[0], CURRENT_TO_PA):
        current = "dac0"
    elif len(amps) == 1:
        current = f"adc{amps[0]}"
    else:
        raise RecordingError(f"{path}: no command in current units (DAC units {abf.dacUnits}) and {len(amps)} input "
                             "channels in current units; cannot tell the injected current")
    return f"adc{volts[0]}", current


def _abf_trace(abf, sweep_index: int, channel: str, voltage_channel: int) -> np.ndarray:
    kind, k = channel[:3], int(channel[3:])
    if kind == "adc":
        abf.setSweep(sweep_index, channel=k)
        table = VOLTAGE_TO_MV if unit_factor(abf.adcUnits[k], VOLTAGE_TO_MV) else CURRENT_TO_PA
        return np.asarray(abf.sweepY, dtype=float) * unit_factor(abf.adcUnits[k], table)
    abf.setSweep(sweep_index, channel=voltage_channel)  # pyabf's sweepC is the DAC of the selected channel
    return np.asarray(abf.sweepC, dtype=float) * unit_factor(abf.dacUnits[k], CURRENT_TO_PA)


def _abf_sweep(abf, path: Path, n: int, v_ch: str, i_ch: str) -> dict:
    try:
        v = _abf_trace(abf, n - 1, v_ch, int(v_ch[3:]))
        i = _abf_trace(abf, n - 1, i_ch, int(v_ch[3:]))
    except Exception as exc:  # a truncated data section fails here, not when the header is read
        raise RecordingError(f"{path}: sweep {n} cannot be read ({type(exc).__name__}); the file is truncated or "
                             "damaged: export it again from pClamp") from exc
    if len(v) != abf.sweepPointCount or len(i) != abf.sweepPointCount:
        raise RecordingError(f"{path}: sweep {n} has {len(v)} of {abf.sweepPointCount} samples; the file is truncated: "
                             "copy it again from the rig")
    return {"sweep_number": n, "v_mv": v, "i_pa": i, "sampling_rate_hz": float(abf.dataRate)}


def scan_abf_file(path: Path, specimen_id: int, relative_to: Path) -> pd.DataFrame:
    """Sweep-table rows of one ABF file (one cell; its protocol is ``stimulus_code``)."""
    path = Path(path)
    abf = _open_abf(path)
    v_ch, i_ch = abf_channels(abf, path)
    code = str(abf.protocol or "abf protocol")
    sweeps = [{**_abf_sweep(abf, path, n, v_ch, i_ch), "stimulus_code": code, "response_path": v_ch, "stimulus_path": i_ch}
              for n in range(1, abf.sweepCount + 1)]
    return rows_from_traces(specimen_id, sweeps, "abf", str(path.relative_to(relative_to)))


def load_abf_sweep(path: Path, sweep_number: int, response_path: str, stimulus_path: str) -> Sweep:
    """One sweep of an ABF file in mV and pA, from the channels its sweep-table row names."""
    abf = _open_abf(Path(path))
    sw = _abf_sweep(abf, Path(path), int(sweep_number), response_path, stimulus_path)
    rate = sw["sampling_rate_hz"]
    return Sweep(t_s=np.arange(len(sw["v_mv"])) / rate, v_mv=sw["v_mv"], i_pa=sw["i_pa"], sampling_rate_hz=rate)


# ------------------------------------------------------------------------------------ Igor binary waves

IBW_NAME = re.compile(r"(?P<protocol>.+)_ch(?P<channel>\d+)_(?P<number>\d+)$")


def read_ibw(path: Path) -> tuple[np.ndarray, str, float]:
    """One Igor binary wave: (data, data units, sample interval in s).

    Raises
    ------
    RecordingError
        Not a readable wave (one line naming the file and the fix).
    """
    try:
        wave = binarywave.load(str(path))["wave"]
        header = wave["wave_header"]
        data = np.asarray(wave["wData"], dtype=float)
        if "hsA" in header:  # versions 1-3
            dt, units = float(header["hsA"]), b"".join(header["dataUnits"]).decode("latin-1")
        else:  # version 5
            dt = float(header["sfA"][0])
            units = b"".join(header["dataUnits"]).decode("latin-1") or wave.get("data_units", b"").decode("latin-1")
        npnts = int(header["npnts"])
    except Exception as exc:  # igor2 raises struct.error, ValueError, KeyError... for a damaged wave
        raise RecordingError(f"{path}: cannot be read as an Igor binary wave ({type(exc).__name__}); copy the file "
                             "again or remove it from the folder") from exc
    if data.size != npnts or not dt > 0:
        raise RecordingError(f"{path}: {data.size} of {npnts} samples (interval {dt} s); the wave is truncated: copy it again")
    return data.ravel(), units, dt


def _ibw_pairs(folder: Path) -> list[tuple[str, int, dict[int, str]]]:
    """(protocol, number, channel -> wave file name) of every sweep in a folder of waves."""
    pairs: dict[tuple[str, int], dict[int, str]] = {}
    for p in sorted(folder.glob("*.ibw")):
        m = IBW_NAME.fullmatch(p.stem)
        if m is None:
            raise RecordingError(f"{p}: name is not <protocol>_ch<k>_<n>.ibw, so its sweep's other channel cannot be "
                                 "found; rename the waves or give one .abf/.nwb per cell")
        pairs.setdefault((m["protocol"], int(m["number"])), {})[int(m["channel"])] = p.name
    return [(proto, n, chans) for (proto, n), chans in sorted(pairs.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def _ibw_sweep(folder: Path, names: dict[int, str]) -> dict:
    """The voltage and current waves of one sweep, told apart by their units."""
    v = i = None
    for name in names.values():
        data, units, dt = read_ibw(folder / name)
        if unit_factor(units, VOLTAGE_TO_MV):
            v = (data * unit_factor(units, VOLTAGE_TO_MV), name, dt)
        elif unit_factor(units, CURRENT_TO_PA):
            i = (data * unit_factor(units, CURRENT_TO_PA), name, dt)
    if v is None or i is None:
        raise RecordingError(f"{folder}: sweep {sorted(names.values())} lacks a wave in "
                             f"{'voltage' if v is None else 'current'} units")
    if v[2] != i[2] or len(v[0]) != len(i[0]):
        raise RecordingError(f"{folder}: waves {v[1]} and {i[1]} differ in length or sample interval")
    return {"v_mv": v[0], "i_pa": i[0], "sampling_rate_hz": 1.0 / v[2], "response_path": v[1], "stimulus_path": i[1]}


def scan_ibw_cell(folder: Path, specimen_id: int, relative_to: Path) -> pd.DataFrame:
    """Sweep-table rows of one cell's folder of Igor waves; a sweep that cannot be read is a counted row."""
    folder = Path(folder)
    pairs = _ibw_pairs(folder)
    if not pairs:
        raise RecordingError(f"{folder}: no .ibw wave")
    numbers = [n for _, n, _ in pairs]
    unique = len(set(numbers)) == len(numbers)
    sweeps, bad = [], []
    for k, (proto, n, names) in enumerate(pairs):
        number = n if unique else k + 1  # the acquisition's sweep numbers, unless two protocols reuse one
        try:
            sweeps.append({**_ibw_sweep(folder, names), "sweep_number": number, "stimulus_code": proto})
        except RecordingError as exc:
            bad.append({"specimen_id": int(specimen_id), "sweep_number": number, "stimulus_kind": "unknown",
                        "stimulus_code": proto, "amplitude_pa": np.nan, "sampling_rate_hz": np.nan, "stim_start_s": np.nan,
                        "stim_end_s": np.nan, "sweep_qc": f"unreadable: {str(exc)[:160]}", "format": "ibw",
                        "file": str(folder.relative_to(relative_to)), "response_path": "", "stimulus_path": ""})
    if not sweeps:
        raise RecordingError(bad[0]["sweep_qc"] if bad else f"{folder}: no readable sweep")
    rows = rows_from_traces(specimen_id, sweeps, "ibw", str(folder.relative_to(relative_to)))
    return pd.concat([rows, pd.DataFrame(bad, columns=SWEEP_COLUMNS)], ignore_index=True) if bad else rows


def load_ibw_sweep(folder: Path, response_path: str, stimulus_path: str) -> Sweep:
    """One sweep of a folder of Igor waves in mV and pA (``response_path``/``stimulus_path``: the waves' names)."""
    folder = Path(folder)
    sw = _ibw_sweep(folder, {0: response_path, 1: stimulus_path})
    rate = sw["sampling_rate_hz"]
    return Sweep(t_s=np.arange(len(sw["v_mv"])) / rate, v_mv=sw["v_mv"], i_pa=sw["i_pa"], sampling_rate_hz=rate)
