"""Recordings from other rigs (issue 23), on the real files of ../shared/data/rig_recordings.

For each set the sweeps and step amplitudes read equal those of the file's own protocol (pyabf's epoch
table, the Igor current wave, the NWB stimulus series); units and sampling rates are right (spike
peaks of +20 to +65 mV); a truncated copy of each format fails in one line naming the file.
"""
import warnings

import numpy as np
import pyabf
import pytest
from igor2 import binarywave

from sts_utils.stages import predict
from sts_utils.core.errors import RecordingError
from sts_utils.data.recordings import SCANNERS, load_sweep
from sts_utils.data.rigs import scan_abf_file, scan_ibw_cell
from sts_utils.stages.scalograms import ScalogramParams, select_cell_sweeps
from sts_utils.compute.steps import protocol_step

warnings.filterwarnings("ignore", message="Could not find stimulus")


@pytest.fixture(scope="module")
def rigs(shared_data):
    return shared_data / "rig_recordings"


def _stepped_epoch(abf) -> int:
    """Index of the epoch whose level changes across sweeps (the test step), from pyabf's epoch table."""
    levels = []
    for s in range(abf.sweepCount):
        abf.setSweep(s)
        levels.append(abf.sweepEpochs.levels)
    varying = [k for k in range(len(levels[0])) if len({lv[k] for lv in levels}) > 1]
    return varying[0]


@pytest.mark.parametrize("name", ["171116sh_0018", "171116sh_0019", "17o05028_ic_steps", "18711001", "18713001",
                                  "190619B_0003", "2019_07_24_0055_fsi"])
def test_abf_command_steps_equal_the_epoch_table(rigs, name):
    path = rigs / "pyabf" / f"{name}.abf"
    rows = scan_abf_file(path, 1, rigs)
    abf = pyabf.ABF(str(path))
    assert len(rows) == abf.sweepCount
    k = _stepped_epoch(abf)
    for sweep_index in range(abf.sweepCount):
        abf.setSweep(sweep_index)
        e = abf.sweepEpochs
        r = rows.iloc[sweep_index]
        assert r.amplitude_pa == pytest.approx(e.levels[k] - e.levels[0], abs=0.01)
        assert r.stim_start_s == pytest.approx(e.p1s[k] / abf.dataRate, abs=1e-4)
        assert r.stim_end_s == pytest.approx(e.p2s[k] / abf.dataRate, abs=1e-4)
        assert r.sampling_rate_hz == abf.dataRate
    assert (rows.sweep_qc == "ok").all()


@pytest.mark.parametrize("name", ["PYR1", "PYR2", "PYR3", "PYR4", "PYR5_rebound"])
def test_abf_measured_current_first_channel_reduced_to_the_protocol_steps(rigs, name):
    """Current comes first in these files and is measured (noisy); the command is in mV (10 pA per mV)."""
    path = rigs / "ferguson2015" / f"{name}.abf"
    abf = pyabf.ABF(str(path))
    assert abf.adcUnits[1] == "mV" and abf.adcUnits[0] in ("pA", "nA")  # the order the channel choice must not trust
    rows = scan_abf_file(path, 1, rigs)
    assert set(rows.response_path) == {"adc1"} and set(rows.stimulus_path) == {"adc0"}
    assert len(rows) == abf.sweepCount
    k = _stepped_epoch(abf)
    nominal = []
    for s in range(abf.sweepCount):
        abf.setSweep(s)
        nominal.append(10.0 * abf.sweepEpochs.levels[k])
        assert rows.stim_start_s.iloc[s] == pytest.approx(abf.sweepEpochs.p1s[k] / abf.dataRate, abs=0.002)
        assert rows.stim_end_s.iloc[s] == pytest.approx(abf.sweepEpochs.p2s[k] / abf.dataRate, abs=0.002)
    # the measured current is within 2 pA + 2 % of the command (steps of 10-300 pA under tens of pA of noise)
    np.testing.assert_allclose(rows.amplitude_pa, nominal, rtol=0.02, atol=2.0)


def test_pynwb_conversions_give_the_steps_of_their_abf(rigs):
    """The other group's NWB files of PYR2 / PYR5 hold the measured current as stimulus: same steps as the ABF."""
    for nwb, abf in (("FergusonEtAl2015_PYR2.nwb", "PYR2.abf"), ("FergusonEtAl2015_PYR5_rebound.nwb", "PYR5_rebound.abf")):
        a = SCANNERS["nwb2"](rigs / "ferguson2015" / nwb, 1, rigs)
        b = scan_abf_file(rigs / "ferguson2015" / abf, 1, rigs)
        assert len(a) == len(b) == pyabf.ABF(str(rigs / "ferguson2015" / abf)).sweepCount
        assert set(a.stimulus_kind) == {"Long Square"}
        # the conversion numbered PYR5's sweeps in reverse; the steps themselves agree
        np.testing.assert_allclose(np.sort(a.amplitude_pa), np.sort(b.amplitude_pa), atol=1.0)
        np.testing.assert_allclose(np.sort(a.stim_start_s), np.sort(b.stim_start_s), atol=0.001)


def test_portal_nwb_paired_by_the_icephys_table_and_skipped_by_the_resting_potential_check(rigs):
    path = rigs / "hippocampus_hub" / "99111002.nwb"
    rows = SCANNERS["nwb2"](path, 1, rigs)
    assert len(rows) == 16  # the 16 CurrentClampSeries, each with its CurrentClampStimulusSeries
    for r in rows.itertuples():
        sw = load_sweep(r._asdict(), rigs)
        levels = np.unique(np.round(sw.i_pa, 3))
        step = levels[np.argmax(np.abs(levels))]
        assert r.amplitude_pa == pytest.approx(step, abs=0.5)  # the stimulus series' own level (holding 0)
    # its voltages (-16 to -5 mV at rest) are no membrane's: every sweep is a counted skip naming the check
    assert rows.sweep_qc.str.startswith("implausible resting potential").all()


def test_igor_waves_paired_by_name_and_told_apart_by_units(rigs):
    folder = rigs / "sscx_l5pc" / "C060109A1-SR-C1"
    rows = scan_ibw_cell(folder, 1, rigs)
    assert len(rows) == len(list(folder.glob("*.ibw"))) // 2
    assert (rows.sampling_rate_hz == 4000.0).all()  # 0.25 ms samples
    for r in rows.sample(8, random_state=0).itertuples():
        wave = binarywave.load(str(folder / r.stimulus_path))["wave"]
        assert b"".join(wave["wave_header"]["dataUnits"]) == b"A"
        i_pa = wave["wData"] * 1e12
        a, b = int(r.stim_start_s * 4000), int(r.stim_end_s * 4000)
        inside = np.median(i_pa[a + 400:b - 400])
        before = np.median(i_pa[: a - 40])
        assert r.amplitude_pa == pytest.approx(inside - before, abs=3.0)


def test_sweep_choice_and_spike_peaks_on_real_protocols(rigs):
    """Coarse grids, pre-steps, 0.5-2 s steps: the chosen sweeps spike to +20..+65 mV (mV, not V)."""
    for path in (rigs / "pyabf" / "18711001.abf", rigs / "ferguson2015" / "PYR1.abf",
                 rigs / "sscx_l5pc" / "C060109A1-SR-C1"):
        rows = (scan_ibw_cell if path.is_dir() else scan_abf_file)(path, 1, rigs)
        analysis, sel = select_cell_sweeps(rows, rigs, ScalogramParams())
        assert sel.rheobase_note.startswith(("between", "at or below"))
        for sn, amp in zip(sel.sweep_numbers, sel.amplitudes_pa):
            assert 20.0 <= analysis.sweeps[sn].v_mv.max() <= 65.0
            assert abs(amp - sel.rheobase_pa - 45) <= sel.tolerance_pa + 5


def test_pre_step_is_not_taken_for_the_test_step():
    rate = 10_000.0
    traces = []
    for amp in (0.0, 20.0, 40.0):
        i = np.zeros(15_000)
        i[500:3500] = -100.0  # a fixed hyperpolarising pre-step
        i[8000:13000] = amp
        traces.append(i)
    step = protocol_step(traces, [rate] * 3)
    assert step.amplitude_pa == (0.0, 20.0, 40.0)
    assert step.start_s[1] == pytest.approx(0.8) and step.end_s[1] == pytest.approx(1.3)


def test_a_folder_of_every_rig_format_is_read_with_ids_from_the_files(rigs):
    new = predict.read_new_cells(rigs)
    # 12 ABF files, 3 NWB files, 6 Igor folders: one cell each, none unreadable
    assert len(new.cells) == 21 and new.skipped.empty
    assert sorted(new.cells.specimen_id) == list(range(1, 22))  # no id from a name's digits (2015, 171116, ...)
    assert set(new.table["format"]) == {"abf", "nwb2", "ibw"}


@pytest.mark.parametrize("relative", ["pyabf/18711001.abf", "ferguson2015/FergusonEtAl2015_PYR2.nwb"])
def test_a_truncated_recording_is_one_line_naming_the_file(rigs, tmp_path, relative):
    data = (rigs / relative).read_bytes()
    bad = tmp_path / f"truncated{(rigs / relative).suffix}"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(RecordingError) as err:
        predict.read_new_cells(bad)
    message = str(err.value)
    assert str(bad) in message and "\n" not in message
    # in a folder it is a counted skip with the reason, beside a good file
    (tmp_path / "good.abf").write_bytes((rigs / "pyabf" / "18713001.abf").read_bytes())
    new = predict.read_new_cells(tmp_path)
    assert len(new.skipped) == 1 and new.skipped.reason.iloc[0].startswith("unreadable")


def test_a_truncated_igor_wave_is_one_line_naming_the_file(rigs, tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    for p in sorted((rigs / "sscx_l5pc" / "C060109A1-SR-C1").glob("X_IDrest_ch*_32[67].ibw")):
        (folder / p.name).write_bytes(p.read_bytes())
    wave = folder / "X_IDrest_ch1_327.ibw"
    wave.write_bytes(wave.read_bytes()[:5000])
    rows = scan_ibw_cell(folder, 1, tmp_path)
    bad = rows[rows.sweep_qc != "ok"]
    assert len(rows) == 2 and len(bad) == 1
    assert str(wave) in bad.sweep_qc.iloc[0] and "\n" not in bad.sweep_qc.iloc[0]
