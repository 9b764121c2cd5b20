"""Current steps from stimulus waveforms: the ideal step of a command, the step hidden in a measured current.

Pure computation (NumPy, SciPy). The Allen and demo files store an ideal stimulus, whose longest
non-zero run is the step (:func:`find_step_epoch`). Other rigs store a command that may hold
hyperpolarising pre-steps and several epochs, or only the *measured* current, which is noisy (tens
of pA of noise around a 10 pA step). :func:`step_segments` reduces any such waveform to
piecewise-constant segments (block medians, binary segmentation, edges at the threshold crossing
halfway between two levels), and :func:`protocol_step` finds the one epoch a step protocol varies
from sweep to sweep: the test step. Its amplitude is the step level minus the holding level (the
first segment), so a bias current is not counted as stimulus.

Units: :func:`unit_factor` converts any rig's current and voltage units to pA and mV.
Plausibility (:func:`plausibility_problem`) names values no membrane or amplifier gives, which come
from a wrong unit or gain; such sweeps are skipped, never rescaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: a step shorter than this is a test pulse, not a step protocol's test step (s)
MIN_STEP_S = 0.1
#: steps at least this long are long squares (the 0.5 s steps of many pClamp protocols are)
MIN_LONG_SQUARE_S = 0.25
#: onsets/offsets within this of each other are one protocol epoch across sweeps (s)
EPOCH_MATCH_S = 0.01
#: resting potentials outside this range come from a wrong unit or gain (mV)
RESTING_RANGE_MV = (-100.0, -30.0)
#: a whole-cell step above this is a wrong unit or gain (pA; microamperes are far beyond it)
MAX_STEP_PA = 20_000.0
#: level differences below this are noise, whatever the trace (pA)
MIN_LEVEL_DIFFERENCE_PA = 2.0


#: current units (lower case) -> factor to pA
CURRENT_TO_PA = {"fa": 1e-3, "pa": 1.0, "na": 1e3, "ua": 1e6, "µa": 1e6, "a": 1e12, "amp": 1e12, "amps": 1e12,
                 "ampere": 1e12, "amperes": 1e12}
#: voltage units (lower case) -> factor to mV
VOLTAGE_TO_MV = {"uv": 1e-3, "µv": 1e-3, "mv": 1.0, "v": 1e3, "volt": 1e3, "volts": 1e3}


def unit_factor(unit: str, table: dict[str, float]) -> float | None:
    """The factor of ``unit`` in ``table`` (:data:`CURRENT_TO_PA` or :data:`VOLTAGE_TO_MV`); None if it is not such a unit."""
    return table.get(str(unit).strip().lower())


def find_step_epoch(i_pa: np.ndarray, sampling_rate_hz: float, min_duration_s: float = 0.1) -> tuple[float, float, float]:
    """Onset (s), offset (s) and amplitude (pA) of the longest constant non-zero step in an ideal stimulus.

    Short test pulses before the step are ignored by taking the longest run. Returns NaNs for a
    stimulus without such a step.
    """
    i = np.asarray(i_pa, dtype=float)
    if i.size == 0 or not np.isfinite(i).all():
        return np.nan, np.nan, np.nan
    active = np.abs(i) > 0.5  # pA
    if not active.any():
        return np.nan, np.nan, 0.0
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    k = int(np.argmax(ends - starts))
    start, end = starts[k], ends[k]
    if (end - start) / sampling_rate_hz < min_duration_s:
        return np.nan, np.nan, np.nan
    # rounded to 0.01 pA: stored currents are quantised, and float noise would split equal steps
    return start / sampling_rate_hz, end / sampling_rate_hz, round(float(np.median(i[start:end])), 2)


@dataclass(frozen=True)
class Segment:
    """A stretch of constant current: ``start_s`` to ``end_s`` (s from the sweep's start) at ``level_pa``."""

    start_s: float
    end_s: float
    level_pa: float


def noise_pa(i_pa: np.ndarray) -> float:
    """Sample-to-sample noise (pA, robust SD from the median absolute difference); 0 for an ideal waveform."""
    d = np.diff(np.asarray(i_pa, dtype=float))
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)) if d.size else 0.0


def _split(blocks: np.ndarray, a: int, b: int, min_len: int, threshold: float, out: list[int], depth: int) -> None:
    """Binary segmentation of block medians ``blocks[a:b]``: the split that best separates two means, if real."""
    n = b - a
    if n < 2 * min_len or depth > 12:
        return
    x = blocks[a:b]
    c = np.cumsum(x)
    k = np.arange(min_len, n - min_len + 1)
    left = c[k - 1] / k
    right = (c[-1] - c[k - 1]) / (n - k)
    gain = np.abs(left - right) * np.sqrt(k * (n - k) / n)  # the CUSUM statistic: mean difference weighted by support
    j = int(np.argmax(gain))
    kk = int(k[j])
    if abs(left[j] - right[j]) < threshold:  # means of block medians: robust to spikes, and a box splits in two steps
        return
    out.append(a + kk)
    _split(blocks, a, a + kk, min_len, threshold, out, depth + 1)
    _split(blocks, a + kk, b, min_len, threshold, out, depth + 1)


def step_segments(i_pa: np.ndarray, sampling_rate_hz: float, block_s: float = 0.001, min_segment_s: float = 0.02
                  ) -> list[Segment]:
    """Piecewise-constant segments of a current waveform, ideal or measured (noisy).

    The trace is reduced to medians of ``block_s`` blocks, split recursively where two means differ
    by more than the noise allows (at least :data:`MIN_LEVEL_DIFFERENCE_PA`), and each edge is placed
    at the sample where the median-filtered trace crosses halfway between the two levels. A
    segment's level is the median of its samples away from its edges.

    Returns
    -------
    list of Segment
        In time order; empty for an empty or non-finite trace.
    """
    i = np.asarray(i_pa, dtype=float)
    if i.size < 4 or not np.isfinite(i).all():
        return []
    rate = float(sampling_rate_hz)
    bs = max(1, int(round(block_s * rate)))
    n_blocks = i.size // bs
    if n_blocks < 2:
        return [Segment(0.0, i.size / rate, float(np.median(i)))]
    blocks = np.median(i[: n_blocks * bs].reshape(n_blocks, bs), axis=1)
    sigma_block = noise_pa(blocks)  # measured on the blocks: rig noise is rarely white (Igor currents swing 170 pA a sample)
    min_len = max(1, int(round(min_segment_s / (bs / rate))))
    threshold = max(MIN_LEVEL_DIFFERENCE_PA, 6 * sigma_block / np.sqrt(min_len))
    cuts: list[int] = []
    _split(blocks, 0, n_blocks, min_len, threshold, cuts, 0)
    cuts = sorted(cuts)
    smooth = ndimage.median_filter(i, size=max(1, 2 * (bs // 2) + 1), mode="nearest")
    bounds_blocks = [0, *cuts, n_blocks]
    levels = [float(np.median(blocks[p:q])) for p, q in zip(bounds_blocks[:-1], bounds_blocks[1:])]
    edges = [0]
    for c, lo, hi in zip(cuts, levels[:-1], levels[1:]):
        # the threshold crossing halfway between the two levels, searched within two blocks of the cut
        s0, s1 = max(0, (c - 2) * bs), min(i.size, (c + 2) * bs)
        above = (smooth[s0:s1] - (lo + hi) / 2) * np.sign(hi - lo) > 0
        k = int(np.argmax(above)) if above.any() else c * bs - s0
        edges.append(s0 + k)
    edges.append(i.size)
    segments = []
    for s, e in zip(edges[:-1], edges[1:]):
        guard = min((e - s) // 4, bs * 2)  # edges are where filtering and amplifier settling blur the level
        segments.append(Segment(s / rate, e / rate, float(np.median(i[s + guard:e - guard] if e - s > 2 * guard else i[s:e]))))
    return segments


@dataclass(frozen=True)
class ProtocolStep:
    """The test step of a cell's step protocol.

    Attributes
    ----------
    start_s, end_s
        Onset and offset per sweep (s from the sweep's start), in the order of the input sweeps.
    amplitude_pa
        Step level minus holding level per sweep (pA).
    holding_pa
        The holding (first-segment) level per sweep (pA).
    n_levels
        Distinct step levels over the sweeps (a step protocol has one per amplitude).
    """

    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    amplitude_pa: tuple[float, ...]
    holding_pa: tuple[float, ...]
    n_levels: int


def protocol_step(traces: list[np.ndarray], sampling_rates_hz: list[float], min_step_s: float = MIN_STEP_S
                  ) -> ProtocolStep | None:
    """The epoch a step protocol varies across sweeps, with each sweep's onset, offset and amplitude.

    Each sweep's candidate epochs are its segments that differ from its holding level for at least
    ``min_step_s``. The test step is the epoch (onset and offset matched within :data:`EPOCH_MATCH_S`)
    with the most distinct levels over the sweeps; ties go to the earliest onset, so a fixed
    hyperpolarising pre-step (one level) or a repeated second step is never taken for it. A sweep
    whose step is at the holding level (a 0 pA step) gets the epoch's median timing and its own
    measured level there. Returns None when no sweep has a step.
    """
    segs = [step_segments(tr, r) for tr, r in zip(traces, sampling_rates_hz)]
    if not any(segs):
        return None
    holding = [s[0].level_pa if s else np.nan for s in segs]
    tol = []  # a level within this of the holding level is the holding level (pA): noise of 1 ms block medians
    for tr, rate in zip(traces, sampling_rates_hz):
        bs = max(1, int(round(0.001 * rate)))
        n = len(tr) // bs
        blocks = np.median(np.asarray(tr, dtype=float)[: n * bs].reshape(n, bs), axis=1) if n > 1 else np.asarray(tr)
        tol.append(max(MIN_LEVEL_DIFFERENCE_PA, 3 * noise_pa(blocks)))
    epochs: list[dict] = []  # {"start": median onset, "end": ..., "levels": {sweep: level}}
    for k, s in enumerate(segs):
        for seg in s[1:]:
            if seg.end_s - seg.start_s < min_step_s or abs(seg.level_pa - holding[k]) <= tol[k]:
                continue
            for ep in epochs:
                if abs(ep["start"] - seg.start_s) <= EPOCH_MATCH_S and abs(ep["end"] - seg.end_s) <= EPOCH_MATCH_S:
                    ep["members"].setdefault(k, seg)
                    break
            else:
                epochs.append({"start": seg.start_s, "end": seg.end_s, "members": {k: seg}})
    if not epochs:
        return None

    def score(ep: dict) -> tuple:
        levels = {round(m.level_pa - holding[k], 0) for k, m in ep["members"].items()}
        return (-len(levels), -len(ep["members"]), ep["start"])

    best = min(epochs, key=score)
    start0 = float(np.median([m.start_s for m in best["members"].values()]))
    end0 = float(np.median([m.end_s for m in best["members"].values()]))
    starts, ends, amps = [], [], []
    for k, (tr, rate) in enumerate(zip(traces, sampling_rates_hz)):
        m = best["members"].get(k)
        a, b = (m.start_s, m.end_s) if m is not None else (start0, end0)
        if m is not None:
            level = m.level_pa
        else:
            i0, i1 = int(round(a * rate)), int(round(b * rate))
            guard = (i1 - i0) // 10
            level = float(np.median(np.asarray(tr, dtype=float)[i0 + guard:i1 - guard])) if i1 - i0 > 2 * guard + 1 else np.nan
        starts.append(float(a))
        ends.append(float(b))
        # rounded to 0.01 pA as find_step_epoch: equal steps must compare equal
        amps.append(round(float(level - holding[k]), 2))
    return ProtocolStep(tuple(starts), tuple(ends), tuple(amps), tuple(float(h) for h in holding), score(best)[0] * -1)


def resting_mv(v_mv: np.ndarray, sampling_rate_hz: float, before_s: float) -> float:
    """Median membrane potential (mV) before ``before_s`` (the step onset), over the whole sweep when that is empty."""
    v = np.asarray(v_mv, dtype=float)
    n = int(round(before_s * sampling_rate_hz)) if np.isfinite(before_s) else 0
    return float(np.median(v[:n] if n > 10 else v))


def plausibility_problem(resting_potential_mv: float, amplitude_pa: float) -> str:
    """The failed check of a sweep, or ``""``: a resting potential outside :data:`RESTING_RANGE_MV`, a step above :data:`MAX_STEP_PA`."""
    lo, hi = RESTING_RANGE_MV
    if not np.isfinite(resting_potential_mv) or not lo <= resting_potential_mv <= hi:
        return f"implausible resting potential ({resting_potential_mv:.4g} mV, outside {lo:g} to {hi:g} mV: unit or gain?)"
    if np.isfinite(amplitude_pa) and abs(amplitude_pa) > MAX_STEP_PA:
        return f"implausible step amplitude ({amplitude_pa:.4g} pA, above {MAX_STEP_PA:g} pA: unit or gain?)"
    return ""
