"""README's result tables are the files' numbers: the check passes on the repository and fails on a planted mismatch."""
import pandas as pd

from sts_utils.pages import report
from tests.conftest import ROOT


def test_readme_results_agree_with_the_committed_tables():
    text = (ROOT / "README.md").read_text()
    assert set(report.expected_blocks(text)) >= {"demo", "teeter2018"}
    assert report.mismatches(text) == []


def test_a_planted_mismatch_is_caught_and_update_repairs_it(tmp_path):
    figs = tmp_path / "figures"
    (figs / "demo").mkdir(parents=True)
    table = pd.DataFrame({"model": ["resnet18", "lightgbm"], "balanced_accuracy": [0.75, 0.9], "ci_low": [0.65, 0.83],
                          "ci_high": [0.84, 0.96], "bacc_mean_over_repeats": [0.75, 0.9], "bacc_sd_over_repeats": [0.0, 0.0],
                          "n_repeats": [1, 1], "recall_Pvalb": [0.95, 1.0], "recall_Sst": [0.6, 0.85],
                          "recall_Vip/Lamp5": [0.7, 0.8], "recall_Excitatory": [0.75, 0.95], "weights": ["random", "n/a"],
                          "image_size": ["64", "n/a"], "note": ["", "LightGBM on 33 features (all; ipfx)"]})
    table.to_csv(figs / "demo" / "results_table.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:demo -->\nold\n<!-- /results:demo -->\nend\n")
    assert report.mismatches(readme.read_text(), figs) == ["demo"]
    assert report.update(readme, figs) == ["demo"]
    text = readme.read_text()
    assert "| ResNet18 (64 px, random init) | 0.750 (0.650–0.840) |" in text and text.endswith("end\n")
    assert report.mismatches(text, figs) == []
    readme.write_text(text.replace("0.750 (0.650", "0.760 (0.650"))  # one number typed by hand
    assert report.mismatches(readme.read_text(), figs) == ["demo"]
    assert report.main(["--readme", str(readme), "--figures-dir", str(figs), "--check"]) == 1
