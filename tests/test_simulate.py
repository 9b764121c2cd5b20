"""The simulated cohort behaves like the classes it stands for, through the project's own readers."""
import numpy as np
import pandas as pd
import pytest

from sts_utils.core.config import CLASSES
from sts_utils.compute.simulate import Protocol, cohort_design, simulate_cells
from sts_utils.data.recordings import load_sweep
from sts_utils.compute.sweeps import analyse_long_squares, find_rheobase


@pytest.fixture(scope="module")
def counts(tiny_demo):
    """Spike counts of every long-square sweep of every demo cell (ipfx detection on the NWB files)."""
    cells = pd.read_csv(tiny_demo / "demo" / "cells.csv")
    sweeps = pd.read_csv(tiny_demo / "demo" / "sweeps.csv")
    rows = []
    for sid, g in sweeps.groupby("specimen_id"):
        t = analyse_long_squares(g, lambda row: load_sweep(row, tiny_demo / "demo" / "raw")).table
        rows.append(t.assign(specimen_id=sid))
    return pd.concat(rows).merge(cells[["specimen_id", "label", "model_rheobase_pa"]], on="specimen_id")


def test_fi_curves_rise_with_current(counts):
    for sid, g in counts[counts.amplitude_pa > 0].groupby("specimen_id"):
        g = g.sort_values("amplitude_pa")
        rates = g.rate_hz.to_numpy()
        assert rates[-1] > rates[0], sid
        # monotone up to noise: never more than 3 Hz lower than the previous step
        assert np.all(np.diff(rates) > -3.0), (sid, rates)


def test_rheobase_found_by_sweep_logic_within_one_step_of_model(counts):
    for sid, g in counts.groupby("specimen_id"):
        rheo, _ = find_rheobase(g)
        assert abs(rheo - g.model_rheobase_pa.iloc[0]) <= 20.0, sid


def test_fast_spiking_narrower_and_faster_than_regular_spiking(counts):
    pv = counts[counts.label == "Pvalb"]
    ex = counts[counts.label == "Excitatory"]
    assert pv.width_s.median() < 0.7 * ex.width_s.median()
    max_pv = pv.groupby("specimen_id").rate_hz.max()
    max_ex = ex.groupby("specimen_id").rate_hz.max()
    assert max_pv.min() > max_ex.max()


def test_regular_spiking_adapts_more_than_fast_spiking(tiny_demo):
    from sts_utils.stages.features import cell_long_square_features

    cells = pd.read_csv(tiny_demo / "demo" / "cells.csv")
    sweeps = pd.read_csv(tiny_demo / "demo" / "sweeps.csv")
    adapt = {}
    for r in cells.itertuples():
        f = cell_long_square_features(sweeps[sweeps.specimen_id == r.specimen_id], tiny_demo / "demo" / "raw")
        adapt.setdefault(r.label, []).append(f["adaptation"])
    assert np.median(adapt["Excitatory"]) > np.median(adapt["Pvalb"]) + 0.05


def test_low_threshold_spiking_cells_rebound_after_hyperpolarization(counts):
    hyper = counts[counts.amplitude_pa == -90]
    rebound = hyper.groupby("label").n_spikes_after_step.min()
    assert rebound["Sst"] >= 1
    assert hyper[hyper.label.isin(["Pvalb", "Excitatory"])].n_spikes_after_step.max() == 0


def test_same_seed_same_traces_other_seed_different():
    proto = Protocol(baseline_s=0.05, step_s=0.3, post_s=0.05, below_rheobase_steps=0, above_rheobase_steps=1,
                     hyperpolarizing_pa=())
    design = cohort_design(1, seed=3).iloc[:2]
    a = simulate_cells(design, seed=0, protocol=proto, progress=False)
    b = simulate_cells(design, seed=0, protocol=proto, progress=False)
    c = simulate_cells(design, seed=1, protocol=proto, progress=False)
    for ra, rb, rc in zip(a, b, c):
        assert np.array_equal(ra["v_mv"], rb["v_mv"])
        assert not np.array_equal(ra["v_mv"], rc["v_mv"])


def test_cohort_design_is_balanced_and_checks_input():
    d = cohort_design(5, seed=0)
    assert d.label.value_counts().to_dict() == {c: 5 for c in CLASSES}
    with pytest.raises(ValueError, match=r"^n_cells_per_class must be >= 1, got 0$"):
        cohort_design(0, seed=0)


def test_compiled_integrator_matches_the_numpy_reference():
    """The numba kernel gives the reference integrator's traces, spike for spike, on one cell per class."""
    proto = Protocol(baseline_s=0.05, step_s=0.4, post_s=0.05, below_rheobase_steps=0, above_rheobase_steps=2,
                     hyperpolarizing_pa=(-50.0,))
    design = cohort_design(1, seed=5)
    new = simulate_cells(design, seed=2, protocol=proto, progress=False, engine="numba")
    old = simulate_cells(design, seed=2, protocol=proto, progress=False, engine="numpy")
    n_spikes = 0
    for rn, ro in zip(new, old):
        assert rn["rheobase_pa"] == ro["rheobase_pa"]
        np.testing.assert_array_equal(rn["amplitudes_pa"], ro["amplitudes_pa"])
        # the same equations and noise stream: differences only from libm's last bits, far below 1 µV
        assert np.abs(rn["v_mv"] - ro["v_mv"]).max() < 1e-3
        for vn, vo in zip(rn["v_mv"], ro["v_mv"]):
            up_n = np.flatnonzero((vn[:-1] < 0) & (vn[1:] >= 0))
            up_o = np.flatnonzero((vo[:-1] < 0) & (vo[1:] >= 0))
            np.testing.assert_array_equal(up_n, up_o)  # same spike times, to the sample (20 µs)
            n_spikes += len(up_o)
    assert n_spikes > 20  # the comparison covered spiking sweeps, not only silent ones


def test_unknown_engine_is_refused_with_its_name():
    with pytest.raises(ValueError, match="engine='fortran' is not a simulator engine"):
        simulate_cells(cohort_design(1, seed=0).iloc[:1], seed=0, engine="fortran")
