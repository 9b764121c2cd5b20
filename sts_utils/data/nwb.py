"""File formats of current-clamp recordings: NWB 2 (patch-seq, demo) and NWB 1 (Allen Cell Types DB).

Writing uses pynwb, in the layout of the DANDI 000020 files: per sweep a
``CurrentClampStimulusSeries`` (``stimulus/presentation/data_NNNNN_DA0``) and a ``CurrentClampSeries``
(``acquisition/data_NNNNN_AD0``) sharing a ``sweep_number``, a ``stimulus_description`` that ipfx's
stimulus ontology knows, an intracellular electrode, a subject, and the (legacy) sweep table that
ipfx's NWB 2 reader uses.

Reading NWB 2 in the pipeline uses h5py directly on that layout: opening a file through pynwb builds
the whole object tree (about 0.3 s a file, measured in ``benchmarks/bench_readers.py``), which is the
bottleneck when thousands of files are scanned for their long-square sweeps. The tests check that the
h5py reader returns the same arrays as pynwb and as ``ipfx.dataset.create.create_ephys_data_set``.

NWB 1 (Allen Cell Types DB) cannot be read by pynwb; :func:`read_nwb1_sweep_table` and
:func:`load_nwb1_sweep` read its HDF5 layout (``epochs/Sweep_N`` -> ``acquisition/timeseries/Sweep_N``
and ``stimulus/presentation/Sweep_N`` with ``aibs_stimulus_name``/``aibs_stimulus_amplitude_pa``,
``analysis/spike_times/Sweep_N``).
"""
from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from sts_utils.core.errors import RecordingError
from sts_utils.core.io import atomic_path
from sts_utils.compute.steps import CURRENT_TO_PA, VOLTAGE_TO_MV, unit_factor

#: ipfx stimulus-ontology codes used for the simulated sweeps (patch-seq protocol names).
DEMO_STIMULUS_CODES = {"subthreshold": "X1PS_SubThresh", "rheobase": "X3LP_Rheo", "suprathreshold": "X4PS_SupraThresh"}
V_CONVERSION = 1e-5   # int16 counts -> volts (10 µV resolution, ±327 mV range)
I_CONVERSION = 1e-12  # int16 counts -> amperes (1 pA resolution)


@dataclass
class Sweep:
    """One sweep in physical units: time (s), membrane potential (mV), injected current (pA)."""

    t_s: np.ndarray
    v_mv: np.ndarray | None
    i_pa: np.ndarray | None
    sampling_rate_hz: float
    spike_times_s: np.ndarray | None = None


def write_nwb2_cell(
    path: str | os.PathLike,
    specimen_id: int,
    sweeps: list[dict],
    sampling_rate_hz: float,
    subject_id: str,
    description: str,
    notes: dict | None = None,
) -> Path:
    """Write one cell's current-clamp sweeps as an NWB 2 file (DANDI 000020 layout).

    Parameters
    ----------
    sweeps
        Dicts with ``v_mv``, ``i_pa`` (1-D arrays), ``stimulus_code`` and ``sweep_number``.
    notes
        JSON-serialisable metadata stored in ``NWBFile.notes`` (e.g. that the cell is simulated).
    """
    from pynwb import NWBHDF5IO

    nwb = build_nwb2_cell(specimen_id, sweeps, sampling_rate_hz, subject_id, description, notes)
    path = Path(path)
    with atomic_path(path) as tmp:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb, cache_spec=False)
        with h5py.File(tmp, "r+") as f:
            _copy_cached_spec(f)
    return path


def build_nwb2_cell(specimen_id: int, sweeps: list[dict], sampling_rate_hz: float, subject_id: str, description: str,
                    notes: dict | None = None):
    """The in-memory ``pynwb.NWBFile`` that :func:`write_nwb2_cell` writes (same parameters)."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBFile
    from pynwb.file import Subject
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries, SweepTable


    nwb = NWBFile(
        session_description=description,
        identifier=f"sts-{specimen_id}",
        session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc),  # fixed: files are reproducible
        institution="STS compendium (simulated)" if notes and notes.get("simulated") else "",
        notes=json.dumps(notes or {}),
        subject=Subject(subject_id=subject_id, species="Mus musculus", sex="U", age="P56D"),
    )
    # The DANDI 000020 files carry the legacy SweepTable, which ipfx's NWB 2 reader needs
    # (``nwb.sweep_table.get_series``). pynwb 3 refuses to create one outside its own
    # construct mode, so build it the way pynwb does when it reads such a file.
    sweep_table = SweepTable.__new__(SweepTable, parent=nwb, in_construct_mode=True)
    sweep_table.__init__(name="sweep_table")
    sweep_table._in_construct_mode = False
    nwb.sweep_table = sweep_table
    device = nwb.create_device(name="simulated amplifier")
    electrode = nwb.create_icephys_electrode(name="electrode_0", description="patch electrode", device=device)
    for k, sw in enumerate(sweeps):
        n = int(sw["sweep_number"])
        code = f"{sw['stimulus_code']}_DA_0"
        stim = CurrentClampStimulusSeries(
            name=f"data_{k:05d}_DA0", data=H5DataIO(np.round(np.asarray(sw["i_pa"]) * 1e-12 / I_CONVERSION).astype(np.int16), compression="gzip"),
            conversion=I_CONVERSION, unit="amperes", starting_time=0.0, rate=float(sampling_rate_hz),
            electrode=electrode, gain=1.0, sweep_number=np.uint32(n), stimulus_description=code,
        )
        resp = CurrentClampSeries(
            name=f"data_{k:05d}_AD0", data=H5DataIO(np.clip(np.round(np.asarray(sw["v_mv"]) * 1e-3 / V_CONVERSION), -32768, 32767).astype(np.int16), compression="gzip"),
            conversion=V_CONVERSION, unit="volts", starting_time=0.0, rate=float(sampling_rate_hz),
            electrode=electrode, gain=1.0, sweep_number=np.uint32(n), stimulus_description=code,
            bias_current=0.0, bridge_balance=0.0, capacitance_compensation=0.0,
        )
        nwb.add_stimulus(stim, use_sweep_table=True)
        nwb.add_acquisition(resp, use_sweep_table=True)
        nwb.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp)
    return nwb


@functools.cache
def _spec_template() -> Path:
    """An NWB file with pynwb's cached namespaces, written once per process (kept until exit)."""
    from pynwb import NWBHDF5IO, NWBFile

    folder = tempfile.TemporaryDirectory(prefix="sts-nwb-spec-")
    _spec_template.folder = folder  # the folder lives as long as the cache entry
    path = Path(folder.name) / "spec.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(NWBFile(session_description="spec", identifier="spec",
                         session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc)), cache_spec=True)
    return path


def _copy_cached_spec(f: h5py.File) -> None:
    """Put the cached specifications into ``f`` the way hdmf does (group ``specifications``, root ``.specloc``).

    hdmf rebuilds the namespace specs from Python objects for every file it writes (about 40 % of a
    simulated cell's write time); they are the same for every file of one pynwb install, so they are
    written once and copied as HDF5 groups.
    """
    with h5py.File(_spec_template(), "r") as template:
        template.copy(template["specifications"], f, name="specifications")
    f.attrs[".specloc"] = f["specifications"].ref


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _attr_str(value.ravel()[0])
    return str(value)


def _open_h5(path: str | os.PathLike) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:  # truncated or not HDF5 at all
        raise RecordingError(f"cannot open {path} as HDF5: {exc}") from exc


def stimulus_code_of(description: str) -> str:
    """Strip MIES/ipfx decorations (``_DA_0``, ``[n]``) from a stimulus description."""
    code = description[:-5] if description.endswith("_DA_0") else description
    return code.split("[")[0]


def read_nwb2_sweep_table(path: str | os.PathLike) -> pd.DataFrame:
    """List the current-clamp sweeps of an NWB 2 file.

    Returns one row per sweep: ``sweep_number``, ``stimulus_code``, ``response_path``,
    ``stimulus_path``, ``sampling_rate_hz``, ``n_samples``. Response and stimulus are paired by their
    ``sweep_number``; files without one (NWB 2.4+ writers) are paired by the icephys
    ``intracellular_recordings`` table, whose row order numbers the sweeps from 1.
    """
    rows: dict[int, dict] = {}
    with _open_h5(path) as f:
        if "acquisition" not in f:
            raise RecordingError(f"{path}: no 'acquisition' group, not an NWB 2 icephys file")
        for group_name, section in (("acquisition", "response"), ("stimulus/presentation", "stimulus")):
            if group_name not in f:
                continue
            for name, series in f[group_name].items():
                attrs = series.attrs
                ntype = _attr_str(attrs.get("neurodata_type", ""))
                if ntype not in ("CurrentClampSeries", "CurrentClampStimulusSeries", "IZeroClampSeries"):
                    continue
                if "sweep_number" not in attrs or "data" not in series:
                    continue
                n = int(np.asarray(attrs["sweep_number"]).ravel()[0])
                row = rows.setdefault(n, {"sweep_number": n})
                row[f"{section}_path"] = f"{group_name}/{name}"
                if section == "response":
                    row["stimulus_code"] = stimulus_code_of(_attr_str(attrs.get("stimulus_description", "")))
                    row["sampling_rate_hz"] = float(series["starting_time"].attrs["rate"])
                    row["n_samples"] = int(series["data"].shape[0])
                else:
                    row["n_samples_stimulus"] = int(series["data"].shape[0])
        icephys = "general/intracellular_ephys/intracellular_recordings"
        if not rows and icephys in f and "responses/response" in f[icephys] and "stimuli/stimulus" in f[icephys]:
            refs = zip(f[f"{icephys}/responses/response"][()], f[f"{icephys}/stimuli/stimulus"][()])
            for n, (resp, stim) in enumerate(refs, start=1):
                resp_obj, stim_obj = f[resp[2]], f[stim[2]]
                if _attr_str(resp_obj.attrs.get("neurodata_type", "")) not in ("CurrentClampSeries", "IZeroClampSeries"):
                    continue
                rows[n] = {"sweep_number": n, "response_path": resp_obj.name.lstrip("/"),
                           "stimulus_path": stim_obj.name.lstrip("/"),
                           "stimulus_code": stimulus_code_of(_attr_str(resp_obj.attrs.get("stimulus_description", ""))),
                           "sampling_rate_hz": float(resp_obj["starting_time"].attrs["rate"]),
                           "n_samples": int(resp_obj["data"].shape[0]), "n_samples_stimulus": int(stim_obj["data"].shape[0])}
    table = pd.DataFrame(list(rows.values()))
    if table.empty:
        return pd.DataFrame(columns=["sweep_number", "stimulus_code", "response_path", "stimulus_path", "sampling_rate_hz", "n_samples"])
    table = table.dropna(subset=["response_path", "stimulus_path"]).sort_values("sweep_number")
    return table.reset_index(drop=True)


def _scaled(dataset: h5py.Dataset) -> np.ndarray:
    conversion = float(np.asarray(dataset.attrs.get("conversion", 1.0)).ravel()[0])
    return dataset[()].astype(np.float64) * conversion


def _in_units(dataset: h5py.Dataset, table: dict[str, float], spec_unit: str, path, series: str) -> np.ndarray:
    """A series' data in mV or pA (``table``): ``data * conversion (+ offset)`` in the series' own ``unit``.

    NWB 2 fixes volts and amperes for current-clamp series, but other writers store ``mV``/``pA`` data with
    ``conversion`` 1 and say so in ``unit``; a missing unit is the specification's (``spec_unit``). A
    unit that is neither a voltage nor a current is refused (one line), never guessed.
    """
    unit = _attr_str(dataset.attrs.get("unit", spec_unit)) or spec_unit
    factor = unit_factor(unit, table)
    if factor is None:
        raise RecordingError(f"{path}: {series} is in {unit!r}, not a {'voltage' if table is VOLTAGE_TO_MV else 'current'} "
                             "unit; export the file again with the series' physical unit")
    values = _scaled(dataset) * factor
    if "offset" in dataset.attrs:  # NWB 2.4+: value = data * conversion + offset (in the series' unit)
        values = values + float(np.asarray(dataset.attrs["offset"]).ravel()[0]) * factor
    return values


def load_nwb2_sweep(path: str | os.PathLike, response_path: str, stimulus_path: str) -> Sweep:
    """Load one sweep of an NWB 2 file: voltage in mV and current in pA, from each series' ``unit`` and ``conversion``."""
    with _open_h5(path) as f:
        try:
            resp, stim = f[response_path], f[stimulus_path]
            v = _in_units(resp["data"], VOLTAGE_TO_MV, "volts", path, response_path)
            i = _in_units(stim["data"], CURRENT_TO_PA, "amperes", path, stimulus_path)
            rate = float(resp["starting_time"].attrs["rate"])
        except (KeyError, OSError) as exc:
            raise RecordingError(f"{path}: cannot read sweep {response_path}: {exc}") from exc
    n = min(len(v), len(i))
    return Sweep(t_s=np.arange(n) / rate, v_mv=v[:n], i_pa=i[:n], sampling_rate_hz=rate)


# --------------------------------------------------------------------------------------------- NWB 1

def read_nwb1_sweep_table(path: str | os.PathLike) -> pd.DataFrame:
    """List the sweeps of an Allen Cell Types DB NWB 1 file.

    Returns ``sweep_number``, ``stimulus_name`` (``aibs_stimulus_name``, e.g. ``Long Square``),
    ``amplitude_pa`` (``aibs_stimulus_amplitude_pa``), ``sampling_rate_hz``, ``n_samples``,
    ``n_spikes`` (from ``analysis/spike_times`` when present).
    """
    rows = []
    with _open_h5(path) as f:
        if "epochs" not in f or "acquisition" not in f:
            raise RecordingError(f"{path}: not an Allen NWB 1 file (no epochs/acquisition)")
        for name in f["epochs"]:
            m = re.fullmatch(r"Sweep_(\d+)", name)
            if not m:
                continue
            n = int(m.group(1))
            pres = f.get(f"stimulus/presentation/{name}")
            acq = f.get(f"acquisition/timeseries/{name}")
            if pres is None or acq is None or "data" not in acq:
                continue

            def field(group, key, default=None):
                if key in group:
                    return group[key][()]
                return group.attrs.get(key, default)

            stim_name = field(pres, "aibs_stimulus_name", "")
            amp = field(pres, "aibs_stimulus_amplitude_pa", np.nan)
            spikes = f.get(f"analysis/spike_times/{name}")
            rows.append({
                "sweep_number": n,
                "stimulus_name": _attr_str(stim_name),
                "amplitude_pa": float(np.asarray(amp).ravel()[0]) if amp is not None else np.nan,
                "sampling_rate_hz": float(acq["starting_time"].attrs["rate"]),
                "n_samples": int(acq["data"].shape[0]),
                "n_spikes": int(spikes.shape[0]) if spikes is not None else np.nan,
            })
    return pd.DataFrame(rows, columns=["sweep_number", "stimulus_name", "amplitude_pa", "sampling_rate_hz", "n_samples", "n_spikes"]).sort_values("sweep_number").reset_index(drop=True)


def load_nwb1_sweep(path: str | os.PathLike, sweep_number: int) -> Sweep:
    """Load one sweep of an Allen NWB 1 file (voltage in mV, current in pA, stored spike times in s)."""
    name = f"Sweep_{int(sweep_number)}"
    with _open_h5(path) as f:
        try:
            acq, pres = f[f"acquisition/timeseries/{name}"], f[f"stimulus/presentation/{name}"]
            v = _scaled(acq["data"]) * 1e3
            i = _scaled(pres["data"]) * 1e12
            rate = float(acq["starting_time"].attrs["rate"])
        except (KeyError, OSError) as exc:
            raise RecordingError(f"{path}: cannot read {name}: {exc}") from exc
        spikes = f.get(f"analysis/spike_times/{name}")
        spike_times = np.asarray(spikes[()], dtype=float) if spikes is not None else None
    n = min(len(v), len(i))
    return Sweep(t_s=np.arange(n) / rate, v_mv=v[:n], i_pa=i[:n], sampling_rate_hz=rate, spike_times_s=spike_times)


def write_nwb1_cell(path: str | os.PathLike, sweeps: list[dict], sampling_rate_hz: float) -> Path:
    """Write a small file in the Allen NWB 1 layout (for tests and for labs converting their data).

    ``sweeps``: dicts with ``sweep_number``, ``stimulus_name``, ``amplitude_pa``, ``v_mv``, ``i_pa``
    and optionally ``spike_times_s``.
    """

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("nwb_version", data=np.bytes_("NWB-1.0.5"))
            for sw in sweeps:
                name = f"Sweep_{int(sw['sweep_number'])}"
                acq = f.create_group(f"acquisition/timeseries/{name}")
                d = acq.create_dataset("data", data=np.asarray(sw["v_mv"], dtype=np.float32) * 1e-3)
                d.attrs["conversion"] = np.float32(1.0)
                d.attrs["unit"] = np.bytes_("Volts")
                acq.create_dataset("starting_time", data=0.0).attrs["rate"] = float(sampling_rate_hz)
                pres = f.create_group(f"stimulus/presentation/{name}")
                d = pres.create_dataset("data", data=np.asarray(sw["i_pa"], dtype=np.float32) * 1e-12)
                d.attrs["conversion"] = np.float32(1.0)
                d.attrs["unit"] = np.bytes_("Amps")
                pres.create_dataset("starting_time", data=0.0).attrs["rate"] = float(sampling_rate_hz)
                pres.create_dataset("aibs_stimulus_name", data=np.bytes_(sw["stimulus_name"]))
                pres.create_dataset("aibs_stimulus_amplitude_pa", data=float(sw["amplitude_pa"]))
                ep = f.create_group(f"epochs/{name}")
                ep["response/timeseries"] = acq
                ep["stimulus/timeseries"] = pres
                if sw.get("spike_times_s") is not None:
                    f.create_dataset(f"analysis/spike_times/{name}", data=np.asarray(sw["spike_times_s"], dtype=float))
    return path
