import numpy as np
import pandas as pd
import pytest

from sts_utils.stages.splits import default_split, split_counts, split_reading, stratified_splits
from sts_utils.compute.stats import stratified_kfold_splits


def cohort():
    labels = ["Excitatory"] * 60 + ["Pvalb"] * 20 + ["Sst"] * 12 + ["Vip/Lamp5"] * 8
    return pd.DataFrame({"specimen_id": np.arange(1000, 1100), "label": labels})


def test_splits_are_stratified_disjoint_and_reproducible():
    cells = cohort()
    s = stratified_splits(cells, test_fraction=0.25, n_repeats=3, seed=4)
    for r, g in s.groupby("repeat"):
        assert not g.specimen_id.duplicated().any()
        assert set(g.specimen_id) == set(cells.specimen_id)
        test = g[g.split == "test"].merge(cells, on="specimen_id")
        frac = test.label.value_counts() / cells.label.value_counts()
        assert frac.between(0.15, 0.35).all()
    assert s.equals(stratified_splits(cells, test_fraction=0.25, n_repeats=3, seed=4))
    assert not s.equals(stratified_splits(cells, test_fraction=0.25, n_repeats=3, seed=5))
    t0 = set(s[(s.repeat == 0) & (s.split == "test")].specimen_id)
    t1 = set(s[(s.repeat == 1) & (s.split == "test")].specimen_id)
    assert t0 != t1


def test_split_rejects_unknown_labels_and_bad_fraction():
    cells = cohort()
    with pytest.raises(ValueError, match="Unsure"):
        stratified_splits(cells.assign(label=["Unsure"] + list(cells.label[1:])))
    with pytest.raises(ValueError, match=r"^test_fraction must be in \(0, 1\), got 1.5$"):
        stratified_splits(cells, test_fraction=1.5)


def test_default_split_is_five_folds_for_real_data_and_one_holdout_for_demo():
    assert default_split("demo") == ("holdout", 1)
    assert default_split("teeter2018") == ("kfold", 5)
    assert default_split("teeter2018", "holdout") == ("holdout", 1)
    assert default_split("demo", "kfold") == ("kfold", 5)
    assert default_split("teeter2018", n_repeats=3) == ("kfold", 3)


def test_split_reading_says_every_cell_is_tested_once_for_folds():
    cells = cohort()
    folds = stratified_kfold_splits(cells, n_folds=5, seed=0)
    text = split_reading({"splits": folds, "counts": split_counts(folds, cells), "mode": "kfold"})
    assert text.startswith("100 cells in 5 stratified folds; every cell is tested exactly once; fold 0 trains on 80")
    broken = folds.copy()
    broken.loc[(broken.repeat == 1) & (broken.split == "test"), "split"] = "train"
    assert "NOT every cell" in split_reading({"splits": broken, "counts": split_counts(broken, cells), "mode": "kfold"})
