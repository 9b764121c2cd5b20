"""Same-input spike-train features on constructed trains with known answers, and on real teeter2018 cells."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sts_utils.data.recordings import read_teeter_cell

from sts_utils.compute.spike_train_features import FEATURE_NAMES, spike_train_feature_table

START_S, END_S = 10.0, 13.0  # teeter2018 epoch 2


def table(repeats: list[np.ndarray], epoch=2, specimen_id: int = 1, start_s: float = START_S, end_s: float = END_S) -> pd.DataFrame:
    """Rows of one cell and epoch; ``repeats`` hold epoch-relative spike times (s)."""
    return pd.DataFrame({"specimen_id": specimen_id, "sweep_number": np.arange(len(repeats)), "stimulus_kind": "Noise 1",
                         "epoch": epoch, "epoch_start_s": start_s, "epoch_end_s": end_s,
                         "spike_times_s": [np.asarray(r, dtype=float) + start_s for r in repeats]})


def poisson(rate_hz: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.poisson(rate_hz * duration_s)
    return np.sort(rng.uniform(0, duration_s, n))


def test_regular_train_rate_cv_lv():
    regular = np.arange(0.05, 3.0, 0.05)  # 20 Hz from 50 ms on: 59 spikes in 3 s
    ft = spike_train_feature_table(table([regular]), epochs=(2,)).iloc[0]
    assert ft["rate_hz_ep2"] == pytest.approx(len(regular) / 3.0)
    assert ft["isi_mean_s_ep2"] == pytest.approx(0.05)
    assert ft["isi_cv_ep2"] == pytest.approx(0.0, abs=1e-9)
    assert ft["lv_ep2"] == pytest.approx(0.0, abs=1e-9)
    assert ft["adaptation_ep2"] == pytest.approx(0.0, abs=1e-9)
    assert ft["burstiness_ep2"] == 0.0
    assert ft["first_spike_latency_s_ep2"] == pytest.approx(0.05)
    # one repeat: across-repeat measures are undefined, not errors
    assert ft["n_repeats"] == 1 and np.isnan(ft["fano_factor_ep2"]) and np.isnan(ft["reliability_ep2"])


def test_poisson_train_cv_and_lv_near_one():
    rng = np.random.default_rng(0)
    train = poisson(100.0, 100.0, rng)  # ~10,000 spikes in one long epoch
    ft = spike_train_feature_table(table([train], start_s=0.0, end_s=100.0), epochs=(2,)).iloc[0]
    assert ft["rate_hz_ep2"] == pytest.approx(100.0, rel=0.05)
    assert ft["isi_cv_ep2"] == pytest.approx(1.0, abs=0.05)
    assert ft["lv_ep2"] == pytest.approx(1.0, abs=0.05)
    assert ft["burstiness_ep2"] == pytest.approx(1 - np.exp(-100.0 * 0.010), abs=0.03)  # P(ISI < 10 ms)


def test_spikes_outside_the_epoch_are_ignored():
    rows = table([np.array([-0.2, 0.5, 1.0, 1.5, 3.3])])
    ft = spike_train_feature_table(rows, epochs=(2,)).iloc[0]
    assert ft["rate_hz_ep2"] == pytest.approx(3 / 3.0)
    assert ft["first_spike_latency_s_ep2"] == pytest.approx(0.5)


def test_identical_repeats_are_reliable_independent_ones_are_not():
    rng = np.random.default_rng(1)
    train = poisson(20.0, 3.0, rng)
    same = spike_train_feature_table(table([train] * 4), epochs=(2,)).iloc[0]
    assert same["reliability_ep2"] == pytest.approx(1.0, abs=1e-6)
    assert same["fano_factor_ep2"] == pytest.approx(0.0, abs=1e-12)
    assert same["n_repeats"] == 4
    indep = spike_train_feature_table(table([poisson(20.0, 3.0, rng) for _ in range(4)]), epochs=(2,)).iloc[0]
    # independent trains share only chance coincidences: E[corr] ~ r / (r + 1 / (2 sigma sqrt(pi))) ~ 0.26 at 20 Hz, 5 ms
    chance = 20.0 / (20.0 + 1 / (2 * 0.005 * np.sqrt(np.pi)))
    assert 0.0 <= indep["reliability_ep2"] < 0.4
    assert indep["reliability_ep2"] == pytest.approx(chance, abs=0.1)
    assert indep["fano_factor_ep2"] > 0


def test_latency_of_a_delayed_train():
    ft = spike_train_feature_table(table([np.array([0.25, 0.4, 0.7]), np.array([0.35, 0.5])]), epochs=(2,)).iloc[0]
    assert ft["first_spike_latency_s_ep2"] == pytest.approx(0.30)


def test_adaptation_sign_follows_ipfx():
    slowing = np.cumsum([0.01, 0.02, 0.04, 0.08])
    ft = spike_train_feature_table(table([slowing]), epochs=(2,)).iloc[0]
    assert ft["adaptation_ep2"] == pytest.approx(1 / 3)  # (2a - a) / (2a + a) for every pair


def test_empty_and_sparse_trains_give_nan_not_errors():
    empty = spike_train_feature_table(table([np.array([]), np.array([])]), epochs=(2,)).iloc[0]
    assert empty["rate_hz_ep2"] == 0.0
    for name in FEATURE_NAMES:
        if name != "rate_hz":
            assert np.isnan(empty[f"{name}_ep2"]), name
    two = spike_train_feature_table(table([np.array([0.1, 0.2])]), epochs=(2,)).iloc[0]
    assert two["isi_mean_s_ep2"] == pytest.approx(0.1)
    assert np.isnan(two["isi_cv_ep2"]) and np.isnan(two["lv_ep2"]) and np.isnan(two["adaptation_ep2"])


def test_generic_epoch_keys_one_repeat_each_and_missing_epochs():
    rows = pd.concat([table([np.array([0.1, 0.3, 0.6])], epoch=0, start_s=0.0, end_s=1.0),
                      table([np.array([0.2, 0.4])], epoch=1, start_s=0.0, end_s=1.0),
                      table([np.array([0.5])], epoch=0, specimen_id=2, start_s=0.0, end_s=1.0)], ignore_index=True)
    ft = spike_train_feature_table(rows, epochs=(0, 1))
    assert list(ft["specimen_id"]) == [1, 2]
    assert {"rate_hz_ep0", "reliability_ep1"} <= set(ft.columns)
    assert ft.loc[0, "rate_hz_ep1"] == pytest.approx(2.0)
    assert np.isnan(ft.loc[1, "rate_hz_ep1"])  # specimen 2 has no epoch 1
    assert list(ft["n_repeats"]) == [1, 1]


def test_real_teeter_cells(shared_data):
    folders = sorted((shared_data / "teeter2018" / "mouse_struc_data_dir").iterdir())
    frames = []
    for folder in folders:
        path = folder / f"{folder.name}_preprocessor_values.json"
        df = read_teeter_cell(path, int(folder.name.split("_")[0]))
        if len(df) and df["sweep_number"].nunique() >= 2:
            frames.append(df)
        if len(frames) == 3:
            break
    assert len(frames) == 3
    ft = spike_train_feature_table(pd.concat(frames, ignore_index=True))
    assert len(ft) == 3 and (ft["n_repeats"] >= 2).all()
    for e in (2, 3):
        assert np.isfinite(ft[f"rate_hz_ep{e}"]).all() and (ft[f"rate_hz_ep{e}"] >= 0).all()
        rel = ft[f"reliability_ep{e}"].dropna()
        assert ((rel >= 0) & (rel <= 1)).all()
    assert ft[["reliability_ep2", "reliability_ep3"]].notna().any(axis=None)
