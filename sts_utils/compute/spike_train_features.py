"""Same-input baseline features: firing statistics of the very spike trains the CNN turns into scalograms.

The LightGBM baseline of the paper reads electrophysiology features from *other* protocols (long and
short squares, ramps). To ask whether the scalogram CNN beats hand-made features *on the same input*,
this module summarises each epoch of the Noise 1 spike trains with standard spike-train statistics.

Pure computation: NumPy, pandas and the field's library for spike-train statistics (Elephant, on
``neo.SpikeTrain`` objects with ``quantities`` units). No files, no figures.

Input table (``spike_trains.parquet`` layout, one row per sweep and epoch)::

    specimen_id   int
    sweep_number  int      (optional; orders the repeats)
    epoch         any      (2 and 3 for teeter2018 Noise 1; channel index for voltage-derived trains)
    epoch_start_s float    absolute start of the epoch on the sweep
    epoch_end_s   float    absolute end of the epoch on the sweep
    spike_times_s array    absolute spike times on the sweep (may extend beyond the epoch)

Every row of one (specimen, epoch) is one *repeat* of the same stimulus. Spike times are taken relative
to ``epoch_start_s`` and restricted to the window ``[0, epoch_end_s - epoch_start_s]``.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import neo
import numpy as np
import pandas as pd
import quantities as pq
from elephant.kernels import GaussianKernel
from elephant.statistics import cv, fanofactor, instantaneous_rate, isi, lv, mean_firing_rate

#: Feature names computed per epoch; the table's columns are ``f"{name}_ep{epoch}"``.
FEATURE_NAMES: tuple[str, ...] = ("rate_hz", "isi_mean_s", "isi_cv", "lv", "burstiness", "first_spike_latency_s",
                                  "adaptation", "fano_factor", "reliability")

REQUIRED_COLUMNS: tuple[str, ...] = ("specimen_id", "epoch", "epoch_start_s", "epoch_end_s", "spike_times_s")


def to_spike_trains(rows: pd.DataFrame) -> list[neo.SpikeTrain]:
    """Epoch-relative ``neo.SpikeTrain`` objects (seconds) of the repeats in ``rows``.

    Parameters
    ----------
    rows
        Rows of one (specimen, epoch): columns ``epoch_start_s``, ``epoch_end_s``, ``spike_times_s``
        (absolute times, s). Ordered by ``sweep_number`` when that column is present.

    Returns
    -------
    list of neo.SpikeTrain
        One train per row, ``t_start = 0 s``, ``t_stop = epoch_end_s - epoch_start_s``; spikes outside
        the epoch window are dropped (the stored trains keep a margin around the epoch).
    """
    if "sweep_number" in rows.columns:
        rows = rows.sort_values("sweep_number", kind="stable")
    trains = []
    for start_s, end_s, times_s in zip(rows["epoch_start_s"], rows["epoch_end_s"], rows["spike_times_s"]):
        duration_s = float(end_s) - float(start_s)
        if not duration_s > 0:
            raise ValueError(f"epoch must have positive duration, got start {start_s} s, end {end_s} s")
        t = np.sort(np.asarray(times_s if times_s is not None else [], dtype=float).ravel()) - float(start_s)
        t = t[(t >= 0.0) & (t <= duration_s)]
        trains.append(neo.SpikeTrain(t * pq.s, t_start=0.0 * pq.s, t_stop=duration_s * pq.s))
    return trains


def _weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    """Mean of the finite values weighted by how many terms each summarises; NaN when none."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = np.isfinite(v) & (w > 0)
    return float(np.average(v[keep], weights=w[keep])) if keep.any() else float("nan")


def adaptation_index(isis_s: np.ndarray) -> float:
    """Allen/ipfx adaptation index: mean of ``(isi[n+1] - isi[n]) / (isi[n+1] + isi[n])``.

    Positive when firing slows down, negative when it speeds up; NaN for fewer than two ISIs.
    Follows ``ipfx.spike_train_features.adaptation_index`` (pairs of zero ISIs count as 0).
    """
    a = np.asarray(isis_s, dtype=float)
    if a.size < 2:
        return float("nan")
    num, den = a[1:] - a[:-1], a[1:] + a[:-1]
    ratios = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(np.mean(ratios))


def spike_time_reliability(trains: Sequence[neo.SpikeTrain], sigma_s: float = 0.005,
                           sampling_period_s: float = 0.001) -> float:
    """Schreiber et al. (2003) spike-time reliability of repeated trains.

    Each train is convolved with a Gaussian kernel of standard deviation ``sigma_s`` (Elephant's
    ``instantaneous_rate``, sampled every ``sampling_period_s``, kernel truncated at the epoch edges like the
    CNN's window); reliability is the mean over all pairs of repeats of the cosine of the angle between
    the filtered trains, ``s_i . s_j / (|s_i| |s_j|)``.

    Parameters
    ----------
    trains
        Repeats of the same stimulus, same ``t_start``/``t_stop``.
    sigma_s
        Kernel width (s). 5 ms resolves the millisecond precision of noise-driven spikes while
        tolerating jitter of a few ms.
    sampling_period_s
        Time step (s) of the filtered trains; must be well below ``sigma_s``.

    Returns
    -------
    float
        In [0, 1]: 1 for identical repeats, near 0 for independent sparse trains. A pair where only one
        repeat has spikes counts as 0 (nothing shared); pairs of two empty repeats are skipped. NaN with
        fewer than two repeats or when no pair has a spike.
    """
    if len(trains) < 2 or not sigma_s > 0:
        return float("nan")
    counts = np.array([len(st) for st in trains])
    if counts.sum() == 0:
        return float("nan")
    rates = instantaneous_rate(list(trains), sampling_period=sampling_period_s * pq.s,
                               kernel=GaussianKernel(sigma=sigma_s * pq.s), border_correction=False)
    s = np.asarray(rates.magnitude, dtype=float).T  # (n_repeats, n_samples)
    norms = np.linalg.norm(s, axis=1)
    sims = []
    for i in range(len(trains)):
        for j in range(i + 1, len(trains)):
            if counts[i] == 0 and counts[j] == 0:
                continue
            if norms[i] == 0 or norms[j] == 0:
                sims.append(0.0)
            else:
                sims.append(float(s[i] @ s[j] / (norms[i] * norms[j])))
    # the FFT convolution can leave tiny negative round-off; keep the documented range
    return float(np.clip(np.mean(sims), 0.0, 1.0)) if sims else float("nan")


def epoch_features(trains: Sequence[neo.SpikeTrain], burst_isi_s: float = 0.010, reliability_sigma_s: float = 0.005
                   ) -> dict[str, float]:
    """Spike-train statistics of the repeats of one epoch.

    Parameters
    ----------
    trains
        Epoch-relative repeats (``t_start = 0 s``), e.g. from :func:`to_spike_trains`. Repeats of unequal
        length are cut to the shortest one.
    burst_isi_s
        ISIs shorter than this (s) count as within-burst intervals.
    reliability_sigma_s
        Gaussian kernel width (s) of :func:`spike_time_reliability`.

    Returns
    -------
    dict
        ``rate_hz``
            Spikes per second over the whole epoch window, mean over repeats (0 Hz for an empty train).
        ``isi_mean_s``
            Mean inter-spike interval (s) of the ISIs pooled over repeats (>= 2 spikes).
        ``isi_cv``
            Coefficient of variation of the ISIs (SD with ddof 0 over mean), per repeat with >= 3 spikes,
            averaged over repeats weighted by their number of ISIs.
        ``lv``
            Shinomoto's local variation (Elephant), per repeat with >= 3 spikes, weighted by the number
            of ISI pairs. 0 for a regular train, 1 for Poisson.
        ``burstiness``
            Fraction of pooled ISIs shorter than ``burst_isi_s`` (>= 2 spikes). This is chosen over the
            Goh-Barabasi coefficient ``(sd - mean) / (sd + mean)``, which is a monotone function of the CV
            and would duplicate ``isi_cv``.
        ``first_spike_latency_s``
            Time (s) of the first spike after epoch onset, mean over the repeats that spike.
        ``adaptation``
            :func:`adaptation_index` per repeat with >= 3 spikes, weighted by number of ISI pairs.
        ``fano_factor``
            Variance (ddof 0) over mean of the spike counts across repeats (Elephant); needs >= 2 repeats.
        ``reliability``
            :func:`spike_time_reliability`; needs >= 2 repeats.

        Every value is NaN where it is undefined (no repeats, too few spikes, one repeat).
    """
    nan = float("nan")
    if len(trains) == 0:
        return {name: nan for name in FEATURE_NAMES}
    stop_s = min(float(st.t_stop.rescale(pq.s)) for st in trains)
    if any(float(st.t_stop.rescale(pq.s)) != stop_s for st in trains):
        # counts, Fano factor and reliability compare repeats only on the window they all cover
        trains = [st.time_slice(st.t_start, stop_s * pq.s) for st in trains]
    isis = [np.asarray(isi(st).rescale(pq.s).magnitude, dtype=float) for st in trains]
    pooled = np.concatenate(isis)
    # per-repeat statistics need two ISIs; checking first avoids Elephant's NaN warnings
    multi = [x for x in isis if x.size >= 2]
    firsts = [float(st.magnitude[0]) for st in trains if len(st)]
    return {
        "rate_hz": float(np.mean([mean_firing_rate(st).rescale(pq.Hz).magnitude for st in trains])),
        "isi_mean_s": float(np.mean(pooled)) if pooled.size else nan,
        "isi_cv": _weighted_mean([cv(x) for x in multi], [x.size for x in multi]),
        "lv": _weighted_mean([lv(x) for x in multi], [x.size - 1 for x in multi]),
        "burstiness": float(np.mean(pooled < burst_isi_s)) if pooled.size else nan,
        "first_spike_latency_s": float(np.mean(firsts)) if firsts else nan,
        "adaptation": _weighted_mean([adaptation_index(x) for x in multi], [x.size - 1 for x in multi]),
        "fano_factor": float(fanofactor(list(trains))) if len(trains) >= 2 else nan,
        "reliability": spike_time_reliability(trains, sigma_s=reliability_sigma_s),
    }


def spike_train_feature_table(trains: pd.DataFrame, epochs: Sequence[Hashable] = (2, 3), burst_isi_s: float = 0.010,
                              reliability_sigma_s: float = 0.005) -> pd.DataFrame:
    """One row of same-input spike-train features per cell.

    Parameters
    ----------
    trains
        Spike-train rows (module docstring): one row per repeat and epoch.
    epochs
        Values of the ``epoch`` column to summarise, in column order: ``(2, 3)`` for teeter2018 Noise 1,
        channel indices for trains detected on voltage traces (one repeat per epoch there).
    burst_isi_s
        Burst ISI threshold (s) of the ``burstiness`` feature.
    reliability_sigma_s
        Gaussian kernel width (s) of the ``reliability`` feature.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``specimen_id``; columns ``specimen_id``, ``n_repeats`` (most repeats of any requested
        epoch) and ``f"{feature}_ep{epoch}"`` for each :data:`FEATURE_NAMES` entry and epoch (see
        :func:`epoch_features`). An epoch a cell lacks gives NaN features.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in trains.columns]
    if missing:
        raise ValueError(f"spike-train table lacks columns {missing}")
    epochs = tuple(epochs)
    columns = ["specimen_id", "n_repeats"] + [f"{name}_ep{e}" for e in epochs for name in FEATURE_NAMES]
    rows = []
    for sid, cell in trains[trains["epoch"].isin(epochs)].groupby("specimen_id", sort=True):
        row: dict = {"specimen_id": int(sid)}
        n_repeats = 0
        for e in epochs:
            sts = to_spike_trains(cell[cell["epoch"] == e])
            n_repeats = max(n_repeats, len(sts))
            feats = epoch_features(sts, burst_isi_s=burst_isi_s, reliability_sigma_s=reliability_sigma_s)
            row.update({f"{name}_ep{e}": value for name, value in feats.items()})
        row["n_repeats"] = n_repeats
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns)
    out["specimen_id"] = out["specimen_id"].astype("int64")
    out["n_repeats"] = out["n_repeats"].astype("int64")
    return out
