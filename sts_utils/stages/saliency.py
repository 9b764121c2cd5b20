"""Saliency stage: captum attributions on scalograms, per-class maps, and a deletion test.

Methods (captum): ``saliency`` (the paper's: |gradient|, reduced with max over input channels for the
paper-style map), ``integrated_gradients`` (zero-power baseline), and ``gradcam`` on each backbone's
last convolutional block (:func:`sts_utils.data.models.last_conv_block`), upsampled bilinearly.

Because :class:`~sts_utils.data.models.ScalogramClassifier` does the channel mapping, resizing and
normalisation inside ``forward``, every attribution is taken with respect to the stored scalogram:
its axes are (sweep channel, frequency row, time bin), i.e. directly ``freqs_hz`` x ``times_s``.
Grad-CAM maps live on the backbone's feature grid, which covers the resized image and therefore the
scalogram uniformly; they are interpolated to (frequency, time) and shared by both channels.

Faithfulness is measured with a deletion test: the top-k % pixels by attribution are set to the
baseline value (0, no power) and the drop of the true-class probability and of balanced accuracy is
compared with deleting the same number of random pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

from sts_utils.core.config import CLASSES, check_choice, dataset_dir, require
from sts_utils.compute.metrics import balanced_accuracy
from sts_utils.data.models import get_device, last_conv_block, load_checkpoint, model_dir
from sts_utils.data.store import ScalogramStore
from sts_utils.stages.fit import predict_proba

METHODS: tuple[str, ...] = ("saliency", "integrated_gradients", "gradcam")
DELETION_FRACTIONS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def attribute(model, x: torch.Tensor, target: torch.Tensor | np.ndarray | list[int], method: str,
              ig_steps: int = 16, batch_size: int = 16, ig_internal_batch_size: int = 64) -> np.ndarray:
    """Attributions with the input's shape (cells x channels x scales x times), float32.

    ``saliency`` and ``gradcam`` are non-negative; ``integrated_gradients`` is signed (positive =
    evidence for the target class). ``ig_internal_batch_size`` images (cells x path steps) go through
    the model at once for Integrated Gradients.
    """
    check_choice(method, METHODS, "attribution method")
    model.eval()
    device = next(model.parameters()).device
    target = torch.as_tensor(np.asarray(target), dtype=torch.long)
    out = []
    for s in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[s:s + batch_size], dtype=torch.float32, device=device).requires_grad_(True)
        tb = target[s:s + batch_size].to(device)
        if method == "saliency":
            a = Saliency(model).attribute(xb, target=tb, abs=True)
        elif method == "integrated_gradients":
            a = IntegratedGradients(model).attribute(xb, baselines=torch.zeros_like(xb), target=tb, n_steps=ig_steps,
                                                     internal_batch_size=ig_internal_batch_size)
        else:
            layer = last_conv_block(model)
            cam = LayerGradCam(model, layer).attribute(xb, target=tb, relu_attributions=True)
            cam = LayerAttribution.interpolate(cam, tuple(xb.shape[-2:]), interpolate_mode="bilinear")
            a = cam.expand(-1, xb.shape[1], -1, -1)
        out.append(a.detach().float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *x.shape[1:]), dtype=np.float32)


def paper_style_map(attr: np.ndarray) -> np.ndarray:
    """The paper's saliency map: max of |attribution| over input channels (cells x scales x times)."""
    return np.abs(attr).max(axis=1)


def example_cells(pred: pd.DataFrame) -> dict[str, int]:
    """Per class, the most confident correctly classified test cell (ties: lowest specimen id)."""
    out = {}
    for c in CLASSES:
        g = pred[(pred["true"] == c) & (pred["pred"] == c)]
        if g.empty:
            continue
        g = g.assign(conf=g[f"p_{c}"]).sort_values(["conf", "specimen_id"], ascending=[False, True])
        out[c] = int(g["specimen_id"].iloc[0])
    return out


def normalise_map(a: np.ndarray) -> np.ndarray:
    """Scale a map so that its positive mass sums to one (negative evidence set to zero)."""
    pos = np.clip(a, 0, None)
    total = pos.sum()
    return pos / total if total > 0 else pos


def class_mean_maps(attr: np.ndarray, labels: list[str], correct: np.ndarray) -> dict[str, np.ndarray]:
    """Mean normalised attribution (channels x scales x times) over the correctly classified cells of each class."""
    out = {}
    labels = np.asarray(labels)
    for c in CLASSES:
        sel = (labels == c) & correct
        if sel.any():
            out[c] = np.mean([normalise_map(a) for a in attr[sel]], axis=0)
    return out


def describe_map(m: np.ndarray, freqs_hz: np.ndarray, times_s: np.ndarray, stim_end_s: float) -> dict:
    """Where the attribution mass of a (channels x scales x times) map lies, in Hz and s.

    Returns the mass-weighted median frequency and time, the share of mass in the first 100 ms of
    the step, after the step, above 100 Hz, and on channel 0.
    """
    m = normalise_map(m)
    if m.sum() == 0:
        return {}
    by_freq = m.sum(axis=(0, 2))
    by_time = m.sum(axis=(0, 1))
    def wmedian(values, weights):
        cw = np.cumsum(weights) / weights.sum()
        return float(values[np.searchsorted(cw, 0.5)])
    return {
        "median_freq_hz": wmedian(np.asarray(freqs_hz), by_freq),
        "median_time_s": wmedian(np.asarray(times_s), by_time),
        "share_first_100ms": float(by_time[(times_s >= 0) & (times_s < 0.1)].sum()),
        "share_after_step": float(by_time[times_s > stim_end_s].sum()),
        "share_above_100hz": float(by_freq[np.asarray(freqs_hz) > 100].sum()),
        "share_channel0": float(m[0].sum()) if m.shape[0] > 1 else 1.0,
    }


def pixel_order(ranking: np.ndarray) -> np.ndarray:
    """Per cell, the flat pixel indices from the highest ``ranking`` down (ties: lower index first)."""
    flat = ranking.reshape(len(ranking), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def n_deleted(x: np.ndarray, fraction: float) -> int:
    """How many pixels of each cell of ``x`` (all channels together) deleting ``fraction`` of them removes."""
    return int(round(fraction * int(np.prod(x.shape[1:]))))


def delete_top(x: np.ndarray, ranking: np.ndarray, fraction: float, baseline: float = 0.0,
               order: np.ndarray | None = None) -> np.ndarray:
    """Copy of ``x`` with each cell's top ``fraction`` of pixels (by ``ranking``, all channels) set to ``baseline``.

    ``order`` (:func:`pixel_order` of ``ranking``) may be passed to reuse one sort for several fractions.
    """
    out = x.copy()
    k = n_deleted(x, fraction)
    if k == 0:
        return out
    order = pixel_order(ranking) if order is None else order
    flat = out.reshape(len(x), -1)
    np.put_along_axis(flat, order[:, :k], baseline, axis=1)
    return flat.reshape(x.shape)


def deletion_curve(model, x: np.ndarray, y: np.ndarray, attr: np.ndarray, fractions=DELETION_FRACTIONS,
                   baseline: float = 0.0, seed: int = 0, random_curve: pd.DataFrame | None = None,
                   intact_proba: np.ndarray | None = None) -> pd.DataFrame:
    """True-class probability and balanced accuracy after deleting top-attributed vs random pixels.

    The random curve depends only on the model, the cells and ``seed``: pass the ``random`` rows of an
    earlier call on the same model and cells as ``random_curve`` to reuse them instead of recomputing.
    ``intact_proba`` (the model's probabilities of ``x`` itself) serves every fraction that deletes nothing.
    """
    rows = []
    kinds = [("attribution", attr)]
    if random_curve is None:
        kinds.append(("random", np.random.default_rng(seed).random(attr.shape).astype(np.float32)))
    for kind, rank in kinds:
        order = pixel_order(rank)
        for f in fractions:
            if n_deleted(x, f) == 0 and intact_proba is not None:
                p = intact_proba
            else:
                p = predict_proba(model, delete_top(x, rank, f, baseline, order=order))
            rows.append({"deleted": kind, "fraction": f, "p_true": float(p[np.arange(len(y)), y].mean()),
                         "balanced_accuracy": balanced_accuracy(y, p.argmax(1))})
    curve = pd.DataFrame(rows)
    if random_curve is not None:
        curve = pd.concat([curve, random_curve[curve.columns]], ignore_index=True)
    return curve


def deletion_areas(curves: pd.DataFrame) -> pd.DataFrame:
    """Area under the p_true deletion curve (lower = more faithful) per group and deleted kind."""
    keys = [c for c in ("backbone", "method") if c in curves.columns]
    rows = []
    for key, g in curves.groupby(keys + ["deleted"]):
        g = g.sort_values("fraction")
        x, yv = g["fraction"].to_numpy(), g["p_true"].to_numpy()
        area = float(np.trapezoid(yv, x) / (x[-1] - x[0])) if len(x) > 1 else float("nan")
        rows.append({**dict(zip(keys + ["deleted"], key if isinstance(key, tuple) else (key,))), "area_p_true": area})
    return pd.DataFrame(rows)


@dataclass
class SaliencyResult:
    """Everything notebook 07 shows: maps per (backbone, method), deletion curves, where the mass lies.

    Attributes
    ----------
    maps
        ``(backbone, method) -> {"mean": class -> mean map, "example": class -> map, "example_ids": class -> id}``.
    curves
        Deletion curves of every backbone and method (``backbone``, ``method``, ``deleted``, ``fraction``, ``p_true``, ...).
    readings
        :func:`describe_map` of every class-mean map, one row per backbone, method and class.
    backbones
        The backbones that had a trained model.
    """

    maps: dict = field(default_factory=dict)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    readings: pd.DataFrame = field(default_factory=pd.DataFrame)
    backbones: list = field(default_factory=list)


def explained_cells(pred: pd.DataFrame, max_cells: int) -> pd.DataFrame:
    """The test cells to explain: all of them when at most ``max_cells``, else an equal share of each class.

    Within a class the cells are taken in specimen order (deterministic, no sampling); the rows come
    back in specimen order.
    """
    pred = pred.sort_values("specimen_id")
    if len(pred) <= max_cells:
        return pred
    per_class = max(1, max_cells // max(1, pred["true"].nunique()))
    return pred.groupby("true", sort=True).head(per_class).sort_values("specimen_id")


def explain_backbones(dataset: str, backbones: list[str], data_dir: str | os.PathLike | None = None,
                      methods: tuple[str, ...] | list[str] = METHODS, ig_steps: int = 16, max_test_cells: int = 48, seed: int = 0,
                      device: str | None = None) -> SaliencyResult:
    """Attributions of every trained backbone on its test cells (repeat 0), and the deletion test.

    Reads ``predictions.csv`` (notebook 06) for the test cells and their predictions; at most
    ``max_test_cells`` of them, the same number per class (:func:`explained_cells`).
    """
    ddir = dataset_dir(dataset, data_dir)
    store = ScalogramStore.load(dataset, data_dir)
    predictions = pd.read_csv(require(ddir / "predictions.csv"))
    stim_end_s = float(store.times_s[-1] - store.params["params"]["post_s"])
    dev = get_device(device)
    result = SaliencyResult(backbones=[b for b in backbones if (model_dir(dataset, b, data_dir) / "model.pt").exists()])
    curves, readings = [], []
    for backbone in result.backbones:
        model, _ = load_checkpoint(model_dir(dataset, backbone, data_dir), dev)
        pred = explained_cells(predictions[(predictions.model == backbone) & (predictions.repeat == 0)], max_test_cells)
        pred = pred.merge(store.index[["specimen_id", "row"]], on="specimen_id")
        x = np.asarray(store.images[pred["row"].to_numpy()], dtype=np.float32)
        y = np.array([CLASSES.index(c) for c in pred["true"]])
        correct = (pred["true"] == pred["pred"]).to_numpy()
        examples = example_cells(pred)
        random_curve = None  # deleting random pixels does not depend on the method: computed once per backbone
        intact = predict_proba(model, x)
        for method in methods:
            attr = attribute(model, x, y, method, ig_steps=ig_steps)
            means = class_mean_maps(attr, list(pred["true"]), correct)
            ex = {c: attr[pred["specimen_id"].to_numpy() == sid][0] for c, sid in examples.items()}
            result.maps[(backbone, method)] = {"mean": means, "example": ex, "example_ids": examples}
            curve = deletion_curve(model, x, y, attr, seed=seed, random_curve=random_curve, intact_proba=intact)
            random_curve = curve[curve.deleted == "random"]
            curves.append(curve.assign(backbone=backbone, method=method))
            for c, m in means.items():
                readings.append({"backbone": backbone, "method": method, "class": c,
                                 **describe_map(m, store.freqs_hz, store.times_s, stim_end_s)})
    result.curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    result.readings = pd.DataFrame(readings)
    return result


def saliency_reading(readings: pd.DataFrame, method: str = "saliency") -> str:
    """Markdown bullets, one per class, on where the class-mean maps of ``method`` put their mass."""
    sal = readings[readings.method == method].groupby("class").mean(numeric_only=True)
    lines = []
    for c, r in sal.iterrows():
        lines.append(f"- **{c}**: half the {method} mass lies below {r.median_freq_hz:.0f} Hz and before "
                     f"{r.median_time_s:.2f} s after onset; {r.share_first_100ms:.0%} in the first 100 ms of the step, "
                     f"{r.share_after_step:.0%} after it, {r.share_above_100hz:.0%} above 100 Hz, "
                     f"{r.share_channel0:.0%} on channel 0.")
    return "\n".join(lines)
