"""Classifying new cells with bundles: the same images and probabilities as the test split, bad input, CLI."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sts_utils.pages import plots
from sts_utils.stages import bundle, new_cells, predict
from sts_utils.core.config import CLASSES
from sts_utils.core.errors import TableError
from sts_utils.stages.evaluation import predict_test_split
from sts_utils.data.nwb import load_nwb2_sweep, read_nwb2_sweep_table, write_nwb1_cell
from sts_utils.data.recordings import TEETER_EPOCHS_S
from sts_utils.stages.scalograms import ScalogramParams
from sts_utils.data.tables import write_cells, write_spike_trains
from tests.conftest import ROOT
from tests.test_bundle import trained_copy

P_COLS = [f"p_{c}" for c in CLASSES]


@pytest.fixture(scope="module")
def setup(tiny_demo, tmp_path_factory):
    """A trained copy of the tiny demo folder and the bundle of its resnet18."""
    root = tmp_path_factory.mktemp("predict")
    data = trained_copy(tiny_demo, root)
    b = bundle.export_bundle("demo", "resnet18", data, root / "bundles" / "resnet18", figures_root=root / "figs")
    return data, b


def nwb_files(data: Path) -> list[Path]:
    return sorted((data / "demo" / "raw").glob("sub-*/*.nwb"))


def spike_bundle(b: Path, dest: Path) -> Path:
    """The bundle relabelled as trained on teeter2018-style spike trains (for the spike-table path)."""
    out = dest / "spikes_bundle"
    shutil.copytree(b, out)
    card = json.loads((out / "bundle.json").read_text())
    s = card["scalograms"]
    s["params"]["signal"] = "spikes"
    s["input_kind"] = "spike_trains"
    s["window_s"] = 3.0 + s["params"]["pre_s"] + s["params"]["post_s"]
    params = ScalogramParams(**{**s["params"], "offsets_pa": tuple(s["params"]["offsets_pa"])})
    s["freqs_hz"] = params.frequencies_hz(s["window_s"]).tolist()
    s["times_s"] = ((np.arange(params.store_times) + 0.5) * s["window_s"] / params.store_times - params.pre_s).tolist()
    s["channel_names"] = ["noise epoch 2", "noise epoch 3"]
    card["bundle_sha256"] = bundle.card_digest(card)  # as an export on such data would sign it
    (out / "bundle.json").write_text(json.dumps(card))
    return out


def spike_rows(n_cells: int = 2, seed: int = 0) -> pd.DataFrame:
    """One row per spike: ``n_cells`` cells x 3 repeats x epochs 2 and 3 of Poisson spikes."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in range(n_cells):
        for rep in range(3):
            for ep in (2, 3):
                a, b = TEETER_EPOCHS_S[ep]
                for t in np.sort(rng.uniform(a, b, 20 + 10 * cell)):
                    rows.append({"cell_id": f"cell-{cell}", "repeat": rep, "epoch": ep, "spike_times_s": t})
    return pd.DataFrame(rows)


def test_predicting_the_nwb_files_reproduces_the_test_split(setup, tmp_path):
    data, b = setup
    table = predict.predict_cells([b], data / "demo" / "raw", tmp_path / "out", device="cpu", progress=False)
    ref, _ = predict_test_split("demo", "resnet18", data, device="cpu")
    merged = ref.merge(table, on="specimen_id")
    assert len(merged) == len(ref) > 0 and (merged["status"] == "ok").all()
    assert np.allclose(merged[P_COLS].to_numpy(), merged[[f"resnet18_p_{c}" for c in CLASSES]].to_numpy(), atol=1e-5)
    assert np.allclose(merged[P_COLS].to_numpy(), merged[[f"ensemble_p_{c}" for c in CLASSES]].to_numpy(), atol=1e-5)
    assert (merged["pred"] == merged["ensemble_class"]).all()
    index = pd.read_csv(data / "demo" / "scalograms" / "index.csv").set_index("specimen_id")
    used = table.set_index("specimen_id").loc[index.index]
    assert (used["sweep_ch0"] == index["sweep_ch0"]).all() and (used["sweep_ch1"] == index["sweep_ch1"]).all()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.csv", "run.json", "skipped.csv"]
    assert not list(tmp_path.glob(".out.*")), "temporary folder left behind"


def test_cli_on_a_folder_with_a_corrupt_file_predicts_the_rest_and_lists_it(setup, tmp_path, capsys):
    data, b = setup
    inp = tmp_path / "in"
    inp.mkdir()
    for p in nwb_files(data)[:2]:
        shutil.copy(p, inp / p.name)
    (inp / "broken_123.nwb").write_bytes(b"not an nwb file" * 100)
    rc = predict.main(["--models", str(b), "--input", str(inp), "--out", str(tmp_path / "out"), "--figures",
                       "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(table) == 3 and (table["status"] == "ok").sum() == 2
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert list(skipped["cell"]) == ["broken_123.nwb"] and skipped["reason"].iloc[0].startswith("unreadable")
    assert int(skipped["specimen_id"].iloc[0]) == 1  # the digits of "broken_123" are no id (issue 23): assigned
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == 2
    assert "2 predicted, 1 skipped" in capsys.readouterr().out


def test_an_nwb1_file_is_recognised_by_its_layout(setup, tmp_path):
    data, b = setup
    src = nwb_files(data)[0]
    sweeps = []
    for r in read_nwb2_sweep_table(src).itertuples():
        sw = load_nwb2_sweep(src, r.response_path, r.stimulus_path)
        sweeps.append({"sweep_number": r.sweep_number, "stimulus_name": "Long Square", "amplitude_pa": np.nan,
                       "v_mv": sw.v_mv, "i_pa": sw.i_pa})
    write_nwb1_cell(tmp_path / "in" / "sub-900000000.nwb", sweeps, sw.sampling_rate_hz)
    v1 = predict.predict_cells([b], tmp_path / "in", tmp_path / "o1", progress=False)
    v2 = predict.predict_cells([b], src, tmp_path / "o2", progress=False)
    assert predict.recording_format(tmp_path / "in" / "sub-900000000.nwb") == "nwb1"
    assert predict.recording_format(src) == "nwb2"
    assert v1["status"].iloc[0] == "ok" and v1["specimen_id"].iloc[0] == 900000000
    cols = [f"ensemble_p_{c}" for c in CLASSES]
    assert np.allclose(v1[cols].to_numpy(), v2[cols].to_numpy(), atol=1e-3)  # float32 storage in the NWB 1 copy


def test_a_bundle_of_other_scalogram_settings_is_refused(setup, tmp_path):
    data, b = setup
    other = tmp_path / "other"
    shutil.copytree(b, other)
    card = json.loads((other / "bundle.json").read_text())
    card["scalograms"]["params"]["pre_s"] = 0.2
    card["bundle_sha256"] = bundle.card_digest(card)  # a bundle exported on other settings
    (other / "bundle.json").write_text(json.dumps(card))
    with pytest.raises(bundle.BundleError, match="other scalogram settings") as err:
        predict.predict_cells([b, other], data / "demo" / "raw", tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    # a voltage-trained bundle given spike times
    spikes = tmp_path / "spikes.csv"
    spike_rows().to_csv(spikes, index=False)
    with pytest.raises(bundle.BundleError, match="trained on voltage recordings .* spike-time tables"):
        predict.predict_cells([b], spikes, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_a_spike_table_with_a_missing_column_is_a_one_line_error(setup, tmp_path, capsys):
    _, b = setup
    path = tmp_path / "spikes.csv"
    spike_rows().drop(columns=["epoch"]).to_csv(path, index=False)
    with pytest.raises(TableError) as err:
        predict.read_spike_table(path)
    assert str(err.value).startswith(f"{path}: missing column(s) epoch") and "\n" not in str(err.value)
    assert predict.main(["--models", str(spike_bundle(b, tmp_path)), "--input", str(path),
                         "--out", str(tmp_path / "out")]) == 2
    err_line = capsys.readouterr().err.strip()
    assert "missing column(s) epoch" in err_line and "\n" not in err_line
    assert not (tmp_path / "out").exists()


def test_spike_tables_one_row_per_spike_or_a_list_per_row_give_the_same_predictions(setup, tmp_path):
    _, b = setup
    sb = spike_bundle(b, tmp_path)
    per_spike = spike_rows()
    per_spike.to_csv(tmp_path / "per_spike.csv", index=False)
    lists = (per_spike.groupby(["cell_id", "repeat", "epoch"])["spike_times_s"].apply(lambda s: list(s)).reset_index())
    lists.to_parquet(tmp_path / "lists.parquet", index=False)
    text = lists.assign(spike_times_s=lists["spike_times_s"].map(lambda s: " ".join(f"{t!r}" for t in s)))
    text.to_csv(tmp_path / "text.csv", index=False)
    out = [predict.predict_cells([sb], tmp_path / name, tmp_path / f"o{k}", progress=False)
           for k, name in enumerate(["per_spike.csv", "lists.parquet", "text.csv"])]
    assert list(out[0]["cell"]) == ["cell-0", "cell-1"] and (out[0]["status"] == "ok").all()
    for o in out[1:]:
        assert np.allclose(o["ensemble_p_Pvalb"], out[0]["ensemble_p_Pvalb"], atol=1e-7)
    # a cell without epoch 3 is listed with the reason, not dropped
    partial = per_spike[~((per_spike.cell_id == "cell-1") & (per_spike.epoch == 3))]
    partial.to_csv(tmp_path / "partial.csv", index=False)
    t = predict.predict_cells([sb], tmp_path / "partial.csv", tmp_path / "o9", progress=False)
    assert list(t["status"]) == ["ok", "skipped"] and "epoch 3" in t["reason"].iloc[1]


def test_out_is_never_half_written_nor_a_foreign_folder_replaced(setup, tmp_path):
    data, b = setup
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(predict.PredictError, match="not an earlier predictions folder"):
        predict.predict_cells([b], nwb_files(data)[0], foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    predict.predict_cells([b], nwb_files(data)[0], out, progress=False)
    predict.predict_cells([b], nwb_files(data)[1], out, progress=False)  # an earlier run is replaced whole
    assert pd.read_csv(out / "predictions.csv")["specimen_id"].tolist() == [900000001]
    with pytest.raises(bundle.BundleError, match="no such model bundle"):
        predict.predict_cells([tmp_path / "missing"], nwb_files(data)[0], tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()


def test_cli_help():
    res = subprocess.run([sys.executable, "-m", "sts_utils.stages.predict", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and "--models" in res.stdout and "spike_times_s" in res.stdout


def test_the_unsure_cells_of_a_spike_time_dataset_are_predicted_and_summarised(setup, tmp_path):
    """teeter2018's case: the cells left out of the 4 classes, from spike_trains.parquet, grouped by Cre line."""
    _, b = setup
    sb = spike_bundle(b, tmp_path)
    ddir = tmp_path / "data" / "teeter2018"
    rows = spike_rows(n_cells=3)
    rows["specimen_id"] = rows["cell_id"].str[-1].astype(int) + 100
    trains = (rows.groupby(["specimen_id", "repeat", "epoch"])["spike_times_s"].apply(lambda s: s.to_numpy())
              .reset_index().rename(columns={"repeat": "sweep_number"}))
    trains["stimulus_kind"], trains["time_scale"] = "Noise 1", 1.0
    trains["epoch_start_s"] = trains["epoch"].map(lambda e: TEETER_EPOCHS_S[e][0])
    trains["epoch_end_s"] = trains["epoch"].map(lambda e: TEETER_EPOCHS_S[e][1])
    write_spike_trains(trains, ddir / "spike_trains.parquet")
    write_cells(pd.DataFrame({"specimen_id": [100, 101, 102], "label": ["Unsure", "Unsure", "Pvalb"],
                              "label_source": "cre", "source": "teeter2018", "qc_status": "ok",
                              "cre_line": ["Htr3a-Cre_NO152", "Nkx2-1-CreERT2", "Pvalb-IRES-Cre"]}), ddir / "cells.csv")
    path, unsure = new_cells.unlabelled_cells("teeter2018", tmp_path / "data", ddir / "new_cells")
    assert list(unsure["specimen_id"]) == [100, 101]
    table = predict.predict_cells([sb], path, ddir / "new_cells" / "predictions", progress=False)
    assert list(table["specimen_id"]) == [100, 101] and (table["status"] == "ok").all()
    table = table.merge(unsure[["specimen_id", "cre_line"]], on="specimen_id")
    summary = new_cells.class_distribution(table, "cre_line")
    assert list(summary["predicted"]) == [1, 1]
    assert np.allclose(summary[[f"share_{c}" for c in CLASSES]].sum(axis=1), 1)
    assert "Htr3a-Cre_NO152 (1 cells" in new_cells.distribution_reading(summary, "cre_line")
    plots.distribution_figure(table, "cre_line", "test").savefig(tmp_path / "f.png")


def test_a_dataset_without_unlabelled_cells_gives_an_empty_summary_with_its_columns_and_says_so():
    empty = new_cells.no_predictions().assign(label_source=pd.Series(dtype=object))
    summary = new_cells.class_distribution(empty, "label_source")
    assert summary.empty and list(summary.columns[:4]) == ["label_source", "cells", "predicted", "skipped"]
    assert "share_Vip/Lamp5" in summary.columns
    assert "every cell of the dataset has one of the four labels" in new_cells.distribution_reading(summary, "label_source")
