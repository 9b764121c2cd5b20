"""Attributions on a toy model with a known answer, the deletion test, and all four backbones."""
import numpy as np
import pytest
import torch
from torch import nn

from sts_utils.stages import saliency
from sts_utils.core.config import BACKBONES
from sts_utils.data.models import build_model


class PatchModel(nn.Module):
    """Logit of class 0 = total input inside a fixed (frequency, time) patch; other logits fixed."""

    backbone_name = "toy"

    def __init__(self, shape=(2, 20, 30), patch=(slice(5, 10), slice(12, 20))):
        super().__init__()
        mask = torch.zeros(shape)
        mask[:, patch[0], patch[1]] = 1.0
        self.register_buffer("mask", mask)
        self.features = nn.Identity()  # the "last conv block": its output is the masked input
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        a = self.features(x * self.mask)
        logit0 = a.sum(dim=(1, 2, 3)) * self.scale / 10.0
        return torch.stack([logit0, torch.zeros_like(logit0) + 2.0, torch.zeros_like(logit0), torch.zeros_like(logit0)], 1)


@pytest.fixture
def toy(monkeypatch):
    model = PatchModel()
    monkeypatch.setattr("sts_utils.stages.saliency.last_conv_block", lambda m: m.features)
    x = torch.rand(6, 2, 20, 30).numpy()
    return model, x, model.mask.numpy().astype(bool)


@pytest.mark.parametrize("method", saliency.METHODS)
def test_every_method_puts_the_mass_inside_the_patch(toy, method):
    model, x, inside = toy
    attr = saliency.attribute(model, x, np.zeros(len(x), dtype=int), method, ig_steps=8)
    assert attr.shape == x.shape
    pos = np.clip(attr, 0, None)
    share = pos[:, inside].sum() / pos.sum()
    assert share > 0.9, share


def test_deletion_of_top_pixels_hurts_more_than_random(toy):
    model, x, _ = toy
    y = np.zeros(len(x), dtype=int)
    attr = saliency.attribute(model, x, y, "saliency")
    curves = saliency.deletion_curve(model, x, y, attr, fractions=(0.0, 0.05, 0.1), seed=0)
    top = curves[curves.deleted == "attribution"].set_index("fraction").p_true
    rnd = curves[curves.deleted == "random"].set_index("fraction").p_true
    assert top[0.0] == rnd[0.0]
    assert top[0.1] < rnd[0.1] - 0.05
    areas = saliency.deletion_areas(curves.assign(backbone="toy", method="saliency"))
    assert areas.set_index("deleted").area_p_true["attribution"] < areas.set_index("deleted").area_p_true["random"]


def test_example_cell_is_the_most_confident_correct_one():
    import pandas as pd

    pred = pd.DataFrame({"specimen_id": [1, 2, 3], "true": ["Sst"] * 3, "pred": ["Sst", "Sst", "Pvalb"],
                         "p_Sst": [0.6, 0.9, 0.95]})
    assert saliency.example_cells(pred) == {"Sst": 2}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_methods_run_on_every_backbone_and_keep_scalogram_axes(backbone):
    size = 75 if backbone == "inception_v3" else 32
    model, _ = build_model(backbone, pretrained="none", image_size=size)
    x = torch.rand(2, 2, 18, 40).numpy()
    maps = {}
    for method in saliency.METHODS:
        maps[method] = saliency.attribute(model, x, [0, 3], method, ig_steps=2)
        assert maps[method].shape == x.shape and np.isfinite(maps[method]).all()
    assert (maps["saliency"] >= 0).all() and (maps["gradcam"] >= 0).all()
    # Grad-CAM of an untrained network may be all zero after its ReLU; gradients never are
    d = saliency.describe_map(maps["saliency"][0], np.geomspace(2, 1000, 18), np.linspace(-0.1, 1.1, 40), 1.0)
    assert 2 <= d["median_freq_hz"] <= 1000 and 0 <= d["share_channel0"] <= 1


def test_reused_random_curve_equals_a_recomputed_one(toy):
    model, x, _ = toy
    y = np.zeros(len(x), dtype=int)
    a = saliency.attribute(model, x, y, "saliency")
    b = saliency.attribute(model, x, y, "integrated_gradients", ig_steps=4)
    first = saliency.deletion_curve(model, x, y, a, fractions=(0.0, 0.1), seed=2)
    reused = saliency.deletion_curve(model, x, y, b, fractions=(0.0, 0.1), seed=2, random_curve=first[first.deleted == "random"])
    fresh = saliency.deletion_curve(model, x, y, b, fractions=(0.0, 0.1), seed=2)
    import pandas as pd
    pd.testing.assert_frame_equal(reused.reset_index(drop=True), fresh.reset_index(drop=True))


def test_delete_top_removes_exactly_the_highest_ranked_pixels():
    rng = np.random.default_rng(1)
    x = rng.random((3, 2, 5, 7)).astype(np.float32) + 1.0
    ranking = rng.random(x.shape).astype(np.float32)
    ranking[0, 0, 0, :3] = 5.0  # ties at the top: all three go before any other pixel
    order = saliency.pixel_order(ranking)
    for fraction in (0.0, 0.04, 0.2, 0.5, 1.0):
        out = saliency.delete_top(x, ranking, fraction, baseline=-1.0)
        k = int(round(fraction * x[0].size))
        assert ((out == -1.0).reshape(3, -1).sum(1) == k).all()
        for c in range(3):
            deleted = (out[c] == -1.0)
            if 0 < k < x[0].size:  # every deleted pixel outranks every kept one
                assert ranking[c][deleted].min() >= ranking[c][~deleted].max()
        np.testing.assert_array_equal(out, saliency.delete_top(x, ranking, fraction, baseline=-1.0, order=order))
    assert (saliency.delete_top(x, ranking, 0.1)[0, 0, 0, :3] == 0).all()


def test_deletion_curve_with_the_intact_probabilities_equals_one_without(toy):
    model, x, _ = toy
    y = np.zeros(len(x), dtype=int)
    a = saliency.attribute(model, x, y, "saliency")
    intact = saliency.predict_proba(model, x)
    fast = saliency.deletion_curve(model, x, y, a, fractions=(0.0, 0.1), seed=2, intact_proba=intact)
    slow = saliency.deletion_curve(model, x, y, a, fractions=(0.0, 0.1), seed=2)
    import pandas as pd
    pd.testing.assert_frame_equal(fast, slow)


def test_explained_cells_take_an_equal_share_of_each_class_in_specimen_order():
    import pandas as pd
    rng = np.random.default_rng(0)
    labels = ["Pvalb"] * 30 + ["Sst"] * 5 + ["Vip/Lamp5"] * 20 + ["Excitatory"] * 25
    pred = pd.DataFrame({"specimen_id": rng.permutation(1000)[:80], "true": labels})
    out = saliency.explained_cells(pred, 40)
    assert out["true"].value_counts().to_dict() == {"Pvalb": 10, "Sst": 5, "Vip/Lamp5": 10, "Excitatory": 10}
    assert list(out["specimen_id"]) == sorted(out["specimen_id"])
    for c, g in out.groupby("true"):  # the lowest specimen ids of each class
        assert set(g.specimen_id) == set(pred[pred.true == c].nsmallest(len(g), "specimen_id").specimen_id)
    assert len(saliency.explained_cells(pred, 200)) == 80
