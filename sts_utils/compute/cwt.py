"""The continuous wavelet transform of the STS images: PyWavelets' CWT, batched and multirate.

Pure computation (NumPy, SciPy, PyWavelets); no files.

Transform
    Complex Morlet ``cmor1.5-1.0`` (bandwidth 1.5, centre frequency 1): a complex wavelet gives the
    amplitude envelope directly (its modulus does not oscillate at the carrier, as a real Morlet's
    does), and a bandwidth of 1.5 gives about three cycles per wavelet, a balance between resolving
    single spikes in time and firing rates in frequency.

    :func:`multirate_cwt_modulus` computes each octave of frequencies on a copy of the signal
    decimated (FIR anti-alias, zero phase) so that it sits at 1/16-1/8 of its sampling rate, and
    averages its modulus onto the stored time grid. This gives the same image as one full-rate
    ``pywt.cwt`` over all scales averaged onto that grid (tested), at a fraction of the cost.

    Each octave's transform is :func:`pywt_cwt_batched`, PyWavelets' own CWT (its wavelet, its
    sampling of the wavelet, its trimming; equal to ``pywt.cwt`` to ~1e-14, tested) with all
    scales in one batched FFT against a cached kernel bank, instead of ``pywt.cwt``'s Python loop
    of one FFT pair per scale, and with an FFT only as long as the kept output needs.

Normalisation (:func:`scalogram_image`)
    ``log1p(modulus / m)`` with ``m`` the cell's median modulus over both channels, then divided by
    its maximum (values in [0, 1]). Without the log, the slow response to the current step holds
    nearly all the power and spikes end up near zero; the common reference keeps the relative power
    of the two sweeps, and the division removes the cell's overall scale. ``m`` is at least
    ``REFERENCE_FLOOR`` (1e-4, i.e. 80 dB, the ``top_db`` convention of librosa's
    ``amplitude_to_db``) times the peak modulus: where a channel stays silent (spike trains
    without spikes) the median is rounding noise, ~1e-15, and dividing by it would turn that noise
    into structure.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pywt
from scipy import fft as sfft
from scipy import signal as sps

from sts_utils.core.errors import SelectionError

WAVELET = "cmor1.5-1.0"
REFERENCE_FLOOR = 1e-4  # smallest normalisation reference, relative to the cell's peak modulus
#: bump when the images a parameter set gives change (v2: reference floor)
TRANSFORM_VERSION = 2


def resample_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    """Resample each row onto ``n_out`` equal bins: bin means when shrinking, linear when growing."""
    x = np.atleast_2d(x)
    n_in = x.shape[1]
    if n_in == n_out:
        return x.copy()
    if n_in % n_out == 0:  # whole bins: a plain mean (the same bin means, without the cumulative sum)
        return x.reshape(x.shape[0], n_out, n_in // n_out).mean(axis=2)
    if n_in > n_out:
        cs = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1, dtype=np.float64)], axis=1)
        edges = np.linspace(0.0, n_in, n_out + 1)
        i0 = np.minimum(np.floor(edges).astype(int), n_in - 1)
        frac = edges - i0
        at_edges = cs[:, i0] * (1 - frac) + cs[:, i0 + 1] * frac
        return np.diff(at_edges, axis=1) / np.diff(edges)
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return np.stack([np.interp(centres, np.arange(n_in), row) for row in x])


@functools.lru_cache(maxsize=64)
def _pywt_kernels(wavelet: str, scales: tuple[float, ...], precision: int) -> tuple[tuple[np.ndarray, int], ...]:
    """The filters ``pywt.cwt`` applies, one per scale: ``(kernel, output offset)``.

    ``pywt.cwt`` convolves the signal with the integrated wavelet sampled at each scale, takes the
    first difference and trims the ends; the difference of a convolution is the convolution with
    the differenced kernel, so each scale is one linear filter ``-sqrt(scale) * diff([0, g, 0])``
    whose output starts ``offset`` samples in.
    """
    w = pywt.ContinuousWavelet(wavelet)
    int_psi, x = pywt.integrate_wavelet(w, precision=precision)
    int_psi = np.conj(int_psi) if w.complex_cwt else int_psi
    step = x[1] - x[0]
    kernels = []
    for scale in scales:
        j = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
        g = int_psi[j[j < int_psi.size]][::-1]
        h = -np.sqrt(scale) * np.diff(g, prepend=0, append=0)
        half = (len(g) - 2) / 2
        kernels.append((h, (math.floor(half) if half > 0 else 0) + 1))
    return tuple(kernels)


@functools.lru_cache(maxsize=64)
def _kernel_bank_fft(wavelet: str, scales: tuple[float, ...], precision: int, n_fft: int,
                     lag_min: int, lag_max: int) -> np.ndarray:
    """FFT of every scale's kernel, placed by lag (so all outputs start at 0) and cut to the lags used."""
    bank = np.zeros((len(scales), n_fft), dtype=complex)
    for row, (h, offset) in zip(bank, _pywt_kernels(wavelet, scales, precision)):
        lags = np.arange(len(h)) - offset
        used = (lags >= lag_min) & (lags <= lag_max)
        row[lags[used] % n_fft] = h[used]
    return sfft.fft(bank, axis=1)


def pywt_cwt_batched(x: np.ndarray, scales: np.ndarray, wavelet: str = WAVELET, precision: int = 12,
                     keep: tuple[int, int] | None = None) -> np.ndarray:
    """``pywt.cwt(x, scales, wavelet, method="fft")[0][..., start:stop]``, all scales in one batched FFT.

    The same wavelet, sampling and trimming as PyWavelets (equal to it to rounding, ~1e-14; tested),
    without its per-scale loop of one FFT pair each. Each scale's filter is placed by lag in one
    cached kernel bank, so a call is one forward FFT of the signal and one batched inverse FFT.
    Only output columns ``keep = (start, stop)`` are returned (default: all); kernel taps that
    cannot reach them are dropped and the FFT is just long enough that no kept column wraps
    around. That matters for low frequencies, whose wavelets are longer than the signal itself.

    ``x`` is (samples,) or (channels, samples); returns complex (scales, stop - start) or
    (channels, scales, stop - start).
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    start, stop = keep if keep is not None else (0, n)
    if not 0 <= start < stop <= n:
        raise ValueError(f"keep={keep} outside 0..{n}")
    scales = tuple(float(s) for s in np.atleast_1d(scales))
    kernels = _pywt_kernels(wavelet, scales, precision)
    # output t reads x[t - lag]: the kept columns need lags in [start - (n - 1), stop - 1]
    lag_min, lag_max = start - (n - 1), stop - 1
    lo = max(lag_min, min(-offset for _, offset in kernels))
    hi = min(lag_max, max(len(h) - 1 - offset for h, offset in kernels))
    # a circular convolution of period P is exact at the kept columns once no used lag is
    # ambiguous modulo P: P > (largest used lag - smallest needed) and vice versa
    # (2-3-5-smooth lengths: pocketfft is slower on the 7- and 11-factor sizes next_fast_len allows)
    n_fft = sfft.next_fast_len(max(n, stop, hi - lag_min + 1, lag_max - lo + 1), real=True)
    bank = _kernel_bank_fft(wavelet, scales, precision, n_fft, lag_min, lag_max)
    spectrum = sfft.fft(x, n_fft, axis=-1)[..., None, :]
    return sfft.ifft(spectrum * bank, axis=-1)[..., start:stop]


def cwt_modulus(x: np.ndarray, sampling_rate_hz: float, freqs_hz: np.ndarray, wavelet: str = WAVELET) -> np.ndarray:
    """Full-rate CWT modulus (rows = ``freqs_hz``), with reflect padding against edge effects.

    The padding is half the signal, capped at half the longest wavelet: a coefficient only sees
    samples within half a wavelet length on either side, so a longer reflection would not change
    any value inside the window (tested).
    """
    x = np.asarray(x, dtype=float) - np.mean(x)
    n = len(x)
    scales = pywt.frequency2scale(wavelet, np.asarray(freqs_hz) / sampling_rate_hz)
    longest = max(len(h) for h, _ in _pywt_kernels(wavelet, tuple(float(s) for s in scales), 12))
    pad = min(n - 1, n // 2, longest // 2 + 2)
    xp = np.pad(x, pad, mode="reflect")
    return np.abs(pywt_cwt_batched(xp, scales, wavelet, keep=(pad, pad + n)))


def multirate_cwt_modulus(x: np.ndarray, sampling_rate_hz: float, freqs_hz: np.ndarray, n_out: int,
                          wavelet: str = WAVELET) -> np.ndarray:
    """CWT modulus on ``n_out`` time bins, each octave computed at a matching decimated rate.

    Rows follow ``freqs_hz``. Frequencies above 1/16 of the current rate (at least 16 samples per
    wavelet cycle, so the sampled wavelet keeps its shape) are done at that rate; the signal is then
    halved (FIR, zero-phase) until every frequency is covered.
    """
    freqs = np.asarray(freqs_hz, dtype=float)
    out = np.empty((len(freqs), n_out), dtype=np.float64)
    todo = np.ones(len(freqs), dtype=bool)
    sig = np.asarray(x, dtype=float) - np.mean(x)
    fs = float(sampling_rate_hz)
    level = 0
    while todo.any():
        can_decimate = len(sig) >= 2 * max(n_out, 64)
        band = todo & ((freqs > fs / 16.0) | (not can_decimate))
        if band.any():
            # pywt's CWT sums over samples with a 1/sqrt(scale) weight, so at half the rate (half
            # the samples, half the scale) the modulus is 1/sqrt(2) smaller: undo it per level
            gain = np.sqrt(2.0) ** level
            out[band] = gain * resample_rows(cwt_modulus(sig, fs, freqs[band], wavelet), n_out)
            todo &= ~band
        if todo.any():
            sig = sps.decimate(sig, 2, ftype="fir", zero_phase=True)
            fs /= 2.0
            level += 1
    return out


def scalogram_image(signals: list[np.ndarray], sampling_rate_hz: float, freqs_hz: np.ndarray, store_times: int,
                    wavelet: str = WAVELET) -> np.ndarray:
    """Stack the CWT moduli of the channel signals, log-compress and scale to the cell's maximum.

    Returns float32 (channels, scales, store_times) in [0, 1]. A cell whose signals are flat
    (zero modulus everywhere) is skipped with a :class:`SelectionError`.
    """
    # one channel at a time: batching both channels into one (channels, scales, samples) complex
    # array outgrew the CPU cache and ran slower here than two single-channel calls
    img = np.stack([multirate_cwt_modulus(s, sampling_rate_hz, freqs_hz, store_times, wavelet) for s in signals])
    if not np.isfinite(img).all():
        raise SelectionError("non-finite scalogram")
    # log compression relative to the cell's median modulus: the slow step response would
    # otherwise hold nearly all of the dynamic range and leave spikes near zero
    peak = float(img.max())
    if peak <= 0:
        raise SelectionError("flat signal", "zero wavelet modulus in every channel")
    ref = max(float(np.median(img)), REFERENCE_FLOOR * peak)
    img = np.log1p(img / ref)
    return (img / float(img.max())).astype(np.float32)
