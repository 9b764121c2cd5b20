"""The confound audit finds a planted source shortcut."""
import numpy as np
import pandas as pd

from sts_utils.stages import audit
from sts_utils.core.config import CLASSES


def test_probe_finds_a_planted_source_shortcut_and_within_source_drops_to_chance():
    rng = np.random.default_rng(0)
    n = 400
    source = rng.integers(0, 2, n)
    # class is tied to the source (two classes per source), and the input only reveals the source
    labels = np.array([CLASSES[2 * s + rng.integers(0, 2)] for s in source])
    X = rng.standard_normal((n, 10))
    X[:, 0] += 3.0 * source
    rows = pd.DataFrame(audit.leakage_probe(X, labels, source, "toy", "source", feature_names=[f"f{k}" for k in range(10)]))
    get = lambda probe: rows.loc[rows.probe == probe, "balanced_accuracy"].iloc[0]
    assert get("group from input") > 0.9
    assert 0.4 < get("class from input (all cells)") < 0.6  # two of four classes told apart: via the source only
    within = rows[rows.probe.str.startswith("class within")].balanced_accuracy
    assert (within < 0.62).all()  # chance within a source is 0.5
    assert get("group from 'f0' alone") > 0.9
    assert get("class without 'f0'") < 0.35


def test_label_quality_rows_and_group_table():
    pred = pd.DataFrame({"specimen_id": [1, 2, 3, 4], "model": "m", "repeat": 0,
                         "true": ["Sst", "Sst", "Pvalb", "Pvalb"], "pred": ["Sst", "Pvalb", "Pvalb", "Pvalb"]})
    cells = pd.DataFrame({"specimen_id": [1, 2, 3, 4], "label_flags": ["", "cre_vs_dendrite", "", ""],
                          "source": ["a", "a", "b", "b"]})
    rows = pd.DataFrame(audit.label_quality(pred, cells)).set_index("probe")
    assert rows.loc["test, all cells", "balanced_accuracy"] == 0.75
    assert rows.loc["test, unflagged cells only", "balanced_accuracy"] == 1.0
    g = audit.group_table(pred, cells)
    assert g.set_index("group").loc["a", "balanced_accuracy"] == 0.5
