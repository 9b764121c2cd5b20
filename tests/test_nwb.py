"""NWB 2 files of the demo cohort and NWB 1 files in the Allen layout, through every reader."""
import shutil
import warnings

import h5py
import numpy as np
import pytest

from sts_utils.core.errors import RecordingError
from sts_utils.data.nwb import (build_nwb2_cell, load_nwb1_sweep, load_nwb2_sweep, read_nwb1_sweep_table,
                           read_nwb2_sweep_table, write_nwb1_cell, write_nwb2_cell)
from sts_utils.data.recordings import scan_recordings


@pytest.fixture(scope="module")
def demo_file(tiny_demo):
    return sorted((tiny_demo / "demo" / "raw").glob("sub-*/*.nwb"))[0]


def test_demo_file_round_trips_through_pynwb(demo_file):
    from pynwb import NWBHDF5IO

    table = read_nwb2_sweep_table(demo_file)
    row = table.iloc[3]
    ours = load_nwb2_sweep(demo_file, row.response_path, row.stimulus_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(demo_file), "r") as io:
            nwb = io.read()
            resp = nwb.acquisition[row.response_path.split("/")[-1]]
            assert resp.sweep_number == row.sweep_number
            assert resp.unit == "volts"
            np.testing.assert_allclose(resp.data[:] * resp.conversion * 1e3, ours.v_mv)
            assert "Mus musculus" == nwb.subject.species
            assert '"simulated": true' in nwb.notes


def test_demo_file_reads_with_ipfx(demo_file):
    from ipfx.dataset.create import create_ephys_data_set

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = create_ephys_data_set(str(demo_file))
    st = ds.sweep_table
    assert set(st.stimulus_name) == {"Long Square"}
    table = read_nwb2_sweep_table(demo_file)
    row = table.iloc[-1]
    sw = ds.sweep(int(row.sweep_number))
    ours = load_nwb2_sweep(demo_file, row.response_path, row.stimulus_path)
    np.testing.assert_allclose(sw.v, ours.v_mv)
    np.testing.assert_allclose(sw.i, ours.i_pa)
    assert sw.sampling_rate == 50_000


def _h5_tree(group: h5py.Group) -> dict:
    """Every dataset's bytes and every attribute below ``group``, by path (object references as their target)."""
    out = {}

    def value(v):
        return group.file[v].name if isinstance(v, h5py.Reference) else (v.tolist() if isinstance(v, np.ndarray) else v)

    def visit(name, obj):
        out[name] = ({k: value(v) for k, v in obj.attrs.items()},
                     obj[()] if isinstance(obj, h5py.Dataset) else None)
    group.visititems(visit)
    return out


def test_cell_files_carry_the_spec_hdmf_would_cache(tmp_path):
    """write_nwb2_cell copies pynwb's cached namespaces instead of letting hdmf rebuild them per file;
    the file must hold exactly what hdmf's own ``cache_spec=True`` writes, and still read by its own spec."""
    from pynwb import NWBHDF5IO

    rate = 10_000.0
    i = np.r_[np.zeros(2000), np.full(8000, 120.0)]
    sweeps = [{"sweep_number": 1, "v_mv": -70 + 0.02 * i, "i_pa": i, "stimulus_code": "X4PS_SupraThresh"}]
    args = (7, sweeps, rate, "7", "spec test")
    fast = write_nwb2_cell(tmp_path / "fast.nwb", *args)
    with NWBHDF5IO(str(tmp_path / "hdmf.nwb"), "w") as io:
        io.write(build_nwb2_cell(*args), cache_spec=True)
    with h5py.File(fast) as f, h5py.File(tmp_path / "hdmf.nwb") as g:
        assert f[f.attrs[".specloc"]].name == g[g.attrs[".specloc"]].name == "/specifications"
        ours, theirs = _h5_tree(f["specifications"]), _h5_tree(g["specifications"])
        assert ours.keys() == theirs.keys() and {"core", "hdmf-common"} <= set(f["specifications"])
        for name in theirs:
            assert ours[name][0] == theirs[name][0], name
            assert ours[name][1] == theirs[name][1], name
    assert set(NWBHDF5IO.get_namespaces(str(fast))) == set(NWBHDF5IO.get_namespaces(str(tmp_path / "hdmf.nwb")))
    with NWBHDF5IO(str(fast), "r", load_namespaces=True) as io:
        assert len(io.read().acquisition) == 1


def test_nwb1_reader_on_allen_layout(tmp_path):
    rate = 20_000.0
    t = np.arange(int(1.5 * rate)) / rate
    i = np.where((t >= 0.3) & (t < 1.3), 150.0, 0.0)
    v = -70 + 0.01 * i
    path = write_nwb1_cell(tmp_path / "ephys.nwb", [
        {"sweep_number": 5, "stimulus_name": "Long Square", "amplitude_pa": 150.0, "v_mv": v, "i_pa": i,
         "spike_times_s": [0.5, 0.6]},
        {"sweep_number": 9, "stimulus_name": "Ramp", "amplitude_pa": 0.0, "v_mv": v, "i_pa": i},
    ], rate)
    table = read_nwb1_sweep_table(path)
    assert table.sweep_number.tolist() == [5, 9]
    assert table.stimulus_name.tolist() == ["Long Square", "Ramp"]
    assert table.n_spikes.iloc[0] == 2
    sw = load_nwb1_sweep(path, 5)
    np.testing.assert_allclose(sw.v_mv, v, atol=1e-4)
    np.testing.assert_allclose(sw.i_pa, i, atol=1e-3)
    np.testing.assert_allclose(sw.spike_times_s, [0.5, 0.6])
    with h5py.File(path) as f:  # the epoch links point at the same series, as in Allen files
        assert f["epochs/Sweep_5/response/timeseries/data"].shape == f["acquisition/timeseries/Sweep_5/data"].shape


def test_corrupt_and_truncated_files_are_skipped_and_counted(tiny_demo, tmp_path):
    good = sorted((tiny_demo / "demo" / "raw").glob("sub-*/*.nwb"))[:2]
    files = {}
    for k, src in enumerate(good):
        dst = tmp_path / f"cell{k}.nwb"
        shutil.copy(src, dst)
        files[k] = dst
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 3])  # truncated download
    (tmp_path / "junk.nwb").write_bytes(b"not an hdf5 file at all")
    files[2] = tmp_path / "junk.nwb"
    with pytest.raises(RecordingError, match=r"cannot open .*junk.nwb as HDF5"):
        read_nwb2_sweep_table(files[2])
    sweeps, qc = scan_recordings(files, "nwb2", tmp_path, n_jobs=1)
    status = qc.set_index("specimen_id").qc_status
    assert status[0] == "ok"
    assert status[1].startswith("unreadable") and status[2].startswith("unreadable")
    assert set(sweeps.specimen_id) == {0}


def test_truncated_sweep_is_marked_and_left_out(tmp_path):
    from sts_utils.data.nwb import write_nwb2_cell
    from sts_utils.data.recordings import scan_nwb2_file

    rate = 20_000.0
    n = int(1.2 * rate)
    t = np.arange(n) / rate
    sweeps = []
    for k, amp in enumerate([50.0, 100.0, 150.0]):
        i = np.where((t >= 0.1) & (t < 1.1), amp, 0.0)
        v = -70 + 0.05 * i
        if k == 2:
            v = v[: n // 2]  # the recording stopped half-way
        sweeps.append({"sweep_number": k + 1, "v_mv": v, "i_pa": i, "stimulus_code": "X4PS_SupraThresh"})
    path = write_nwb2_cell(tmp_path / "sub-1" / "sub-1_ses-1_icephys.nwb", 1, sweeps, rate, "1", "test")
    table = scan_nwb2_file(path, 1, tmp_path)
    assert table.sweep_qc.tolist() == ["ok", "ok", "truncated"]
    assert table.stimulus_kind.unique().tolist() == ["Long Square"]
    assert table.amplitude_pa.tolist()[:2] == [50.0, 100.0]
