"""Model bundles: export -> load round trip, hash check, metrics source, CLI (tiny untrained models, CPU)."""
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sts_utils.stages import bundle
from sts_utils.core.config import CLASSES
from sts_utils.core.errors import DiskFullError
from sts_utils.data.models import build_model, load_checkpoint, save_checkpoint
from sts_utils.data.store import ScalogramStore
from sts_utils.stages.fit import predict_proba
from tests.faults.conftest import put_temporary_files_on_a_full_disk


def add_tiny_model(data_dir: Path, backbone: str = "resnet18", seed: int = 0) -> Path:
    """An untrained 32-px model saved as notebook 04 would (``config.json`` shaped like ``run_finetuning``'s)."""
    torch.manual_seed(seed)
    model, info = build_model(backbone, pretrained="none", image_size=32)
    config = {"dataset": "demo", "backbone": backbone, "repeat": 0, "profile": "test", "train": {},
              "search": {"n_trials": 0}, "refit": {"rule": "early_stopping"}, "model": asdict(info), "best_epoch": 1,
              "n_train": 7, "n_val": 2, "classes": list(CLASSES), "inputs": {}}
    return save_checkpoint(model.eval(), config, data_dir / "demo" / "models" / backbone)


def trained_copy(tiny_demo: Path, dest: Path, backbones=("resnet18",)) -> Path:
    """A copy of the tiny demo data folder with tiny models of ``backbones``."""
    data = dest / "data"
    shutil.copytree(tiny_demo, data)
    for k, b in enumerate(backbones):
        add_tiny_model(data, b, seed=k)
    return data


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory) -> Path:
    return trained_copy(tiny_demo, tmp_path_factory.mktemp("bundle"), ("resnet18", "mobilenet_v2"))


def test_export_then_load_gives_identical_predictions(trained, tmp_path):
    out = bundle.export_bundle("demo", "resnet18", trained, tmp_path / "b", figures_root=tmp_path / "figs")
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "bundle.json", "model.pt"]
    card = json.loads((out / "bundle.json").read_text())
    assert card["model"]["backbone"] == "resnet18" and card["model"]["image_size"] == 32
    assert card["classes"] == list(CLASSES)
    assert card["scalograms"]["input_kind"] == "sweeps" and card["scalograms"]["params"]["n_scales"] == 180
    assert card["training"]["cells_per_class_train_split"] == {c: 2 for c in CLASSES}
    assert card["training"]["simulated"] is True
    assert "computed on the test split" in card["test_metrics"]["source"]
    assert 0 <= card["test_metrics"]["balanced_accuracy"] <= 1
    assert "SIMULATED" in (out / "MODEL_CARD.md").read_text()
    assert not list(tmp_path.glob(".b.*")), "temporary folder left behind"

    model, loaded_card = bundle.load_bundle(out, device="cpu")
    reference, _ = load_checkpoint(trained / "demo" / "models" / "resnet18", "cpu")
    store = ScalogramStore.load("demo", trained)
    x = np.asarray(store.images[:], dtype=np.float32)
    assert np.array_equal(predict_proba(model, x), predict_proba(reference, x))
    assert loaded_card["model_pt_sha256"] == card["model_pt_sha256"]


def test_test_metrics_come_from_the_results_table_when_there_is_one(trained, tmp_path):
    figs = tmp_path / "figs" / "demo"
    figs.mkdir(parents=True)
    pd.DataFrame([{"model": "resnet18", "balanced_accuracy": 0.61, "ci_low": 0.5, "ci_high": 0.7, "accuracy": 0.6,
                   "test_cells": 4}]).to_csv(figs / "results_table.csv", index=False)
    out = bundle.export_bundle("demo", "resnet18", trained, tmp_path / "b", figures_root=tmp_path / "figs")
    metrics = json.loads((out / "bundle.json").read_text())["test_metrics"]
    assert metrics["balanced_accuracy"] == 0.61 and metrics["source"].endswith("results_table.csv")


def test_an_altered_model_file_is_refused(trained, tmp_path):
    out = bundle.export_bundle("demo", "resnet18", trained, tmp_path / "b", figures_root=tmp_path / "figs")
    with open(out / "model.pt", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(bundle.BundleError, match=r"model\.pt: SHA-256 .* differs") as err:
        bundle.load_bundle(out, "cpu")
    assert "\n" not in str(err.value)


def test_a_wrong_bundle_path_is_a_one_line_error(tmp_path):
    for path in (tmp_path / "nope", tmp_path):
        with pytest.raises(bundle.BundleError) as err:
            bundle.load_bundle(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_bundles_of_different_scalogram_settings_are_not_mixed(trained, tmp_path):
    a = bundle.export_bundle("demo", "resnet18", trained, tmp_path / "a", figures_root=tmp_path / "figs")
    b = bundle.export_bundle("demo", "mobilenet_v2", trained, tmp_path / "b", figures_root=tmp_path / "figs")
    cards = [{**bundle.read_card(p), "folder": str(p)} for p in (a, b)]
    assert bundle.check_compatible(cards)["params"]["n_scales"] == 180
    card = json.loads((b / "bundle.json").read_text())
    card["scalograms"]["params"]["n_scales"] = 90
    card["bundle_sha256"] = bundle.card_digest(card)  # a bundle exported on other settings
    (b / "bundle.json").write_text(json.dumps(card))
    cards[1] = {**bundle.read_card(b), "folder": str(b)}
    with pytest.raises(bundle.BundleError, match=r"other scalogram settings .*params\.n_scales"):
        bundle.check_compatible(cards)


@pytest.mark.parametrize("edit", ["offsets_pa", "image_size", "classes_order"])
def test_an_edited_bundle_json_is_refused_in_one_line(trained, tmp_path, edit):
    # issue 26, item 3: everything that decides a prediction is covered by the bundle's check
    out = bundle.export_bundle("demo", "resnet18", trained, tmp_path / "b", figures_root=tmp_path / "figs")
    bundle.load_bundle(out, device="cpu")
    card = json.loads((out / "bundle.json").read_text())
    if edit == "offsets_pa":
        card["scalograms"]["params"]["offsets_pa"] = [60.0, 100.0]
    elif edit == "image_size":
        card["model"]["image_size"] = 96
    else:
        card["test_metrics"]["balanced_accuracy"] = 0.99
    (out / "bundle.json").write_text(json.dumps(card, indent=2))
    with pytest.raises(bundle.BundleError) as err:
        bundle.load_bundle(out, device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(out / "bundle.json") in msg and "export the bundle again" in msg, msg


def test_identical_exports_of_identical_training_runs_have_identical_model_files(tmp_path):
    # issue 26, item 3: torch.save named its zip folder after the random temporary file
    a = add_tiny_model(tmp_path / "a", seed=3)
    b = add_tiny_model(tmp_path / "b", seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "config.json").read_bytes() == (b.parent / "config.json").read_bytes()
    load_checkpoint(a.parent)


def test_a_model_folder_of_two_runs_is_refused_and_a_failed_write_replaces_nothing(tmp_path, monkeypatch):
    # issue 26, item 2: a full disk while model.pt was written left the old weights beside the new config
    first = add_tiny_model(tmp_path / "data", seed=1).parent
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    put_temporary_files_on_a_full_disk(monkeypatch, prefix=".model.pt.")  # the state dict's file only
    with pytest.raises(DiskFullError) as err:
        add_tiny_model(tmp_path / "data", seed=2)
    monkeypatch.undo()
    msg = str(err.value)
    assert "\n" not in msg and "the disk is full" in msg and str(first) in msg, msg
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before, "a failed write changed the model folder"
    # the old weights under a newer run's config: refused in one line, not used
    second = add_tiny_model(tmp_path / "other", seed=2).parent
    shutil.copyfile(second / "config.json", first / "config.json")
    with pytest.raises(ValueError) as err:
        load_checkpoint(first)
    assert "is not the state dict" in str(err.value) and "make train BACKBONE=resnet18" in str(err.value)


def test_cli_exports_every_trained_backbone(trained, tmp_path, capsys):
    rc = bundle.main(["--dataset", "demo", "--backbone", "all", "--data-dir", str(trained), "--out", str(tmp_path / "all"),
                      "--figures-dir", str(tmp_path / "figs")])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["mobilenet_v2", "resnet18"]
    assert bundle.main(["--dataset", "demo", "--backbone", "densenet121", "--data-dir", str(trained),
                        "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "make train" in err and "\n" not in err
