"""The demo simulator: compiled (numba) integrator vs the NumPy reference integrator on the same cells.

    python benchmarks/bench_simulator.py [--cells-per-class 2]

Both engines simulate the same design with the same seed (the same noise stream), so the benchmark also
reports how far apart their traces and spike times are. The compiled kernel is compiled (or loaded from
numba's cache) once before timing.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from sts_utils.compute import simulate


def _upstrokes_s(v_mv: np.ndarray, sampling_rate_hz: float) -> np.ndarray:
    """Times of the 0 mV upward crossings of one trace, in s."""
    return np.flatnonzero((v_mv[:-1] < 0.0) & (v_mv[1:] >= 0.0)) / sampling_rate_hz


def compare_engines(n_cells_per_class: int = 2, seed: int = 0) -> dict:
    """Time both engines on one design and compare their spike times (0 mV upstrokes)."""
    protocol = simulate.Protocol()
    design = simulate.cohort_design(n_cells_per_class, seed)
    simulate.simulate_cells(design.iloc[:1], seed, protocol, progress=False, engine="numba")  # compile / load cache
    timings, records = {}, {}
    for engine in ("numba", "numpy"):
        t0 = time.perf_counter()
        records[engine] = simulate.simulate_cells(design, seed, protocol, progress=False, engine=engine)
        timings[engine] = time.perf_counter() - t0
    n_spikes, count_mismatch, worst_s, worst_mv = 0, 0, 0.0, 0.0
    for new, old in zip(records["numba"], records["numpy"]):
        for v_new, v_old in zip(new["v_mv"], old["v_mv"]):
            worst_mv = max(worst_mv, float(np.abs(v_new - v_old).max()))
            s_new = _upstrokes_s(v_new, protocol.sampling_rate_hz)
            s_old = _upstrokes_s(v_old, protocol.sampling_rate_hz)
            n_spikes += len(s_old)
            if len(s_new) != len(s_old):
                count_mismatch += 1
            elif len(s_old):
                worst_s = max(worst_s, float(np.abs(s_new - s_old).max()))
    return {"cells": len(design), "numpy_s": timings["numpy"], "numba_s": timings["numba"],
            "speedup": timings["numpy"] / timings["numba"], "spikes": n_spikes, "sweeps_other_spike_count": count_mismatch,
            "max_spike_time_difference_ms": worst_s * 1e3, "max_voltage_difference_mv": worst_mv}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells-per-class", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = compare_engines(args.cells_per_class, args.seed)
    print(pd.Series(out).to_string())
    return out


if __name__ == "__main__":
    main()
