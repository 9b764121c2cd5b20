"""Notebook 08's reading: its verdicts follow the fold-level test when there are folds."""
import numpy as np
import pandas as pd

from sts_utils.stages.comparison import SAME_INPUT, ComparisonResult, comparison_reading


def result(paired: pd.DataFrame, curve: pd.DataFrame) -> ComparisonResult:
    empty = pd.DataFrame()
    return ComparisonResult(empty, paired, curve, empty, "features", "densenet121")


CURVE = pd.DataFrame({"model": ["densenet121", SAME_INPUT] * 2, "fraction": [0.25, 0.25, 1.0, 1.0],
                      "balanced_accuracy": [0.60, 0.55, 0.60, 0.70]})


def test_with_folds_the_corrected_t_test_decides_and_both_p_values_are_given():
    paired = pd.DataFrame([{"model": "mobilenet_v2", "reference": SAME_INPUT, "difference": -0.071, "p_permutation": 0.015,
                            "n_cells": 560, "mean_diff": -0.073, "ci_low": -0.171, "ci_high": 0.026,
                            "p_corrected_t": 0.111, "n_folds": 5.0},
                           {"model": "lightgbm", "reference": SAME_INPUT, "difference": 0.149, "p_permutation": 0.0,
                            "n_cells": 560, "mean_diff": 0.149, "ci_low": 0.077, "ci_high": 0.221,
                            "p_corrected_t": 0.005, "n_folds": 5.0}])
    text = comparison_reading(result(paired, CURVE))
    mobile, lgbm, curve = text.splitlines()
    # significant for the permutation test over cells, not for the test that sees the folds' training overlap
    assert "p = 0.015" in mobile and "p = 0.111" in mobile and mobile.endswith("not beyond chance.")
    assert "trails" in mobile and "5 folds" in mobile
    assert "p < 0.001" in lgbm and "p = 0.005" in lgbm and lgbm.endswith(": beyond chance.")
    assert "densenet121 leads by 0.050" in curve and "the feature model leads by 0.100" in curve
    assert curve.endswith("more data does not close it here.")


def test_one_split_falls_back_to_the_permutation_test():
    paired = pd.DataFrame([{"model": "resnet18", "reference": SAME_INPUT, "difference": 0.1, "p_permutation": 0.02,
                            "n_cells": 80, "mean_diff": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                            "p_corrected_t": np.nan, "n_folds": np.nan}])
    line = comparison_reading(result(paired, CURVE.iloc[:0])).splitlines()
    assert len(line) == 1 and "one split" in line[0] and line[0].endswith(": beyond chance.") and "beats" in line[0]
