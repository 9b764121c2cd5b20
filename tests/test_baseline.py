"""LightGBM baseline: learns a planted signal, SHAP adds up, the paper's feature selection, bad input."""
import shutil

import numpy as np
import pandas as pd
import pytest

from sts_utils.core.errors import TableError
from sts_utils.stages import baseline, features


def planted(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = pd.DataFrame(rng.standard_normal((n, 6)), columns=[f"f{k}" for k in range(6)])
    X["f0"] += 2.5 * (y == 0) - 2.5 * (y == 1)
    X["f3"] += 2.5 * (y == 2) - 1.0 * (y == 3)
    X.loc[rng.random(n) < 0.1, "f5"] = np.nan  # LightGBM handles missing values natively
    return X, y


def test_planted_signal_is_learned_far_above_chance():
    X, y = planted()
    model, best, trials = baseline.search_lightgbm(X[:180], y[:180], n_iter=4, seed=0, progress=False)
    acc = (model.predict(X[180:]) == y[180:]).mean()
    assert acc > 0.7 and len(trials) == 4 and set(best) == set(baseline.LGBM_SPACE)


def test_shap_contributions_plus_expected_value_equal_raw_margin():
    X, y = planted()
    model, _, _ = baseline.search_lightgbm(X, y, n_iter=0, seed=0, progress=False)
    contrib = baseline.shap_contributions(model, X)
    assert contrib.shape == (len(X), X.shape[1] + 1, 4)
    np.testing.assert_allclose(contrib.sum(axis=1), baseline.raw_margin(model, X), rtol=1e-6, atol=1e-6)
    imp = baseline.importance_table(contrib, list(X.columns))
    assert set(imp.feature[:2]) == {"f0", "f3"}


def test_same_seed_same_model():
    X, y = planted()
    a, _, _ = baseline.search_lightgbm(X, y, n_iter=3, seed=1, progress=False)
    b, _, _ = baseline.search_lightgbm(X, y, n_iter=3, seed=1, progress=False)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_paper_feature_selection_on_the_shared_sample_tables(shared_data):
    clamp = features.read_feature_table(shared_data / "sts_paper" / "sample_PatchClamp_EP_features.csv")
    seq = features.read_feature_table(shared_data / "sts_paper" / "sample_PatchSeq_EP_features.csv")
    assert clamp.specimen_id.dtype == np.int64 and seq.specimen_id.dtype == np.int64
    table = features.select_features([clamp, seq], "paper")
    cols = [c for c in table.columns if c != "specimen_id"]
    assert len(cols) == 15
    assert {"f_i_curve_slope", "adaptation", "latency", "threshold_t_long_square", "upstroke_downstroke_ratio_long_square"} <= set(cols)
    assert "average_ISI" not in cols and "had_burst" not in cols  # dropped by the paper's own renames
    assert len(table) == 96
    onset_free = features.select_features([clamp, seq], "all")
    assert "threshold_t_long_square" not in onset_free and "peak_dt_long_square" in onset_free


def test_bad_input_gets_clear_errors_or_counted_skips(tmp_path):
    p = tmp_path / "f.csv"
    pd.DataFrame({"cell": [1, 2], "x": [1.0, 2.0]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="key column"):
        features.read_feature_table(p)
    feats = pd.DataFrame({"specimen_id": [1, 2, 3], "x": [1.0, np.nan, 3.0], "z": [0.5, np.nan, 1.0]})
    labels = pd.DataFrame({"specimen_id": [1, 2, 3, 4], "label": ["Pvalb", "Sst", "Sst", "Pvalb"]})
    X, y, ids, skipped = baseline.prepare_xy(feats, labels)
    assert list(ids) == [1, 3] and skipped == {"no_feature_values": 1, "without_features": 1}
    with pytest.raises(ValueError, match="unknown class"):
        baseline.prepare_xy(feats, labels.assign(label=["Pvalb", "Unsure", "Sst", "Sst"]))


def test_interval_features_do_not_depend_on_the_stimulus_onset():
    """Two copies of a cell recorded with different onsets give identical interval features."""
    cell = pd.DataFrame({"specimen_id": [1], "threshold_t_long_square": [1.05], "peak_t_long_square": [1.0512],
                         "trough_t_long_square": [1.056], "threshold_v_long_square": [-40.0]})
    shifted = cell.assign(specimen_id=2, threshold_t_long_square=0.61, peak_t_long_square=0.6112, trough_t_long_square=0.616)
    a = features.to_intervals(cell).drop(columns="specimen_id")
    b = features.to_intervals(shifted).drop(columns="specimen_id")
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-12)
    assert "threshold_t_long_square" not in a and np.isclose(a["peak_dt_long_square"].iloc[0], 0.0012)


def test_allen_specimen_details_table_is_read(tmp_path):
    p = tmp_path / "cell_types_specimen_details.csv"
    pd.DataFrame({"specimen__id": [5, 6], "ef__avg_isi": [10.0, 20.0], "line_name": ["Sst-IRES-Cre", "x"],
                  "ef__tau": [12.0, 9.0]}).to_csv(p, index=False)
    df = features.read_feature_table(p)
    assert list(df.columns) == ["specimen_id", "avg_isi", "tau"] and df.specimen_id.tolist() == [5, 6]


def test_probabilities_cover_the_four_classes_when_the_training_split_lacks_one():
    # a registered folder of a few cells: a fold's training split without any Sst cell
    rng = np.random.default_rng(0)
    y = np.repeat([0, 2, 3], 8)
    X = pd.DataFrame({"a": y + rng.normal(0, 0.1, len(y)), "b": rng.normal(0, 1, len(y))})
    model = baseline.make_lgbm({"n_estimators": 5, "min_child_samples": 2}, 0).fit(X, y)
    proba = baseline.class_proba(model, X)
    assert proba.shape == (len(y), 4)
    assert np.allclose(proba[:, 1], 0) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(proba.argmax(axis=1), model.predict(X))


def test_no_cell_with_features_is_one_line_naming_the_folder_and_the_reasons(tiny_demo, tmp_path):
    """Every recording unreadable: compute_features says so in one line (folder, counts per reason, the fix),
    instead of a KeyError on an empty table, and writes no features.csv that would look done."""
    shutil.copytree(tiny_demo / "demo", tmp_path / "demo", ignore=shutil.ignore_patterns("features*"))
    for nwb in (tmp_path / "demo" / "raw").rglob("*.nwb"):
        nwb.write_bytes(nwb.read_bytes()[:2000])  # truncated: no cell can be read back
    with pytest.raises(TableError, match=r"ipfx computed features for none of 12 labelled cells .*RecordingError: 12.*"
                                         r"check sweeps.csv") as err:
        features.compute_features("demo", tmp_path, n_jobs=1, progress=False)
    assert "\n" not in str(err.value) and str(tmp_path / "demo") in str(err.value)
    assert not (tmp_path / "demo" / "features.csv").exists()
