"""Backbones, freezing, checkpoints, weights handling and a tiny training run for each backbone."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from sts_utils.core.config import BACKBONES
from sts_utils.data.models import WeightsNotAvailableError, build_model, load_checkpoint, save_checkpoint
from sts_utils.stages.fit import TrainConfig, encode_labels, fit
from sts_utils.stages.training import resolve_profile


def easy_set(n_per_class=6, seed=0):
    """Classes differ by which quarter of the frequency axis carries power: easy to learn."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(4):
        for _ in range(n_per_class):
            img = 0.05 * rng.random((2, 16, 24))
            img[:, 4 * c:4 * c + 4, :] += 1.0
            x.append(img)
            y.append(c)
    return torch.tensor(np.array(x), dtype=torch.float16), np.array(y)


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("STS_OFFLINE", "1")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_tiny_run_lowers_the_loss(backbone):
    x, y = easy_set()
    size = 75 if backbone == "inception_v3" else 32
    cfg = TrainConfig(backbone=backbone, image_size=size, pretrained="none", epochs=4, batch_size=8, lr=1e-3, patience=4,
                      seed=0)
    model, hist, info = fit(x, y, x, y, cfg, progress=False)
    assert hist.train_loss.iloc[-1] < hist.train_loss.iloc[0]
    assert info["model"]["weights"] == "random"
    out = model(x[:3].float())
    assert out.shape == (3, 4)


def test_full_freeze_leaves_backbone_weights_unchanged():
    model, _ = build_model("resnet18", pretrained="none", image_size=32, freeze="FULL")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    x, y = easy_set(2)
    loss = torch.nn.functional.cross_entropy(model(x.float()), torch.as_tensor(y))
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("backbone.fc") for k in changed)


def test_checkpoint_round_trip(tmp_path):
    model, info = build_model("mobilenet_v2", pretrained="none", image_size=32, dropout=0.2)
    model.eval()
    config = {"backbone": "mobilenet_v2", "model": {"backbone": "mobilenet_v2", "image_size": 32, "dropout": 0.2,
                                                    "freeze": "NONE", "channel_map": [0, 1, 0], "weights": "random"}}
    path = save_checkpoint(model, config, tmp_path)
    state = torch.load(path, weights_only=True)  # a plain state dict, loadable without unpickling code
    assert isinstance(state, dict)
    loaded, cfg = load_checkpoint(tmp_path)
    x = torch.rand(2, 2, 20, 30)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert cfg == json.loads((tmp_path / "config.json").read_text())


def test_imagenet_without_weights_fails_clearly():
    with pytest.raises(WeightsNotAvailableError) as err:
        build_model("resnet18", pretrained="imagenet", image_size=32)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "checkpoints" in msg and "https://download.pytorch.org" in msg


def test_auto_falls_back_to_random_and_records_it():
    _, info = build_model("densenet121", pretrained="auto", image_size=32)
    assert info.weights == "random" and "PRETRAINED=auto" in info.warning


def test_auto_uses_cached_imagenet_file(tmp_path):
    """A weights file in the torch hub cache is used (here a random one saved under the expected name)."""
    import torchvision
    from sts_utils.data.models import imagenet_weights_file

    path, _ = imagenet_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), path)
    model, info = build_model("resnet18", pretrained="auto", image_size=32)
    assert info.weights == "imagenet"
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match=r"^unknown backbone 'vgg16'; expected one of resnet18, inception_v3, densenet121, "
                                         r"mobilenet_v2$"):
        build_model("vgg16")
    with pytest.raises(ValueError, match=r"^inception_v3 needs image_size >= 75, got 32$"):
        build_model("inception_v3", pretrained="none", image_size=32)
    with pytest.raises(ValueError, match=r"need lr > 0 .*got 0, 0.5"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=r"unknown class labels \['Chandelier'\]; expected \('Pvalb'"):
        encode_labels(["Pvalb", "Chandelier"])
    assert resolve_profile("auto", "demo", "inception_v3", {"epochs": 3})["image_size"] == 80
    expected = 299 if torch.cuda.is_available() else 80  # paper sizes on real data need a GPU
    assert resolve_profile("auto", "allen", "inception_v3", {})["image_size"] == expected
    assert resolve_profile("paper", "allen", "inception_v3", {})["image_size"] == 299


def test_compile_is_off_on_a_cpu_and_says_so(caplog):
    """COMPILE=True on a CPU: the same loss curve as eager, bit for bit, and one log line saying it ran eager."""
    x, y = easy_set()
    cfg = TrainConfig(backbone="resnet18", image_size=32, pretrained="none", epochs=2, batch_size=8, lr=1e-3,
                      patience=2, seed=0)
    _, eager, _ = fit(x, y, x[:8], y[:8], cfg, progress=False)
    with caplog.at_level("INFO", logger="sts_utils"):
        _, compiled, _ = fit(x, y, x[:8], y[:8], dataclasses.replace(cfg, compile=True), progress=False)
    pd.testing.assert_frame_equal(eager, compiled)
    assert any("COMPILE=True applies on CUDA only" in r.getMessage() for r in caplog.records)
