"""Sweep selection rules on constructed sweep tables, and ipfx spike detection on real snippets."""
import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from sts_utils.core.errors import SelectionError
from sts_utils.compute.sweeps import detect_spikes, find_rheobase, select_suprathreshold_sweeps


def table(amps, spikes, numbers=None):
    return pd.DataFrame({"sweep_number": numbers or list(range(1, len(amps) + 1)), "amplitude_pa": amps, "n_spikes": spikes})


def test_rheobase_is_smallest_amplitude_with_a_spike():
    t = table([-90, 50, 70, 90, 110, 130], [0, 0, 1, 3, 5, 8])
    assert find_rheobase(t) == (70.0, 3)


def test_offsets_on_20pa_grid_tie_goes_to_higher_amplitude():
    t = table([50, 70, 90, 110, 130, 150], [0, 1, 2, 4, 6, 9])
    sel = select_suprathreshold_sweeps(t, (40, 50))
    assert sel.rheobase_pa == 70
    assert sel.amplitudes_pa == (110.0, 130.0)  # +40 exact; +50 is a tie between +40 and +60 -> +60
    assert len(set(sel.sweep_numbers)) == 2


def test_offsets_on_10pa_grid_are_exact():
    t = table([60, 70, 80, 90, 100, 110, 120, 130], [0, 1, 1, 2, 2, 3, 3, 4])
    assert select_suprathreshold_sweeps(t, (40, 50)).amplitudes_pa == (110.0, 120.0)


def test_two_distinct_sweeps_even_when_one_is_nearest_to_both():
    t = table([100, 140, 200], [1, 2, 3])
    sel = select_suprathreshold_sweeps(t, (40, 50), max_distance_pa=70)
    assert sel.sweep_numbers == (2, 3)


def test_missing_sweeps_and_silent_cell_and_nan_sweep():
    with pytest.raises(SelectionError) as e:
        select_suprathreshold_sweeps(table([50, 70, 80], [0, 1, 2]), (40, 50))
    assert e.value.reason.startswith("no sweep near rheobase+40")
    with pytest.raises(SelectionError) as e:
        select_suprathreshold_sweeps(table([50, 70, 90], [0, 0, 0]))
    assert e.value.reason == "no spiking long-square sweep"
    # a NaN sweep (trace could not be analysed) is never chosen: its neighbour is taken instead
    t = table([70, 90, 110, 130, 150], [1, 2, np.nan, 5, 7])
    assert select_suprathreshold_sweeps(t, (40, 50), max_distance_pa=30).amplitudes_pa == (130.0, 150.0)
    with pytest.raises(ValueError, match=r"^OFFSETS_PA must be finite and >= 0 pA, got \[-5, 50\]$"):
        select_suprathreshold_sweeps(t, (-5, 50))


def load_snippet(shared_data, name):
    with zipfile.ZipFile(shared_data / "spike_snippets" / f"{name}.txt.zip") as z:
        text = z.read(z.namelist()[0]).decode()
    data = np.loadtxt(io.StringIO(text))
    return data[:, 0], data[:, 1]


@pytest.mark.parametrize("name,expected", [("spike_test_pair", 2), ("spike_test_high_init_dvdt", 3), ("spike_test_var_dt", 6)])
def test_ipfx_detection_on_real_snippets(shared_data, name, expected):
    """Counts checked once by eye on plots of the traces, then fixed here."""
    t, v = load_snippet(shared_data, name)
    spikes = detect_spikes(t, v, None)
    assert len(spikes) == expected
    assert (spikes["peak_v"] > -5).all() and (spikes["threshold_v"] < -25).all()


def test_detection_rejects_nan_trace():
    t = np.arange(1000) / 50_000
    v = np.full(1000, -70.0)
    v[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detect_spikes(t, v, None)
