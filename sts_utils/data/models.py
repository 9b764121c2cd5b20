"""Models stage: torchvision backbones with a 4-class head, fed with two-channel scalograms.

:class:`ScalogramClassifier` wraps a backbone with the input mapping of the paper, so the model
takes the stored scalogram itself (``batch x sweeps x scales x times``, values in [0, 1]):

1. sweep channels -> the three input channels (default ``(0, 1, 0)``: the paper copies channel 0
   as the third channel);
2. bilinear (antialiased) resize to ``image_size`` (224, or 299 for InceptionV3, by default);
3. ImageNet normalisation.

Because this happens inside ``forward``, gradients and attributions (notebook 06) come back on the
scalogram's own axes (sweep channel, frequency, time) without any manual inverse mapping.

Weights (``pretrained``): ``imagenet`` loads torchvision's ImageNet weights from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), downloading them if possible, and fails with a message naming the
file, folder and URL otherwise; ``none`` is random initialisation; ``auto`` uses the ImageNet file
when it is already in the cache and otherwise falls back to random initialisation, recording that.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from sts_utils.core.config import CLASSES, DEFAULT_IMAGE_SIZE, check_backbone, dataset_dir, logger, offline, require
from sts_utils.core.io import file_sha256, write_files_together

MIN_IMAGE_SIZE = {"resnet18": 32, "inception_v3": 75, "densenet121": 32, "mobilenet_v2": 32}
_WEIGHTS_ENUM = {"resnet18": "ResNet18_Weights", "inception_v3": "Inception_V3_Weights",
                 "densenet121": "DenseNet121_Weights", "mobilenet_v2": "MobileNet_V2_Weights"}
_WARNED: set[str] = set()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torch threads of every process that builds a model. One: torch splits a CPU reduction by thread count, so
#: with the machine's default (its core count) another machine gave other last bits and moved CNN rows; one
#: thread gives the same numbers on any machine, and ``make paper`` runs pages side by side instead (``JOBS``).
TORCH_CPU_THREADS = 1


class WeightsNotAvailableError(FileNotFoundError):
    """ImageNet weights were asked for but are neither in the cache nor downloadable."""


def imagenet_weights_file(backbone: str) -> tuple[Path, str]:
    """Where torchvision keeps the ImageNet weights of ``backbone``, and their URL."""
    weights = getattr(torchvision.models, _WEIGHTS_ENUM[check_backbone(backbone)]).IMAGENET1K_V1
    url = weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _construct(backbone: str, use_imagenet: bool) -> nn.Module:
    ctor = getattr(torchvision.models, backbone)
    weights = getattr(torchvision.models, _WEIGHTS_ENUM[backbone]).IMAGENET1K_V1 if use_imagenet else None
    if backbone == "inception_v3":
        if weights is None:
            return ctor(weights=None, aux_logits=False, init_weights=True, transform_input=False)
        model = ctor(weights=weights)  # torchvision forces aux_logits and transform_input for these weights
        model.aux_logits = False
        model.AuxLogits = None
        return model
    return ctor(weights=weights)


def _replace_head(model: nn.Module, backbone: str, n_classes: int, dropout: float) -> None:
    def head(n_in: int) -> nn.Sequential:
        return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(n_in, n_classes))

    if backbone in ("resnet18", "inception_v3"):
        model.fc = head(model.fc.in_features)
    elif backbone == "densenet121":
        model.classifier = head(model.classifier.in_features)
    elif backbone == "mobilenet_v2":
        model.classifier = head(model.classifier[-1].in_features)


def head_module(model: nn.Module, backbone: str) -> nn.Module:
    return model.fc if backbone in ("resnet18", "inception_v3") else model.classifier


def last_conv_block(model: "ScalogramClassifier") -> nn.Module:
    """The last convolutional block of the backbone (Grad-CAM's layer)."""
    b = model.backbone
    return {"resnet18": lambda: b.layer4, "inception_v3": lambda: b.Mixed_7c,
            "densenet121": lambda: b.features, "mobilenet_v2": lambda: b.features[-1]}[model.backbone_name]()


class ScalogramClassifier(nn.Module):
    """Backbone plus the paper's input mapping; takes raw scalograms (B x sweeps x scales x times)."""

    def __init__(self, backbone: nn.Module, backbone_name: str, image_size: int, channel_map: tuple[int, ...] = (0, 1, 0),
                 freeze: str = "NONE"):
        super().__init__()
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.image_size = int(image_size)
        self.channel_map = tuple(int(c) for c in channel_map)
        self.freeze = freeze
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, list(self.channel_map)]
        # antialias: shrinking 180 x 480 to a few dozen pixels must average, not pick every n-th pixel
        # (which would drop most spikes and leave gradients only on the sampled pixels)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.mean) / self.std

    def classify(self, img: torch.Tensor) -> torch.Tensor:
        """Logits of images already mapped by :meth:`to_image` (training resizes its set once, not per batch)."""
        img = img.contiguous(memory_format=torch.channels_last)
        out = self.backbone(img)
        return out.logits if hasattr(out, "logits") else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.to_image(x))

    def train(self, mode: bool = True) -> "ScalogramClassifier":
        super().train(mode)
        if mode and self.freeze == "FULL":
            # a frozen backbone keeps its BatchNorm statistics too: only the head trains
            self.backbone.eval()
            head_module(self.backbone, self.backbone_name).train(True)
        return self


@dataclass
class ModelInfo:
    backbone: str
    weights: str  # "imagenet" or "random"
    pretrained_requested: str
    warning: str = ""
    image_size: int = 224
    dropout: float = 0.0
    freeze: str = "NONE"
    channel_map: tuple[int, ...] = (0, 1, 0)


def build_model(backbone: str, pretrained: str = "auto", image_size: int | None = None, dropout: float = 0.0,
                freeze: str = "NONE", n_classes: int = len(CLASSES), channel_map: tuple[int, ...] = (0, 1, 0)
                ) -> tuple[ScalogramClassifier, ModelInfo]:
    """Build a backbone with a ``n_classes`` head.

    Parameters
    ----------
    pretrained
        ``imagenet``, ``none`` or ``auto`` (see the module docstring).
    freeze
        ``NONE`` trains everything; ``FULL`` trains the head only.

    Raises
    ------
    WeightsNotAvailableError
        ``pretrained='imagenet'`` and the weights file is not in the cache and cannot be downloaded.
    """
    check_backbone(backbone)
    # every fit, prediction and attribution starts from a model built here
    torch.set_num_threads(TORCH_CPU_THREADS)
    pretrained = str(pretrained).lower()
    if pretrained not in ("imagenet", "none", "auto"):
        raise ValueError(f"pretrained must be 'imagenet', 'none' or 'auto', got {pretrained!r}")
    freeze = str(freeze).upper()
    if freeze not in ("NONE", "FULL"):
        raise ValueError(f"freeze must be 'NONE' or 'FULL', got {freeze!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    image_size = int(image_size or DEFAULT_IMAGE_SIZE[backbone])
    if image_size < MIN_IMAGE_SIZE[backbone]:
        raise ValueError(f"{backbone} needs image_size >= {MIN_IMAGE_SIZE[backbone]}, got {image_size}")
    path, url = imagenet_weights_file(backbone)
    warning = ""
    if pretrained == "none":
        use_imagenet = False
    elif path.is_file():
        use_imagenet = True
    elif pretrained == "auto":
        use_imagenet = False
        warning = (f"ImageNet weights for {backbone} not found at {path}: trained from random initialisation "
                   f"(PRETRAINED=auto). Put {url} there to fine-tune from ImageNet.")
        if backbone not in _WARNED:
            logger.warning(warning)
            _WARNED.add(backbone)
    else:
        if offline():
            raise WeightsNotAvailableError(_weights_message(backbone, path, url, "STS_OFFLINE is set"))
        use_imagenet = True
    try:
        model = _construct(backbone, use_imagenet)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a failed hash check a RuntimeError
        raise WeightsNotAvailableError(_weights_message(backbone, path, url, f"download failed: {exc}")) from exc
    _replace_head(model, backbone, n_classes, dropout)
    if freeze == "FULL":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head_module(model, backbone).parameters():
            p.requires_grad_(True)
    # NHWC on every device: oneDNN's CPU convolutions are faster on it as cuDNN's are (one training step at
    # 64 px on 2 CPU cores: densenet121 -14 %, inception_v3 -15 %, mobilenet_v2 -37 %, resnet18 unchanged)
    net = ScalogramClassifier(model, backbone, image_size, channel_map, freeze).to(memory_format=torch.channels_last)
    info = ModelInfo(backbone=backbone, weights="imagenet" if use_imagenet else "random", pretrained_requested=pretrained,
                     warning=warning, image_size=image_size, dropout=dropout, freeze=freeze, channel_map=tuple(channel_map))
    return net, info


def _weights_message(backbone: str, path: Path, url: str, reason: str) -> str:
    return (f"ImageNet weights for {backbone} are not in the torch hub cache ({path}) and cannot be downloaded "
            f"({reason}). Download {url} on a machine with internet and copy it to {path.parent}/ "
            f"(or set TORCH_HOME), or use PRETRAINED=auto / PRETRAINED=none.")


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    """The model's state dict (CPU tensors, never the pickled module) as ``torch.save`` bytes.

    Saved through memory rather than to a file: torch names the zip's folder after the file, so saving
    to a temporary file would give every run other bytes; this way the same weights give the same bytes.
    """
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def save_checkpoint(model: ScalogramClassifier, config: dict, out_dir: str | os.PathLike, name: str = "model.pt",
                    files: dict[str, str] | None = None) -> Path:
    """Save the state dict, ``config.json`` and the run's other ``files`` (name -> text) as one generation.

    ``config.json`` records the SHA-256 of every other file under ``"files"``, and everything is written
    with :func:`sts_utils.core.io.write_files_together`, the state dict (the stage's make target) last: a
    failure (a full disk) replaces nothing, and :func:`load_checkpoint` refuses a folder whose files are
    of two runs.
    """
    contents = {k: v.encode() for k, v in (files or {}).items()}
    contents[name] = state_dict_bytes(model)
    config = {**config, "files": {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()}}
    contents["config.json"] = (json.dumps(config, indent=2, default=str) + "\n").encode()
    return write_files_together(out_dir, contents, last=name)[name]


def model_dir(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None, repeat: int = 0) -> Path:
    """``data/<dataset>/models/<backbone>/`` (``repeat_<k>/`` below it for repeats after the first)."""
    root = dataset_dir(dataset, data_dir) / "models" / backbone
    return root if repeat == 0 else root / f"repeat_{repeat}"


def checked_state_path(out_dir: str | os.PathLike, config: dict, name: str = "model.pt") -> Path:
    """``out_dir/name`` after checking it is the state dict that ``config`` (its ``config.json``) describes.

    Raises a one-line ``ValueError`` for a folder whose files are of two runs (or a state dict changed
    since); folders saved before ``config.json`` recorded its files' hashes are taken as they are.
    """
    out_dir = Path(out_dir)
    path = require(out_dir / name)
    recorded = config.get("files", {}).get(name)
    if recorded is not None and file_sha256(path) != recorded:
        raise ValueError(f"{path} is not the state dict {out_dir / 'config.json'} describes (another run's, or "
                         f"changed since); delete {out_dir} and rerun notebook 04 "
                         f"(make train BACKBONE={config['model']['backbone']})")
    return path


def load_checkpoint(out_dir: str | os.PathLike, device: str | torch.device = "cpu", name: str = "model.pt"
                    ) -> tuple[ScalogramClassifier, dict]:
    """Rebuild the architecture from ``config.json`` and load the state dict with ``weights_only=True``."""
    out_dir = Path(out_dir)
    config = json.loads(require(out_dir / "config.json").read_text())
    m = config["model"]
    model, _ = build_model(m["backbone"], pretrained="none", image_size=m["image_size"], dropout=m["dropout"],
                           freeze=m["freeze"], channel_map=tuple(m["channel_map"]))
    if m.get("weights") == "imagenet" and m["backbone"] == "inception_v3":
        model.backbone.transform_input = True  # the ImageNet Inception weights expect torchvision's input transform
    path = checked_state_path(out_dir, config, name)
    try:
        load_state_file(model, path, device)
    except ValueError as exc:
        raise ValueError(f"{exc}; delete it and rerun notebook 04 (make train BACKBONE={m['backbone']})") from exc
    return model.to(device).eval(), config


def load_state_file(model: nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load the state dict at ``path`` into ``model`` with ``weights_only=True`` (never unpickling code).

    Raises a one-line ``ValueError`` naming the file for an empty, truncated or foreign file, and for a
    pickle that would need more than tensors to load (torch then advises ``weights_only=False``: never).
    """
    try:
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path} is not a plain state dict of tensors: loading it would run pickled code, "
                         f"which this package never does") from exc
    except (EOFError, RuntimeError, ValueError, OSError) as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else "empty file"
        raise ValueError(f"{path} is not a usable state dict for this {type(model).__name__} "
                         f"({type(exc).__name__}: {detail})") from exc
    return model


def get_device(device: str | None = None) -> torch.device:
    """``cuda`` when available (or asked for), else ``cpu``."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
