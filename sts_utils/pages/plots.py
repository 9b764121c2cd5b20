"""Every figure of the compendium (matplotlib/seaborn), and how a page saves and shows one.

Presentation layer: functions take tables and arrays and return a figure; :func:`save` writes it
atomically as PNG, shows it on the notebook page that made it, and closes it. No module of the
package chooses a matplotlib backend: scripts and tests get matplotlib's default (Agg without a
display), notebooks the inline backend.
"""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Image, display
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import confusion_matrix

from sts_utils.core.config import CLASS_COLORS, CLASSES, in_notebook
from sts_utils.core.io import atomic_path

SCALOGRAM_LABEL = "normalised log |CWT| (0–1)"


def save(fig, path: str | os.PathLike, dpi: int = 130) -> None:
    """Write ``fig`` to ``path`` (PNG, atomically), show that file on the notebook page, and close the figure.

    The page shows the saved file itself (not a re-rendering), whatever matplotlib backend the kernel has.
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1])
    plt.close(fig)
    if in_notebook():
        display(Image(filename=str(path)))


# ---------------------------------------------------------------------------------------- notebook 01

def example_traces_figure(examples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]], suptitle: str = ""):
    """One column per class, one row per example sweep: membrane potential (mV) against time (s).

    ``examples[class]`` is a list of ``(panel title, t_s, v_mv)``.
    """
    classes = [c for c in CLASSES if c in examples]
    n_rows = max(len(v) for v in examples.values()) if examples else 1
    fig, axes = plt.subplots(n_rows, max(1, len(classes)), figsize=(3.4 * max(1, len(classes)), 2.3 * n_rows),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)
    for j, c in enumerate(classes):
        for i, (label, t, v) in enumerate(examples[c]):
            axes[i, j].plot(t, v, lw=0.5, color=CLASS_COLORS[c])
            axes[i, j].set_title(f"{c}\n{label}", fontsize=7.5)
        axes[-1, j].set_xlabel("time (s)")
    for i in range(n_rows):
        axes[i, 0].set_ylabel("V (mV)")
    fig.suptitle(suptitle, fontsize=9)
    return fig


def fi_curves_figure(fi: pd.DataFrame, title: str = ""):
    """f–I curves per class: firing rate (Hz) against current above rheobase (pA), mean ± sd over cells."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.lineplot(data=fi, x="above_rheobase_pa", y="rate_hz", hue="label", hue_order=[c for c in CLASSES if c in set(fi.label)],
                 palette=CLASS_COLORS, errorbar="sd", marker="o", ax=ax)
    ax.set_ylim(bottom=0)  # a rate is never negative; the ±sd band is cut at 0 Hz
    ax.set_xlabel("current above rheobase (pA)")
    ax.set_ylabel("firing rate (Hz), mean ± sd")
    ax.legend(title="class", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def example_rasters_figure(rasters: dict[str, tuple[int, list[np.ndarray]]], title: str = ""):
    """Spike rasters, one panel per class: ``rasters[class] = (specimen_id, [spike times (s) per row])``."""
    classes = [c for c in CLASSES if c in rasters]
    fig, axes = plt.subplots(1, max(1, len(classes)), figsize=(3.4 * max(1, len(classes)), 3.0), squeeze=False,
                             constrained_layout=True)
    for ax, c in zip(axes[0], classes):
        sid, rows = rasters[c]
        # thin ticks: a fast-spiking cell has hundreds of spikes a row, which thick ticks merge into bars
        ax.eventplot(rows, lineoffsets=np.arange(len(rows)), linelengths=0.7, linewidths=0.3, color=CLASS_COLORS[c])
        ax.set_title(f"{c} — cell {sid}", fontsize=8)
        ax.set_xlabel("time from epoch onset (s)")
        ax.set_yticks(range(len(rows)))
    axes[0, 0].set_ylabel("repeat × epoch")
    fig.suptitle(title, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------- notebook 02

def scalogram_axes(ax, img: np.ndarray, freqs_hz: np.ndarray, times_s: np.ndarray, title: str = "", cmap: str = "magma",
                   vmin: float | None = 0.0, vmax: float | None = 1.0):
    """One scalogram channel: time (s) x log frequency (Hz). Returns the mesh (for a colour bar)."""
    mesh = ax.pcolormesh(times_s, freqs_hz, img, cmap=cmap, shading="auto", vmin=vmin, vmax=vmax)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=8)
    return mesh


def sweep_to_scalogram_figure(t_s, v_mv, spike_times_s, img, freqs_hz, times_s, stim_start_s: float, title: str = "",
                              ylabel: str = "V (mV)"):
    """Trace, spike raster and scalogram of one sweep, on a common onset-aligned time axis.

    ``spike_times_s`` is one array (one raster row) or a list of arrays (one row per repeat).
    """
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 0.7, 3]})
    axes[0].plot(np.asarray(t_s) - stim_start_s, v_mv, lw=0.5, color="k")
    axes[0].set_ylabel(ylabel)
    rows = spike_times_s if isinstance(spike_times_s, list) else [spike_times_s]
    axes[1].eventplot([np.asarray(r) - stim_start_s for r in rows], color="k", linelengths=0.8, linewidths=0.5)
    axes[1].set_yticks([])
    axes[1].set_ylabel("spikes")
    mesh = scalogram_axes(axes[2], img, freqs_hz, times_s)
    axes[2].set_ylabel("frequency (Hz)")
    axes[2].set_xlabel("time from stimulus onset (s)")
    axes[0].set_xlim(times_s[0], times_s[-1])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    # the colour bar takes its room from all three panels, so their time axes stay aligned
    fig.colorbar(mesh, ax=list(axes), label=SCALOGRAM_LABEL, pad=0.01, fraction=0.03)
    return fig


def scalogram_grid_figure(images: dict[str, np.ndarray], freqs_hz, times_s, channel_names=("sweep 1", "sweep 2"),
                          suptitle: str = ""):
    """Rows: classes; columns: channels; one shared colour bar."""
    classes = [c for c in CLASSES if c in images]
    n_ch = next(iter(images.values())).shape[0] if images else 2
    fig, axes = plt.subplots(len(classes), n_ch, figsize=(4.3 * n_ch, 2.2 * len(classes)), sharex=True, sharey=True,
                             squeeze=False, constrained_layout=True)
    mesh = None
    for i, c in enumerate(classes):
        for ch in range(n_ch):
            mesh = scalogram_axes(axes[i, ch], images[c][ch], freqs_hz, times_s, f"{c} — {channel_names[ch]}")
        axes[i, 0].set_ylabel("frequency (Hz)")
    for ch in range(n_ch):
        axes[-1, ch].set_xlabel("time from onset (s)")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label=SCALOGRAM_LABEL, fraction=0.03)
    fig.suptitle(suptitle, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------- notebooks 03, 04

def counts_figure(counts: pd.DataFrame, title: str = ""):
    """Bar chart of cells per class and split (from :func:`sts_utils.stages.splits.split_counts`)."""
    df = counts.set_index("label")[[c for c in ("train", "test") if c in counts.columns]]
    ax = df.plot.bar(figsize=(5, 3), rot=0)
    ax.set_ylabel("cells")
    ax.set_xlabel("")
    ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


def training_curves_figure(history: pd.DataFrame, title: str = "", n_classes: int = len(CLASSES)):
    """Training and validation loss, validation balanced accuracy with chance, and the best epoch."""
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ax[0].plot(history["epoch"], history["train_loss"], "o-", label="train")
    if history["val_loss"].notna().any():
        ax[0].plot(history["epoch"], history["val_loss"], "o-", label="validation")
    best = history[history["best"]]
    if len(best):
        for a in ax:
            a.axvline(best["epoch"].iloc[0], color="grey", ls="--", lw=0.8, label="best epoch")
    ax[0].set_ylabel("cross-entropy")
    ax[1].plot(history["epoch"], history["val_balanced_accuracy"], "o-", color="C2", label="validation")
    ax[1].axhline(1.0 / n_classes, color="grey", lw=0.6, ls=":", label=f"chance ({1 / n_classes:.2f})")
    ax[1].set_ylim(0, 1)
    ax[1].set_ylabel("balanced accuracy")
    for a in ax:
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- notebooks 05, 06

def confusion_axes(ax, y_true, y_pred, title: str):
    """Row-normalised confusion matrix (seaborn heatmap) annotated with counts and shares."""
    cm = confusion_matrix(y_true, y_pred, labels=list(CLASSES))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    annot = np.array([[f"{n}\n{v:.0%}" for n, v in zip(rc, rv)] for rc, rv in zip(cm, norm)])
    sns.heatmap(norm, annot=annot, fmt="", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                xticklabels=CLASSES, yticklabels=CLASSES, square=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return ax


def confusion_figure(y_true, y_pred, title: str):
    """One confusion matrix as its own figure."""
    fig, ax = plt.subplots(figsize=(4.6, 4))
    confusion_axes(ax, y_true, y_pred, title)
    fig.tight_layout()
    return fig


def confusion_panel_figure(predictions: pd.DataFrame, titles: dict[str, str], suptitle: str = ""):
    """One confusion matrix per model, side by side, over the rows given (the caller picks a repeat or pools folds)."""
    models = list(titles)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    for ax, m in zip(axes[0], models):
        p = predictions[predictions["model"] == m]
        confusion_axes(ax, p["true"], p["pred"], titles[m])
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def shap_summary_figure(contrib: np.ndarray, X: pd.DataFrame, class_index: int, top_n: int = 8, title: str = ""):
    """Beeswarm-like summary of the top features for one class; colour = the feature value's rank."""
    vals = contrib[:, :-1, class_index]
    order = np.argsort(np.abs(vals).mean(axis=0))[::-1][:top_n]
    fig, ax = plt.subplots(figsize=(6.2, 0.35 * len(order) + 1.4))
    rng = np.random.default_rng(0)
    points = None
    for k, j in enumerate(order[::-1]):
        x = X.iloc[:, j].to_numpy(dtype=float)
        rank = pd.Series(x).rank(pct=True).to_numpy()
        points = ax.scatter(vals[:, j], k + rng.uniform(-0.2, 0.2, len(x)), c=np.nan_to_num(rank, nan=0.5),
                            cmap="coolwarm", s=8, vmin=0, vmax=1)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([X.columns[j] for j in order[::-1]], fontsize=8)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"SHAP value (log-odds of {CLASSES[class_index]})")
    if points is not None:
        bar = fig.colorbar(points, ax=ax, pad=0.02)
        bar.set_label("feature value (rank among cells)")
        bar.set_ticks([0, 1])
        bar.set_ticklabels(["low", "high"])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def audit_figure(table: pd.DataFrame, title: str = ""):
    """Balanced accuracy of every audit probe, with its chance level."""
    probes = table.dropna(subset=["balanced_accuracy"]).copy()
    probes["what"] = probes["input"] + ": " + probes["probe"]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(probes) + 1.2))
    ax.barh(probes["what"], probes["balanced_accuracy"], color="C0")
    ax.scatter(probes["chance"], probes["what"], color="k", marker="|", s=80, label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel("balanced accuracy")
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.set_title(f"Audit: {title}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- notebook 07

def saliency_overlay(ax, scalogram: np.ndarray, attribution: np.ndarray, freqs_hz: np.ndarray, times_s: np.ndarray,
                     title: str = ""):
    """Paper-style overlay: scalogram in grey, attribution (scaled to its maximum) in colour. Returns the colour mesh."""
    ax.pcolormesh(times_s, freqs_hz, scalogram, cmap="Greys", shading="auto", vmin=0, vmax=1)
    a = attribution / attribution.max() if attribution.max() > 0 else attribution
    mesh = ax.pcolormesh(times_s, freqs_hz, np.ma.masked_less(a, 0.15), cmap="inferno", alpha=0.6, shading="auto",
                         vmin=0, vmax=1)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=8)
    return mesh


def _blank(ax, text: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="grey", transform=ax.transAxes, wrap=True)


def saliency_examples_figure(panels: dict[tuple[str, str], tuple[int, np.ndarray, np.ndarray]], backbones: list[str],
                             freqs_hz, times_s, title: str = ""):
    """Rows: backbones; columns: classes; ``panels[(backbone, class)] = (specimen_id, scalogram, map)``."""
    classes = [c for c in CLASSES if any((b, c) in panels for b in backbones)]
    fig, axes = plt.subplots(len(backbones), max(1, len(classes)), figsize=(3.4 * max(1, len(classes)), 2.5 * len(backbones)),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    mesh = None
    for i, b in enumerate(backbones):
        for j, c in enumerate(classes):
            if (b, c) in panels:
                sid, img, attr = panels[(b, c)]
                mesh = saliency_overlay(axes[i, j], img, attr, freqs_hz, times_s, f"{b}: {c} (cell {sid})")
            else:
                _blank(axes[i, j], f"{b}: no correctly classified\n{c} test cell")
        axes[i, 0].set_ylabel("frequency (Hz)")
    for ax in axes[-1]:
        ax.set_xlabel("time from onset (s)")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="saliency (fraction of the cell's maximum)", fraction=0.03)
    fig.suptitle(title, fontsize=10)
    return fig


def saliency_grid_figure(maps: dict[tuple[str, str], dict[str, np.ndarray]], class_images: dict[str, np.ndarray],
                         freqs_hz, times_s, title: str = ""):
    """Rows: backbone x method; columns: classes; class-mean maps over the class-mean scalogram (channel 0)."""
    rows = list(maps)
    fig, axes = plt.subplots(len(rows), len(CLASSES), figsize=(3.3 * len(CLASSES), 2.0 * len(rows)), squeeze=False,
                             sharex=True, sharey=True, constrained_layout=True)
    mesh = None
    for i, (b, m) in enumerate(rows):
        for j, c in enumerate(CLASSES):
            ax = axes[i, j]
            mean = maps[(b, m)].get(c)
            if mean is None or c not in class_images:
                _blank(ax, f"{b} / {m}: no correctly\nclassified {c} test cell")
                continue
            mesh = saliency_overlay(ax, class_images[c], mean.sum(axis=0), freqs_hz, times_s, f"{b} / {m}: {c}")
            ax.tick_params(labelsize=6)
        axes[i, 0].set_ylabel("Hz", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("time from onset (s)", fontsize=7)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="mean attribution (fraction of the map's maximum)", fraction=0.02)
    fig.suptitle(title, fontsize=10)
    return fig


def saliency_per_channel_figure(means: dict[str, np.ndarray], channel_names: tuple[str, ...], freqs_hz, times_s,
                                title: str = ""):
    """Rows: the image's channels (named); columns: classes; each class-mean map with its own scale."""
    n_ch = len(channel_names)
    fig, axes = plt.subplots(n_ch, len(CLASSES), figsize=(3.3 * len(CLASSES), 2.4 * n_ch), squeeze=False,
                             sharex=True, sharey=True, constrained_layout=True)
    mesh = None
    for j, c in enumerate(CLASSES):
        mean = means.get(c)
        for ch in range(n_ch):
            if mean is None:
                _blank(axes[ch, j], f"no correctly classified\n{c} test cell")
                continue
            m = mean[ch] / mean.max() if mean.max() > 0 else mean[ch]
            mesh = scalogram_axes(axes[ch, j], m, freqs_hz, times_s, f"{c}: {channel_names[ch]}", cmap="inferno")
    for ch in range(n_ch):
        axes[ch, 0].set_ylabel("frequency (Hz)")
    for ax in axes[-1]:
        ax.set_xlabel("time from onset (s)")
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="mean saliency (fraction of the class map's maximum)", fraction=0.03)
    fig.suptitle(title, fontsize=10)
    return fig


def deletion_figure(curves: pd.DataFrame, backbones: list[str], methods: list[str], title: str = ""):
    """True-class probability against the fraction of pixels deleted: top-attributed (per method) vs random."""
    fig, axes = plt.subplots(1, len(backbones), figsize=(3.6 * len(backbones), 3), squeeze=False, sharey=True)
    for ax, b in zip(axes[0], backbones):
        for k, m in enumerate(methods):
            g = curves[(curves.backbone == b) & (curves.method == m) & (curves.deleted == "attribution")]
            ax.plot(g.fraction, g.p_true, "-o", ms=3, color=f"C{k}", label=f"top-attributed: {m}")
        g = curves[(curves.backbone == b) & (curves.method == methods[0]) & (curves.deleted == "random")]
        ax.plot(g.fraction, g.p_true, ":", color="grey", label="random pixels")
        ax.set_title(b, fontsize=9)
        ax.set_xlabel("fraction of pixels deleted")
    axes[0, 0].set_ylabel("mean true-class probability")
    axes[0, -1].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- notebook 08

def paired_differences_figure(paired: pd.DataFrame, title: str = "", alpha: float = 0.05):
    """Balanced-accuracy difference of each model against each reference, marked where p < ``alpha``."""
    refs = list(dict.fromkeys(paired["reference"]))
    fig, axes = plt.subplots(1, len(refs), figsize=(4.6 * len(refs), 0.45 * paired["model"].nunique() + 1.6),
                             squeeze=False, sharex=True)
    for ax, ref in zip(axes[0], refs):
        g = paired[paired.reference == ref].iloc[::-1]
        colors = ["C3" if p < alpha else "grey" for p in g["p_permutation"]]
        ax.barh(g["model"], g["difference"], color=colors)
        if {"ci_low", "ci_high"} <= set(g.columns) and g["ci_low"].notna().any():
            ax.errorbar(g["mean_diff"], g["model"], xerr=[g["mean_diff"] - g["ci_low"], g["ci_high"] - g["mean_diff"]],
                        fmt="o", color="k", ms=3, lw=0.8, label="mean over repeats, 95 % CI")
            ax.legend(fontsize=6)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(f"against {ref}", fontsize=9)
        ax.set_xlabel("balanced accuracy difference (model − reference)")
    fig.suptitle(f"{title}\nred: paired permutation test p < {alpha}", fontsize=9)
    fig.tight_layout()
    return fig


def learning_curve_figure(curve: pd.DataFrame, title: str = "", n_classes: int = len(CLASSES)):
    """Balanced accuracy against the number of training cells, one line per model."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, (model, g) in enumerate(curve.groupby("model", sort=False)):
        ax.plot(g["n_train"], g["balanced_accuracy"], "o-", color=f"C{k}", label=model)
    ax.axhline(1.0 / n_classes, color="grey", lw=0.6, ls=":", label=f"chance ({1 / n_classes:.2f})")
    ax.set_ylim(0, 1)
    ax.set_xlabel("training cells")
    ax.set_ylabel("test balanced accuracy")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- notebooks 09, 10

def distribution_figure(predictions: pd.DataFrame, by: str, title: str = ""):
    """Share of each predicted class per group (stacked bars, with counts) and the ensemble's confidence per group."""
    ok = predictions[predictions["status"] == "ok"]
    groups = sorted(predictions[by].astype(str).unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(groups) + 2.2))
    left = np.zeros(len(groups))
    for c in CLASSES:
        share = np.array([((ok[by].astype(str) == g) & (ok["ensemble_class"] == c)).sum()
                          / max(1, (ok[by].astype(str) == g).sum()) for g in groups])
        axes[0].barh(groups, share, left=left, color=CLASS_COLORS[c], label=c)
        left += share
    for k, g in enumerate(groups):
        axes[0].text(1.01, k, f"n={int((ok[by].astype(str) == g).sum())}", va="center", fontsize=8)
    axes[0].set_xlim(0, 1.15)
    axes[0].set_xlabel("share of predicted cells")
    axes[0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False)
    rng = np.random.default_rng(0)
    for k, g in enumerate(groups):
        d = ok[ok[by].astype(str) == g]
        y = k + rng.uniform(-0.25, 0.25, len(d))
        axes[1].scatter(d["ensemble_probability"], y, s=10, c=[CLASS_COLORS[c] for c in d["ensemble_class"]], alpha=0.8)
    axes[1].axvline(1 / len(CLASSES), color="grey", lw=0.8, ls=":")
    axes[1].set_yticks(range(len(groups)), groups)
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("ensemble probability of the predicted class (colour: the class; dotted: chance)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def rig_examples_figure(examples: dict[str, dict], title: str = ""):
    """One row per set of real recordings: the two chosen sweeps (step window shaded), their current, each scalogram channel.

    ``examples``: :func:`sts_utils.stages.rig_recordings.examples`.
    """
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 4, figsize=(14, 2.6 * n), squeeze=False, gridspec_kw={"width_ratios": [1.6, 1, 1, 1]})
    for row, (name, ex) in zip(axes, examples.items()):
        for k, (label, t_s, v_mv, i_pa, start_s, end_s) in enumerate(ex["sweeps"]):
            row[0].plot(t_s, v_mv, lw=0.5, color=("k", "#1f77b4")[k], label=label)
            row[1].plot(t_s, i_pa, lw=0.5, color=("k", "#1f77b4")[k])
            for ax in row[:2]:
                ax.axvspan(start_s, end_s, color="0.9", zorder=0)
        row[0].set_ylabel("V (mV)")
        row[0].legend(fontsize=7, loc="upper right")
        row[0].set_title(f"{name}: {ex['cell']} -> {ex['label']}", fontsize=8)
        row[1].set_ylabel("I (pA)")
        row[1].set_title("current; chosen step window shaded", fontsize=8)
        for k in range(min(2, ex["image"].shape[0])):
            scalogram_axes(row[2 + k], ex["image"][k], ex["freqs_hz"], ex["times_s"], f"scalogram, {ex['channel_names'][k]}")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
