"""Figures shared by the notebooks (matplotlib/seaborn; every function returns its figure)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .config import CLASSES

CLASS_COLORS = {"Pvalb": "#d62728", "Sst": "#ff7f0e", "Vip/Lamp5": "#9467bd", "Excitatory": "#1f77b4"}


def save(fig, path, dpi: int = 130):
    """Save a figure atomically (PNG) and close it."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1])
    return path


def example_traces_figure(examples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]], suptitle: str = ""):
    """One column per class; each panel a trace (time in s, membrane potential in mV)."""
    classes = [c for c in CLASSES if c in examples]
    n_rows = max(len(v) for v in examples.values()) if examples else 1
    fig, axes = plt.subplots(n_rows, len(classes), figsize=(3.2 * len(classes), 2.0 * n_rows), sharex=True,
                             sharey=True, squeeze=False)
    for j, c in enumerate(classes):
        for i, (label, t, v) in enumerate(examples[c]):
            axes[i, j].plot(t, v, lw=0.5, color=CLASS_COLORS[c])
            axes[i, j].set_title(f"{c} — {label}", fontsize=8)
        axes[-1, j].set_xlabel("time (s)")
    for i in range(n_rows):
        axes[i, 0].set_ylabel("V (mV)")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def fi_curves_figure(fi: pd.DataFrame, title: str = ""):
    """f–I curves per class: firing rate (Hz) against current above rheobase (pA), mean ± sd over cells."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.lineplot(data=fi, x="above_rheobase_pa", y="rate_hz", hue="label", hue_order=[c for c in CLASSES if c in set(fi.label)],
                 palette=CLASS_COLORS, errorbar="sd", marker="o", ax=ax)
    ax.set_xlabel("current above rheobase (pA)")
    ax.set_ylabel("firing rate (Hz)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def scalogram_axes(ax, img: np.ndarray, freqs_hz: np.ndarray, times_s: np.ndarray, title: str = "", cmap: str = "magma"):
    """One scalogram channel with time (s) and log frequency (Hz) axes."""
    mesh = ax.pcolormesh(times_s, freqs_hz, img, cmap=cmap, shading="auto")
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
    axes[1].eventplot([np.asarray(r) - stim_start_s for r in rows], color="k", linelengths=0.8)
    axes[1].set_yticks([])
    axes[1].set_ylabel("spikes")
    mesh = scalogram_axes(axes[2], img, freqs_hz, times_s)
    axes[2].set_ylabel("frequency (Hz)")
    axes[2].set_xlabel("time from stimulus onset (s)")
    axes[0].set_xlim(times_s[0], times_s[-1])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    # the colour bar takes its room from all three panels, so their time axes stay aligned
    fig.colorbar(mesh, ax=list(axes), label="normalised |CWT|", pad=0.01, fraction=0.03)
    return fig


def scalogram_grid_figure(images: dict[str, np.ndarray], freqs_hz, times_s, channel_names=("sweep 1", "sweep 2"), suptitle=""):
    """Rows: classes; columns: channels."""
    classes = [c for c in CLASSES if c in images]
    n_ch = next(iter(images.values())).shape[0] if images else 2
    fig, axes = plt.subplots(len(classes), n_ch, figsize=(4 * n_ch, 2.2 * len(classes)), sharex=True, sharey=True, squeeze=False)
    for i, c in enumerate(classes):
        for ch in range(n_ch):
            scalogram_axes(axes[i, ch], images[c][ch], freqs_hz, times_s, f"{c} — {channel_names[ch]}")
        axes[i, 0].set_ylabel("Hz")
    for ch in range(n_ch):
        axes[-1, ch].set_xlabel("time from onset (s)")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def training_curves_figure(history: pd.DataFrame, title: str = ""):
    fig, ax = plt.subplots(1, 2, figsize=(8, 3))
    ax[0].plot(history["epoch"], history["train_loss"], "o-", label="train")
    ax[0].plot(history["epoch"], history["val_loss"], "o-", label="validation")
    best = history[history["best"]]
    ax[0].axvline(best["epoch"].iloc[0], color="grey", ls="--", lw=0.8, label="best epoch")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("cross-entropy")
    ax[0].legend(fontsize=7)
    ax[1].plot(history["epoch"], history["val_balanced_accuracy"], "o-", color="C2")
    ax[1].set_ylim(0, 1)
    ax[1].axhline(0.25, color="grey", lw=0.5)
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("validation balanced accuracy")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def counts_figure(counts: pd.DataFrame, title: str = ""):
    """Bar chart of cells per class and split (from :func:`sts_utils.splits.split_counts`)."""
    df = counts.set_index("label")[[c for c in ("train", "test") if c in counts.columns]]
    ax = df.plot.bar(figsize=(5, 3), rot=0)
    ax.set_ylabel("cells")
    ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax.figure
