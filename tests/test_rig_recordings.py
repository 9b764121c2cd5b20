"""Page 10: real rig recordings through the bundles of a dataset (issue 23, item 5)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sts_utils.stages import bundle, rig_recordings
from sts_utils.pages import plots
from sts_utils.core.config import CLASSES
from sts_utils.pages.runner import execute_notebook
from tests.conftest import ROOT
from tests.test_bundle import trained_copy


def fake_table(calls: dict[str, list[str]]) -> pd.DataFrame:
    """predictions.csv rows: ``set -> ensemble classes`` (``skip`` for a skipped cell)."""
    rows = []
    for name, classes in calls.items():
        for k, c in enumerate(classes):
            ok = c != "skip"
            p = {f"ensemble_p_{x}": (0.7 if x == c else 0.1) for x in CLASSES}
            rows.append({"cell": f"{name}/c{k}.abf", "status": "ok" if ok else "skipped",
                         "reason": "" if ok else "no depolarizing long-square sweep (3 sweeps)",
                         "ensemble_class": c if ok else np.nan, "ensemble_probability": 0.7 if ok else np.nan,
                         "sweep_qc": "ok: 10; no step found: 2", **p})
    table = pd.DataFrame(rows)
    return table.assign(set=table["cell"].str.split("/").str[0], known_type=table["cell"].map(rig_recordings.known_type))


def test_known_types_come_from_the_data_readme():
    assert rig_recordings.known_type("sscx_l5pc/C060109A1-SR-C1") == "pyramidal"
    assert rig_recordings.known_type("ferguson2015/PYR1.abf") == "pyramidal"
    assert rig_recordings.known_type("hippocampus_hub/99111002.nwb") == "interneuron"
    assert rig_recordings.known_type("pyabf/2019_07_24_0055_fsi.abf") == "interneuron"
    assert rig_recordings.known_type("pyabf/18711001.abf") == ""


def test_summary_counts_cells_sweeps_and_classes_per_set():
    table = fake_table({"sscx_l5pc": ["Excitatory", "Pvalb", "skip"], "pyabf": ["Sst"]})
    s = rig_recordings.set_summary(table).set_index("set")
    assert s.loc["sscx_l5pc", ["cells", "predicted", "skipped", "sweeps", "sweeps_ok"]].tolist() == [3, 2, 1, 36, 30]
    assert s.loc["sscx_l5pc", "skip_reasons"] == "no depolarizing long-square sweep: 1"
    assert s.loc["sscx_l5pc", "n_Excitatory"] == 1 and s.loc["pyabf", "n_Sst"] == 1
    assert s.loc["sscx_l5pc", "mean_p_Excitatory"] == pytest.approx(0.4)


def test_reading_says_what_pyramidal_cells_and_interneurons_are_called():
    wrong = rig_recordings.reading(fake_table({"sscx_l5pc": ["Pvalb", "Pvalb", "Sst"], "hippocampus_hub": ["Excitatory"]}),
                                   "demo")
    assert "The 3 pyramidal cells (sets sscx_l5pc) are called 2 Pvalb, 1 Sst: 0% Excitatory" in wrong
    assert "(0% an interneuron class)" in wrong
    assert "do not recognise real pyramidal cells or interneurons" in wrong
    right = rig_recordings.reading(fake_table({"ferguson2015": ["Excitatory", "Excitatory"], "hippocampus_hub": ["Pvalb"]}),
                                   "demo")
    assert "100% Excitatory" in right and "right side of the pyramidal/interneuron divide" in right


def test_the_page_says_where_the_data_come_from_when_they_are_absent(tiny_demo, tmp_path):
    out = execute_notebook(ROOT / "notebooks" / "10_rig_recordings.py", tmp_path / "10.ipynb",
                           {"DATA_DIR": str(tiny_demo), "FIGURES_DIR": str(tmp_path / "figs"),
                            "RIG_DIR": str(tmp_path / "no_such_folder")}, cwd=ROOT, log_output=False)
    text = out.read_text()
    assert "The real recordings are not on this machine" in text and "NWBShowcase" in text
    summary = pd.read_csv(tmp_path / "figs" / "demo" / "rig_recordings_summary.csv")
    assert summary["cells"].tolist() == [0]


def test_every_real_set_is_read_classified_and_shown(tiny_demo, tmp_path, shared_data):
    data = trained_copy(tiny_demo, tmp_path)
    b = bundle.export_bundle("demo", "resnet18", data, data / "demo" / "bundles" / "resnet18", figures_root=tmp_path / "f")
    folder = shared_data / "rig_recordings"
    started = time.time()
    table = rig_recordings.classify([b], folder, tmp_path / "out", device="cpu", n_jobs=2)
    summary = rig_recordings.set_summary(table)
    examples = rig_recordings.examples(table, [b], folder)
    fig = plots.rig_examples_figure(examples)
    elapsed = time.time() - started
    assert set(summary["set"]) == {"ferguson2015", "hippocampus_hub", "pyabf", "sscx_l5pc"}
    assert summary["cells"].sum() == 21 and summary["predicted"].sum() >= 10
    assert (tmp_path / "out" / "predictions.csv").is_file() and (tmp_path / "out" / "skipped.csv").is_file()
    assert set(examples) == set(summary.loc[summary["predicted"] > 0, "set"])
    for ex in examples.values():
        assert all(start < end for *_, start, end in ex["sweeps"])
        assert max(np.max(v) for _, _, v, *_ in ex["sweeps"]) > 0  # spikes in mV, not volts
    assert len(fig.axes) >= 4 * len(examples)
    text = rig_recordings.reading(table, "demo")
    assert "pyramidal cells" in text
    assert elapsed < 60, elapsed


def test_a_page_shows_the_rig_folder_relative_to_the_checkout_never_as_a_machine_path():
    shown = rig_recordings.shown_path(rig_recordings.rig_dir())
    assert shown == os.path.join("..", "shared", "data", "rig_recordings")
    assert rig_recordings.shown_path(Path("rigs")) == "rigs"
