"""Channel signals: a sweep's analysis window resampled, or a spike train binned as a rate.

Pure computation (NumPy, SciPy). Both give ``n_times`` samples on the window's own time axis, so a
voltage channel and a spike-train channel go through the same CWT.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal as sps

from sts_utils.core.errors import SelectionError


def resample_window(t_s: np.ndarray, v: np.ndarray, start_s: float, end_s: float, n_times: int) -> np.ndarray:
    """The trace between ``start_s`` and ``end_s`` (s), anti-alias resampled to ``n_times`` points.

    Polyphase FIR resampling (:func:`scipy.signal.resample_poly`).

    Raises
    ------
    SelectionError
        ``sweep shorter than the analysis window``.
    """
    rate = 1.0 / float(np.median(np.diff(t_s[: min(len(t_s), 1000)])))
    i0 = int(round((start_s - t_s[0]) * rate))
    i1 = int(round((end_s - t_s[0]) * rate))
    if i0 < 0 or i1 > len(v):
        raise SelectionError("sweep shorter than the analysis window", f"needs {start_s:.3f}-{end_s:.3f} s")
    seg = np.asarray(v[i0:i1], dtype=float)
    ratio = Fraction(n_times, len(seg)).limit_denominator(2000)
    res = sps.resample_poly(seg, ratio.numerator, ratio.denominator, padtype="line")
    if len(res) >= n_times:
        return res[:n_times]
    return np.pad(res, (0, n_times - len(res)), mode="edge")


def bin_spike_train(spike_times_s: np.ndarray, start_s: float, end_s: float, n_times: int) -> np.ndarray:
    """Spike train as a rate (Hz) in ``n_times`` equal bins between ``start_s`` and ``end_s`` (s)."""
    counts, edges = np.histogram(np.asarray(spike_times_s, dtype=float), bins=n_times, range=(start_s, end_s))
    return counts / np.diff(edges)
