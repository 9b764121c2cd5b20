"""Model bundles: one self-describing folder per trained model, to classify cells no model saw.

Stage. :func:`export_bundle` copies a trained backbone's state dict out of ``models/<backbone>/``
into ``data/<dataset>/bundles/<backbone>/`` with what is needed to use it anywhere:

``model.pt``
    the state dict (tensors only; loaded with ``torch.load(weights_only=True)``, never unpickled).
``bundle.json``
    the architecture (backbone, image size, channel map, dropout, freeze, weights it started from),
    the class order, the scalogram parameters the model was trained on (the store's ``params.json``
    ``params`` block, the analysed window, the frequency axis and :data:`sts_utils.compute.cwt.TRANSFORM_VERSION`),
    the training set (dataset, cells per class, split repeat, profile), its test metrics, the
    SHA-256 of ``model.pt`` and, as ``bundle_sha256``, the SHA-256 of everything else in the file
    (:func:`card_digest`), so that an edited setting is refused as surely as an edited model.
``MODEL_CARD.md``
    the same for a reader, in a few lines.

:func:`read_card` checks ``bundle.json`` against its own digest, :func:`load_bundle` also ``model.pt``
against its hash, and rebuilds the model.
:func:`check_compatible` is the rule by which :mod:`sts_utils.stages.predict` refuses to mix bundles made on
different scalogram settings, or to apply one to data of another kind.

Command line::

    python -m sts_utils.stages.bundle --dataset demo --backbone resnet18 [--data-dir DIR] [--out DIR]
    python -m sts_utils.stages.bundle --dataset demo --backbone all
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sts_utils.core.config import BACKBONES, CLASSES, check_backbone, check_dataset, dataset_dir, figures_dir, logger, require
from sts_utils.compute.cwt import TRANSFORM_VERSION
from sts_utils.core.errors import BundleError, MissingArtifactError, TableError
from sts_utils.stages.evaluation import predict_test_split
from sts_utils.core.io import file_sha256, package_versions, write_text_atomic
from sts_utils.compute.metrics import classification_summary
from sts_utils.data.models import (ScalogramClassifier, build_model, checked_state_path, get_device,
                     load_state_file, model_dir)
from sts_utils.stages.scalograms import ScalogramParams
from sts_utils.stages.splits import load_split

#: written into every bundle.json; bump when its layout changes
BUNDLE_FORMAT = "sts-model-bundle"
BUNDLE_VERSION = 2  # 2: bundle.json carries its own digest (bundle_sha256)
#: the ScalogramParams fields (the store's params.json holds these and a few derived values)
PARAM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ScalogramParams))
#: what makes two scalogram settings the same image: the parameters, the transform, the data kind, the window
_SETTING_KEYS = ("params", "transform_version", "input_kind", "window_s")



def bundles_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Default home of a dataset's bundles: ``data/<dataset>/bundles/``."""
    return dataset_dir(dataset, data_dir) / "bundles"


def trained_backbones(dataset: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The backbones of ``dataset`` that have a ``models/<backbone>/model.pt`` (in :data:`BACKBONES` order)."""
    return [b for b in BACKBONES if (model_dir(dataset, b, data_dir) / "model.pt").is_file()]


def scalogram_setting(dataset: str, data_dir: str | os.PathLike | None = None) -> dict:
    """The scalogram setting a dataset's models were trained on, from ``scalograms/params.json``.

    Returns
    -------
    dict
        ``params`` (the :class:`~sts_utils.stages.scalograms.ScalogramParams` fields), ``transform_version``,
        ``input_kind`` (``sweeps``: voltage recordings; ``spike_trains``: spike-time tables),
        ``window_s`` (analysed window, s), ``freqs_hz`` (ascending, Hz), ``times_s`` (bin centres, s
        from stimulus onset), ``channel_names`` and ``params_hash``.
    """
    sdir = dataset_dir(dataset, data_dir) / "scalograms"
    meta = json.loads(require(sdir / "params.json").read_text())
    stored = meta["params"]
    params = ScalogramParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items() if k in PARAM_FIELDS})
    kind = "spike_trains" if "spike_trains.parquet" in meta.get("inputs", {}) else "sweeps"
    freqs = np.load(sdir / "freqs_hz.npy", allow_pickle=False)
    times = np.load(sdir / "times_s.npy", allow_pickle=False)
    channels = (["noise epoch 2", "noise epoch 3"] if kind == "spike_trains"
                else [f"rheobase + {o:g} pA" for o in params.offsets_pa])
    # the shard folder is named by the hash of the parameters and the transform version of the run that made the store
    if stored.get("shard_dir") not in (None, f"cells-{params.hash()}"):
        raise BundleError(f"{sdir / 'params.json'}: the scalograms were made by another transform version than this "
                          f"package's v{TRANSFORM_VERSION}; rerun notebook 02 and retrain (make scalograms train)")
    return {"params": _jsonable_params(params), "transform_version": TRANSFORM_VERSION,
            "input_kind": kind, "window_s": float(stored["window_s"]),
            "freqs_hz": [float(f) for f in freqs], "times_s": [float(t) for t in times], "channel_names": channels,
            "params_hash": params.hash()}


def _jsonable_params(params: ScalogramParams) -> dict:
    d = asdict(params)
    d["offsets_pa"] = [float(o) for o in d["offsets_pa"]]
    return d


def params_of(card: dict) -> ScalogramParams:
    """The :class:`~sts_utils.stages.scalograms.ScalogramParams` a bundle was trained on."""
    p = dict(card["scalograms"]["params"])
    p["offsets_pa"] = tuple(p["offsets_pa"])
    return ScalogramParams(**p)


def _training_summary(dataset: str, backbone: str, config: dict, data_dir, repeat: int) -> dict:
    split = load_split(dataset, data_dir, repeat)
    train = split[split["split"] == "train"]
    per_class = {c: int((train["label"] == c).sum()) for c in CLASSES}
    return {"dataset": dataset, "simulated": dataset == "demo", "repeat": int(repeat),
            "profile": config.get("profile", ""), "cells_per_class_train_split": per_class,
            "n_train": int(config.get("n_train", 0)), "n_val": int(config.get("n_val", 0)),
            "best_epoch": config.get("best_epoch"), "weights": config["model"].get("weights", ""),
            "train_config": config.get("train", {}), "inputs_sha256": config.get("inputs", {})}


def _test_metrics(dataset: str, backbone: str, data_dir, figures_root, repeat: int, device) -> dict:
    """The backbone's row of ``figures/<dataset>/results_table.csv``, else computed on the test split."""
    path = figures_dir(dataset, figures_root) / "results_table.csv"
    if path.is_file():
        table = pd.read_csv(path)
        row = table[table["model"] == backbone]
        if len(row):
            r = row.iloc[0]
            keep = ["balanced_accuracy", "ci_low", "ci_high", "accuracy", *[f"recall_{c}" for c in CLASSES], "test_cells"]
            return {"source": str(path), **{k: float(r[k]) for k in keep if k in r.index and pd.notna(r[k])}}
    pred, _ = predict_test_split(dataset, backbone, data_dir, repeat, device=device)
    s = classification_summary(pred["true"], pred["pred"], seed=0, n_boot=1000)
    return {"source": f"computed on the test split of repeat {repeat} (no results_table.csv row)",
            "balanced_accuracy": s["balanced_accuracy"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
            "accuracy": s["accuracy"], **{f"recall_{c}": s[f"recall_{c}"] for c in CLASSES}, "test_cells": s["n_test"]}


def model_card(card: dict) -> str:
    """``MODEL_CARD.md``: what the model is, what it was trained on and how well it did, in a few lines."""
    m, t, s, e = card["model"], card["training"], card["scalograms"], card["test_metrics"]
    sim = "SIMULATED (the demo cohort: model neurons, not recordings)" if t["simulated"] else "recorded cells"
    p = s["params"]
    per_class = ", ".join(f"{c} {n}" for c, n in t["cells_per_class_train_split"].items())
    ci = (f" (95 % CI {e['ci_low']:.3f}–{e['ci_high']:.3f})"
          if np.isfinite(e.get("ci_low", np.nan)) and np.isfinite(e.get("ci_high", np.nan)) else "")
    lines = [
        f"# Model card: {m['backbone']} on `{t['dataset']}`",
        "",
        f"- **Task**: classify a mouse neuron as {', '.join(card['classes'])} from a two-channel CWT scalogram.",
        f"- **Training data**: `{t['dataset']}`, {sim}; training split of repeat {t['repeat']} ({per_class}); "
        f"{t['n_train']} cells trained, {t['n_val']} validated; profile `{t['profile']}`.",
        f"- **Architecture**: {m['backbone']}, input {m['image_size']} px, channel map {tuple(m['channel_map'])}, "
        f"dropout {m['dropout']}, freeze {m['freeze']}; started from {m['weights']} weights.",
        f"- **Input it expects**: {s['input_kind'].replace('_', ' ')} (channels: {', '.join(s['channel_names'])}); "
        f"signal `{p['signal']}`, window {s['window_s']:.3f} s (pre {p['pre_s']} s, post {p['post_s']} s), "
        f"{p['n_times']} points, {p['n_scales']} frequencies {s['freqs_hz'][0]:.3g}–{s['freqs_hz'][-1]:.3g} Hz, "
        f"{p['store_times']} time bins, wavelet {p['wavelet']}, transform v{s['transform_version']}.",
        f"- **Test result**: balanced accuracy {e.get('balanced_accuracy', float('nan')):.3f}{ci} on "
        f"{int(e.get('test_cells', 0))} test cells ({e['source']}).",
        f"- **Files**: `model.pt` (state dict, SHA-256 `{card['model_pt_sha256'][:16]}…`), `bundle.json`.",
        "- **Use**: `python -m sts_utils.stages.predict --models <this folder> --input <NWB file/folder or spike table> "
        "--out <folder>`. Results on cells unlike the training cohort (other protocols, species, rigs) are not validated.",
    ]
    if t["simulated"]:
        lines.append("- **Caution**: trained on simulated cells; its numbers say nothing about real neurons.")
    return "\n".join(lines) + "\n"


def export_bundle(dataset: str, backbone: str, data_dir: str | os.PathLike | None = None,
                  out_dir: str | os.PathLike | None = None, figures_root: str | os.PathLike | None = None,
                  repeat: int = 0, device: str | None = None) -> Path:
    """Write the bundle of one trained backbone and return its folder.

    Parameters
    ----------
    dataset, backbone
        The trained model: ``data/<dataset>/models/<backbone>/`` (``model.pt`` and ``config.json``).
    data_dir
        Root data folder (default: ``$STS_DATA_DIR`` or the project's ``data/``).
    out_dir
        The bundle folder (default ``data/<dataset>/bundles/<backbone>/``); replaced as a whole.
    figures_root
        Where ``<dataset>/results_table.csv`` is looked up for the test metrics.
    repeat
        Split repeat the model was trained on.
    device
        Only used when the test metrics have to be computed.

    Returns
    -------
    Path
        The bundle folder, written to a temporary folder beside it and renamed into place.
    """
    check_dataset(dataset)
    check_backbone(backbone)
    mdir = model_dir(dataset, backbone, data_dir, repeat)
    config = json.loads(require(mdir / "config.json").read_text())
    state_path = checked_state_path(mdir, config)
    m = config["model"]
    setting = scalogram_setting(dataset, data_dir)
    out = Path(out_dir) if out_dir is not None else bundles_dir(dataset, data_dir) / backbone
    card = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"backbone": m["backbone"], "image_size": int(m["image_size"]),
                  "channel_map": [int(c) for c in m["channel_map"]], "dropout": float(m["dropout"]),
                  "freeze": m["freeze"], "weights": m.get("weights", ""),
                  "pretrained_requested": m.get("pretrained_requested", "")},
        "classes": list(config.get("classes", CLASSES)),
        "scalograms": setting,
        "training": _training_summary(dataset, backbone, config, data_dir, repeat),
        "test_metrics": _test_metrics(dataset, backbone, data_dir, figures_root, repeat, device),
        "source_model": {"path": str(state_path), "config_sha256": file_sha256(mdir / "config.json")},
        "versions": package_versions(),
    }
    if card["classes"] != list(CLASSES):
        raise BundleError(f"{mdir / 'config.json'}: classes {card['classes']} differ from this package's {list(CLASSES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
    try:
        shutil.copyfile(state_path, tmp / "model.pt")
        card["model_pt_sha256"] = file_sha256(tmp / "model.pt")
        card = json.loads(json.dumps(card, default=float))  # as it will be read back
        card["bundle_sha256"] = card_digest(card)
        write_text_atomic(tmp / "bundle.json", json.dumps(card, indent=2) + "\n")
        write_text_atomic(tmp / "MODEL_CARD.md", model_card(card))
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("bundle %s (%s on %s) -> %s", backbone, m["weights"], dataset, out)
    return out


def replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``; a previous ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_all(dataset: str, data_dir: str | os.PathLike | None = None, out_root: str | os.PathLike | None = None,
               figures_root: str | os.PathLike | None = None, backbones: list[str] | None = None,
               device: str | None = None) -> list[Path]:
    """Export every trained backbone of ``dataset`` (or those of ``backbones`` that are trained)."""
    trained = [b for b in (backbones or BACKBONES) if b in trained_backbones(dataset, data_dir)]
    if not trained:
        require(model_dir(dataset, (backbones or ["resnet18"])[0], data_dir) / "model.pt")
    root = Path(out_root) if out_root is not None else bundles_dir(dataset, data_dir)
    return [export_bundle(dataset, b, data_dir, root / b, figures_root, device=device) for b in trained]


def bundle_summary(folders: list[str | os.PathLike]) -> pd.DataFrame:
    """One row per bundle: backbone, dataset, weights, image size, training cells, test balanced accuracy (95 % CI), hash."""
    rows = []
    for f in folders:
        card = read_card(f)
        m, t, e = card["model"], card["training"], card["test_metrics"]
        rows.append({"bundle": str(f), "backbone": m["backbone"], "dataset": t["dataset"], "weights": m["weights"],
                     "image_size": m["image_size"], "training_cells": t["n_train"] + t["n_val"],
                     "test_balanced_accuracy": e.get("balanced_accuracy", np.nan), "test_ci_low": e.get("ci_low", np.nan),
                     "test_ci_high": e.get("ci_high", np.nan), "model_pt_sha256": card["model_pt_sha256"][:12]})
    return pd.DataFrame(rows)


def card_digest(card: dict) -> str:
    """SHA-256 of a bundle card's canonical JSON without its own ``bundle_sha256`` field."""
    body = {k: v for k, v in card.items() if k != "bundle_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_card(folder: str | os.PathLike) -> dict:
    """A bundle's ``bundle.json``, checked for its format; a wrong path is a one-line error."""
    folder = Path(folder)
    path = folder / "bundle.json"
    if not folder.exists():
        raise BundleError(f"{folder}: no such model bundle folder (make one with "
                          "`python -m sts_utils.stages.bundle --dataset D --backbone B` or `make export`)")
    if not path.is_file():
        raise BundleError(f"{folder} is not a model bundle (no bundle.json); export one with "
                          "`python -m sts_utils.stages.bundle --dataset D --backbone B` (make export)")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); export the bundle again") from exc
    if card.get("format") != BUNDLE_FORMAT or int(card.get("format_version", 0)) != BUNDLE_VERSION:
        raise BundleError(f"{path}: not a {BUNDLE_FORMAT} v{BUNDLE_VERSION} file "
                          f"(format {card.get('format')!r} v{card.get('format_version')}); export the bundle again")
    if card.get("bundle_sha256") != card_digest(card):
        raise BundleError(f"{path}: its content differs from its recorded digest (bundle_sha256; a setting was "
                          "edited or the file corrupted); export the bundle again")
    if card["scalograms"]["transform_version"] != TRANSFORM_VERSION:
        raise BundleError(f"{path}: made with scalogram transform v{card['scalograms']['transform_version']}, this "
                          f"package computes v{TRANSFORM_VERSION}; retrain and export the model again")
    if list(card["classes"]) != list(CLASSES):
        raise BundleError(f"{path}: classes {card['classes']} differ from this package's {list(CLASSES)}")
    return card


def load_bundle(folder: str | os.PathLike, device: str | torch.device | None = None) -> tuple[ScalogramClassifier, dict]:
    """Rebuild a bundle's model (state dict loaded with ``weights_only=True``) after checking its hash.

    Parameters
    ----------
    folder
        The bundle folder (``model.pt`` + ``bundle.json``).
    device
        ``cpu``, ``cuda``, ... (default: CUDA when available).

    Returns
    -------
    model, card
        The model in eval mode on ``device`` and the parsed ``bundle.json`` (with ``folder`` added).

    Raises
    ------
    BundleError
        No bundle there, or ``model.pt`` differs from the SHA-256 recorded in ``bundle.json``.
    """
    folder = Path(folder)
    card = read_card(folder)
    path = folder / "model.pt"
    if not path.is_file():
        raise BundleError(f"{path}: missing; export the bundle again")
    sha = file_sha256(path)
    if sha != card["model_pt_sha256"]:
        raise BundleError(f"{path}: SHA-256 {sha[:12]}… differs from {card['model_pt_sha256'][:12]}… in bundle.json "
                          "(changed or corrupted); export the bundle again")
    m = card["model"]
    model, _ = build_model(m["backbone"], pretrained="none", image_size=m["image_size"], dropout=m["dropout"],
                           freeze=m["freeze"], channel_map=tuple(m["channel_map"]), n_classes=len(card["classes"]))
    if m.get("weights") == "imagenet" and m["backbone"] == "inception_v3":
        model.backbone.transform_input = True  # as models.load_checkpoint: the ImageNet Inception weights expect it
    dev = get_device(device)
    try:
        load_state_file(model, path, dev)
    except ValueError as exc:
        raise BundleError(f"{exc}; export the bundle again") from exc
    return model.to(dev).eval(), {**card, "folder": str(folder)}


def setting_key(card: dict) -> dict:
    """The part of a bundle's scalogram setting that must agree for two bundles to share an image."""
    s = card["scalograms"]
    return {"params": s["params"], "transform_version": s["transform_version"], "input_kind": s["input_kind"],
            "window_s": round(float(s["window_s"]), 9)}


def check_compatible(cards: list[dict]) -> dict:
    """The scalogram setting every bundle shares; a one-line error naming the first that differs."""
    if not cards:
        raise BundleError("no model bundle given")
    ref = setting_key(cards[0])
    for card in cards[1:]:
        key = setting_key(card)
        if key != ref:
            diff = [k for k in _SETTING_KEYS if key[k] != ref[k]]
            if "params" in diff:
                diff = [f"params.{k}" for k in ref["params"] if key["params"].get(k) != ref["params"][k]] + \
                       [d for d in diff if d != "params"]
            raise BundleError(f"{card.get('folder', '?')}: made on other scalogram settings than "
                              f"{cards[0].get('folder', '?')} (differs in {', '.join(diff)}); give bundles of one setting")
    return cards[0]["scalograms"]


# --------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    """``python -m sts_utils.stages.bundle``: export one backbone's bundle, or every trained one (``--backbone all``)."""
    ap = argparse.ArgumentParser(prog="python -m sts_utils.stages.bundle",
                                 description="Export trained models as self-describing bundles "
                                             "(model.pt + bundle.json + MODEL_CARD.md).")
    ap.add_argument("--dataset", required=True, help="dataset the model was trained on (demo, teeter2018, ...)")
    ap.add_argument("--backbone", required=True, help=f"one of {', '.join(BACKBONES)}, or 'all' (every trained one)")
    ap.add_argument("--data-dir", default=None, help="root data folder (default: $STS_DATA_DIR or data/)")
    ap.add_argument("--figures-dir", default=None, help="root figures folder, for results_table.csv (default figures/)")
    ap.add_argument("--out", default=None, help="bundle folder (with --backbone all: the folder of bundle folders); "
                                                "default data/<dataset>/bundles/<backbone>/")
    ap.add_argument("--repeat", type=int, default=0, help="split repeat of the model (default 0)")
    args = ap.parse_args(argv)
    try:
        if args.backbone == "all":
            paths = export_all(args.dataset, args.data_dir, args.out, args.figures_dir)
        else:
            paths = [export_bundle(args.dataset, args.backbone, args.data_dir, args.out, args.figures_dir, args.repeat)]
    except (BundleError, MissingArtifactError, TableError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
