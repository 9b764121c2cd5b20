"""A dataset from a folder of the user's own recordings (issue 23, item 3).

The tiny demo cohort's cells are written again as a rig would: two-channel Axon ABF1 files (voltage in mV,
the current as a measured channel in pA) and NWB 2 files of another writer (pynwb's CurrentClampSeries and
CurrentClampStimulusSeries paired by the icephys table, no sweep numbers, no DANDI/Allen stimulus codes,
units in each series' conversion or unit attribute). Registered by one ``dataset.yaml`` each, they must give
the scalograms of the cells' own NWB files.

Tolerance: ``SCALOGRAM_ATOL`` = 2e-3 on images in [0, 1]. The store keeps float16 (a spacing of 2^-11, about
4.9e-4, just below 1), so two images of the same cell that differ by rounding alone differ by up to 1 float16
step where a value rounds the other way; the ABF files quantise the already quantised demo voltages again
(their int16 step is 0.003 mV against NWB's 0.01 mV), which moves a pixel by well under one float16 step.
Four steps leave room for a spike peak whose sample lands a rounding's width apart, not for another sweep,
another step window or another wavelet.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sts_utils.core import config
from sts_utils.stages.acquisition import acquire
from sts_utils.core.errors import TableError
from sts_utils.data.recordings import load_sweep
from sts_utils.stages.scalograms import compute_scalograms
from sts_utils.data.store import ScalogramStore
from sts_utils.data.tables import read_sweeps

ROOT = Path(__file__).resolve().parents[1]
SCALOGRAM_ATOL = 2e-3


# ------------------------------------------------------------------------------------------ writers

def write_abf1(path: Path, v_mv: list[np.ndarray], i_pa: list[np.ndarray], rate_hz: float) -> None:
    """A two-channel episodic ABF1 file (ADC 0: mV, ADC 1: pA), in the header layout of ``pyabf.abfWriter.writeABF1``.

    ``writeABF1`` itself writes one channel only, and its 4-block header ends where pyabf reads the telegraph
    fields (byte 4512), so those would come from the data; this header has 12 blocks and two channels, each
    with its own scale factor (int16 steps of 0.003 mV and 0.03 pA).
    """
    header_blocks, n_sweeps, n_points = 12, len(v_mv), len(v_mv[0])
    data = np.empty((n_sweeps, n_points, 2), dtype="<i2")
    scale = [0.1, 0.01]  # fInstrumentScaleFactor per channel: +-100 mV and +-1000 pA in int16
    adc_range, resolution = 10.0, 2 ** 15
    for ch, traces in enumerate((v_mv, i_pa)):
        per_unit = resolution / adc_range * scale[ch]
        data[:, :, ch] = np.round(np.asarray(traces) * per_unit).astype("<i2")
    header = bytearray(header_blocks * 512)
    struct.pack_into("4s", header, 0, b"ABF ")
    struct.pack_into("f", header, 4, 1.3)
    struct.pack_into("h", header, 8, 5)  # episodic
    struct.pack_into("i", header, 10, data.size)  # lActualAcqLength: every sample of every channel
    struct.pack_into("i", header, 16, n_sweeps)
    struct.pack_into("i", header, 40, header_blocks)
    struct.pack_into("h", header, 100, 0)  # int16 data
    struct.pack_into("h", header, 120, 2)  # nADCNumChannels
    struct.pack_into("f", header, 122, 1e6 / rate_hz / 2)  # interval between interleaved samples (us)
    struct.pack_into("i", header, 138, n_points * 2)
    struct.pack_into("f", header, 244, adc_range)
    struct.pack_into("i", header, 252, resolution)
    for ch, unit in enumerate(("mV", "pA")):
        struct.pack_into("h", header, 378 + 2 * ch, ch)  # nADCPtoLChannelMap
        struct.pack_into("h", header, 410 + 2 * ch, ch)  # nADCSamplingSeq
        struct.pack_into("8s", header, 602 + 8 * ch, unit.ljust(8).encode())
    for ch in range(16):
        struct.pack_into("f", header, 730 + 4 * ch, 1.0)  # fADCProgrammableGain
        struct.pack_into("f", header, 922 + 4 * ch, scale[min(ch, 1)])
        struct.pack_into("f", header, 1050 + 4 * ch, 1.0)  # fSignalGain
    path.write_bytes(bytes(header) + data.tobytes())


def write_other_tool_nwb(path: Path, sweeps: list[tuple[np.ndarray, np.ndarray]], rate_hz: float, style: str) -> None:
    """NWB 2 as another lab's pynwb script writes it: float series paired by the icephys table, codes ``N/A``.

    ``style``: ``si`` (volts and amperes, conversion 1), ``scaled`` (data in mV and pA with conversions 1e-3 and
    1e-12) or ``units`` (data in mV and pA, conversion 1, ``unit`` mV and pA: not NWB's units, but said).
    """
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    nwb = NWBFile(session_description="steps", identifier=path.stem,
                  session_start_time=datetime(2021, 5, 1, tzinfo=timezone.utc))
    device = nwb.create_device(name="MultiClamp 700B")
    electrode = nwb.create_icephys_electrode(name="elec0", description="whole cell", device=device)
    v_scale, i_scale = {"si": (1e-3, 1e-12), "scaled": (1.0, 1.0), "units": (1.0, 1.0)}[style]
    v_conv, i_conv = {"si": (1.0, 1.0), "scaled": (1e-3, 1e-12), "units": (1.0, 1.0)}[style]
    for k, (v, i) in enumerate(sweeps):
        stim = CurrentClampStimulusSeries(name=f"stim_{k}", data=(np.asarray(i) * i_scale).astype(np.float64),
                                          rate=float(rate_hz), starting_time=0.0, electrode=electrode, gain=1.0,
                                          conversion=i_conv, stimulus_description="N/A")
        resp = CurrentClampSeries(name=f"resp_{k}", data=(np.asarray(v) * v_scale).astype(np.float64),
                                  rate=float(rate_hz), starting_time=0.0, electrode=electrode, gain=1.0,
                                  conversion=v_conv, stimulus_description="N/A")
        nwb.add_stimulus(stim)
        nwb.add_acquisition(resp)
        nwb.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    if style == "units":
        with h5py.File(path, "r+") as f:
            for k in range(len(sweeps)):
                f[f"acquisition/resp_{k}/data"].attrs["unit"] = "mV"
                f[f"stimulus/presentation/stim_{k}/data"].attrs["unit"] = "pA"


def demo_cells(tiny_demo: Path) -> tuple[pd.DataFrame, dict[int, list]]:
    """The tiny demo's labelled cells and each one's sweeps (mV, pA) as its own NWB file gives them."""
    cells = pd.read_csv(tiny_demo / "demo" / "cells.csv")
    cells = cells[cells.qc_status == "ok"]
    sweeps = read_sweeps(tiny_demo / "demo" / "sweeps.csv")
    traces = {}
    for sid in cells.specimen_id:
        rows = sweeps[sweeps.specimen_id == sid].sort_values("sweep_number")
        traces[int(sid)] = [load_sweep(r, tiny_demo / "demo" / "raw") for _, r in rows.iterrows()]
    return cells, traces


def register(data_dir: Path, name: str, recordings: Path, labels: pd.DataFrame, extra: str = "") -> Path:
    ddir = data_dir / name
    ddir.mkdir(parents=True, exist_ok=True)
    labels.to_csv(ddir / "labels.csv", index=False)
    (ddir / "dataset.yaml").write_text(f"# my rig's recordings\nrecordings: {recordings}\nlabels: labels.csv\n{extra}")
    return ddir


@pytest.fixture(scope="module")
def rig_folders(tiny_demo, tmp_path_factory):
    """The demo cells as ABF files and as other-tool NWB files, each folder registered as a dataset."""
    cells, traces = demo_cells(tiny_demo)
    data_dir = tmp_path_factory.mktemp("folder_data")
    shutil.copytree(tiny_demo / "demo", data_dir / "demo", symlinks=True)
    abf_dir, nwb_dir = data_dir.parent / f"{data_dir.name}_abf", data_dir.parent / f"{data_dir.name}_nwb"
    abf_dir.mkdir()
    (nwb_dir / "day1").mkdir(parents=True)
    rate = traces[int(cells.specimen_id.iloc[0])][0].sampling_rate_hz
    abf_rows, nwb_rows = [], []
    for k, (sid, label) in enumerate(zip(cells.specimen_id, cells.label)):
        sw = traces[int(sid)]
        write_abf1(abf_dir / f"cell{k:02d}.abf", [s.v_mv for s in sw], [s.i_pa for s in sw], rate)
        abf_rows.append({"file": f"cell{k:02d}.abf", "specimen_id": int(sid), "label": label})
        style = ("si", "scaled", "units")[k % 3]
        write_other_tool_nwb(nwb_dir / "day1" / f"Cell_{k}.nwb", [(s.v_mv, s.i_pa) for s in sw], rate, style)
        nwb_rows.append({"file": f"day1/Cell_{k}.nwb", "specimen_id": int(sid), "label": label})
    register(data_dir, "myabf", abf_dir, pd.DataFrame(abf_rows))
    register(data_dir, "mynwb", nwb_dir, pd.DataFrame(nwb_rows))
    return data_dir, cells


# --------------------------------------------------------------------------------------------- tests

def test_a_registered_folder_is_a_dataset_and_an_unregistered_one_is_not(rig_folders):
    data_dir, _ = rig_folders
    assert config.check_dataset("myabf", data_dir) == "myabf"
    assert config.dataset_dir("mynwb", data_dir) == data_dir / "mynwb"
    with pytest.raises(ValueError, match=r"unknown DATASET 'nosuch'.*nosuch/dataset.yaml"):
        config.check_dataset("nosuch", data_dir)
    with pytest.raises(ValueError, match="unknown DATASET"):
        config.check_dataset("../demo", data_dir)  # a path is not a dataset name
    assert config.simulated_tag("myabf") == ""  # the user's recordings are not simulated


@pytest.mark.parametrize("name", ["myabf", "mynwb"])
def test_rig_files_give_the_scalograms_of_the_cells_own_nwb_files(rig_folders, name):
    data_dir, cells = rig_folders
    out = acquire(name, data_dir, seed=0, n_jobs=1)
    assert (data_dir / name / "raw").is_symlink()
    got = out["cells"].set_index("specimen_id")
    assert (got.qc_status == "ok").all(), got.qc_status.to_dict()
    assert got.label.to_dict() == cells.set_index("specimen_id").label.to_dict()
    assert set(got.label_source) == {"labels.csv"} and set(got.source) == {name}
    sweeps, own = read_sweeps(data_dir / name / "sweeps.csv"), read_sweeps(data_dir / "demo" / "sweeps.csv")
    assert set(sweeps["format"]) == {"abf" if name == "myabf" else "nwb2"}
    # the step of each sweep read from the current itself equals the ideal step of the cell's own file
    merged = sweeps.merge(own, on=["specimen_id", "sweep_number"], suffixes=("", "_own"))
    assert len(merged) == len(own[own.specimen_id.isin(cells.specimen_id)])
    assert np.allclose(merged.stim_start_s, merged.stim_start_s_own, atol=1e-9)
    assert np.allclose(merged.stim_end_s, merged.stim_end_s_own, atol=1e-9)
    assert np.allclose(merged.amplitude_pa, merged.amplitude_pa_own, atol=0.05)
    compute_scalograms(name, data_dir, n_jobs=1, progress=False)
    mine, theirs = ScalogramStore.load(name, data_dir), ScalogramStore.load("demo", data_dir)
    assert np.array_equal(mine.freqs_hz, theirs.freqs_hz) and np.array_equal(mine.times_s, theirs.times_s)
    ids = sorted(cells.specimen_id)
    a, b = mine.images[mine.rows(ids)].astype(np.float32), theirs.images[theirs.rows(ids)].astype(np.float32)
    assert np.abs(a - b).max() <= SCALOGRAM_ATOL, float(np.abs(a - b).max())


def test_unknown_or_duplicate_labels_are_one_line_naming_the_label_file(rig_folders, tmp_path):
    data_dir, cells = rig_folders
    recordings = (data_dir / "myabf" / "raw").resolve()
    files = sorted(p.name for p in recordings.glob("*.abf"))
    for rows, message in (
            ([{"file": files[0], "label": "Pyramidal"}], r"labels.csv: line 2: unknown label 'Pyramidal'"),
            ([{"file": files[0], "label": "Sst"}, {"file": files[0], "label": "Pvalb"}],
             r"labels.csv: line 3: file cell00.abf appears twice \(also line 2\)"),
            ([{"file": "nosuch.abf", "label": "Sst"}], r"labels.csv: line 2: 'nosuch.abf' is not a recording")):
        register(tmp_path, "badlabels", recordings, pd.DataFrame(rows))
        with pytest.raises(TableError, match=message) as err:
            acquire("badlabels", tmp_path, n_jobs=1)
        assert "\n" not in str(err.value)


def test_cells_the_label_file_leaves_out_are_unsure_and_ids_follow_the_file_order(rig_folders, tmp_path):
    data_dir, cells = rig_folders
    recordings = (data_dir / "myabf" / "raw").resolve()
    register(tmp_path, "partial", recordings, pd.DataFrame([{"file": "cell01.abf", "label": "Excitatory"}]))
    got = acquire("partial", tmp_path, n_jobs=1, max_cells=None)["cells"].set_index("cell")
    assert got.loc["cell01.abf", "label"] == "Excitatory"
    assert (got.drop(index="cell01.abf").label == "Unsure").all()
    assert list(got.specimen_id) == list(range(1, len(got) + 1))  # no sub-<id> names, no mapping: 1, 2, ...


def test_a_broken_registration_is_one_line(tmp_path):
    ddir = tmp_path / "broken"
    ddir.mkdir()
    (ddir / "dataset.yaml").write_text("recordings: /no/such/folder\n")
    with pytest.raises(Exception, match="recordings folder /no/such/folder does not exist"):
        acquire("broken", tmp_path, n_jobs=1)
    (ddir / "dataset.yaml").write_text(f"recordings: {tmp_path}\nlabel: labels.csv\n")
    with pytest.raises(Exception, match="unknown key\\(s\\) label;"):
        acquire("broken", tmp_path, n_jobs=1)


TINY = ["N_FI_CELLS=2", "EPOCHS=2", "N_TRIALS=0", "N_FOLDS=2", "TRIAL_EPOCHS=1", "IMAGE_SIZE=75", "N_ITER=2",
        "IG_STEPS=2", "N_BOOT=20", "TEST_FRACTION=0.25", "N_NEW_CELLS=1", "MAX_TEST_CELLS=4", "N_RESAMPLES=20",
        "BACKBONES=resnet18", "SPLIT_MODE=kfold", "N_REPEATS=2"]  # 3 cells a class: 2 folds, no search (1 cell a class)


@pytest.mark.integration
def test_make_paper_on_a_folder_dataset(rig_folders, tmp_path):
    """Pages 01-09 on the 12 ABF cells, unchanged; nothing says simulated."""
    data_dir, _ = rig_folders
    env = {**os.environ, "STS_OFFLINE": "1"}
    started = time.time()
    r = subprocess.run(["make", "--no-print-directory", "paper", "DATASET=myabf", f"DATA_DIR={data_dir}",
                        f"FIGURES_DIR={tmp_path / 'figures'}", f"BUILD_DIR={tmp_path / 'build'}", *TINY],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    figures = tmp_path / "figures" / "myabf"
    results = pd.read_csv(figures / "results_table.csv")
    assert len(results) and (figures / "new_cells_summary.csv").is_file()
    assert not (figures / "rig_recordings_summary.csv").exists()  # page 10 belongs to the demo's paper
    assert "SIMULATED" not in (figures / "results_table.md").read_text()
    print(f"make paper DATASET=myabf: {time.time() - started:.0f} s")
