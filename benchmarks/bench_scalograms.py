"""Scalogram stage vs a paper-style path on the same cells, in one run.

Paper-style: per cell and per selected sweep, ``pywt.cwt`` at 180 scales on the 4,800-point signal
(full rate), stored as one float32 ``.npy`` per cell (180 x 4,800 x 2). This stage: the same wavelet
and scales, batched over scales (cached kernel bank) and computed multirate onto 480 stored time
bins, float16 shards consolidated into one store whose shards are then retired, as
``compute_scalograms`` does. Both start from the same selected, resampled sweep signals, so the
comparison is the transform and the storage. Prints cells/s and bytes/cell (what stays on disk) of
both and the ratios; the first call of each path (the kernel bank is built once per process) is
included.

    python benchmarks/bench_scalograms.py [--dataset demo] [--cells 40]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pywt

from sts_utils.core import config
from sts_utils.core.io import load_npy, save_npy_atomic, write_npy_rows_atomic
from sts_utils.stages.scalograms import ScalogramParams, cell_voltage_signals, scalogram_image


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cells", type=int, default=40)
    args = ap.parse_args(argv)
    ddir = config.dataset_dir(args.dataset, args.data_dir)
    sweeps = pd.read_csv(ddir / "sweeps.csv")
    index = pd.read_csv(ddir / "scalograms" / "index.csv")
    params = ScalogramParams()
    ls = sweeps[sweeps.stimulus_kind == "Long Square"]
    window = float((ls.stim_end_s - ls.stim_start_s).median()) + params.pre_s + params.post_s
    fs = params.n_times / window
    freqs = params.frequencies_hz(window)
    ids = index.specimen_id.to_numpy()[: args.cells]
    signals = {sid: cell_voltage_signals(sweeps[sweeps.specimen_id == sid], ddir / "raw", params)[0] for sid in ids}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        for sid, sig in signals.items():
            scales = pywt.frequency2scale(params.wavelet, freqs / fs)
            img = np.stack([np.abs(pywt.cwt(s - s.mean(), scales, params.wavelet, method="fft")[0]) for s in sig]).astype(np.float32)
            np.save(tmp / f"paper_{sid}.npy", img)
        t_paper = time.perf_counter() - t0
        bytes_paper = np.mean([(tmp / f"paper_{sid}.npy").stat().st_size for sid in ids])
        t0 = time.perf_counter()
        for sid, sig in signals.items():
            img = scalogram_image(sig, fs, freqs, params.store_times, params.wavelet).astype(np.float16)
            save_npy_atomic(img, tmp / f"sts_{sid}.npy")
        shard_bytes = np.mean([(tmp / f"sts_{sid}.npy").stat().st_size for sid in ids])

        def retired_shards():  # consolidate as the stage does: each shard into the store, then deleted
            for sid in ids:
                yield load_npy(tmp / f"sts_{sid}.npy")
                (tmp / f"sts_{sid}.npy").unlink()

        write_npy_rows_atomic(tmp / "store.npy", (len(ids), 2, params.n_scales, params.store_times), np.float16,
                              retired_shards())
        t_sts = time.perf_counter() - t0
        bytes_sts = (tmp / "store.npy").stat().st_size / len(ids)
    out = {"cells": len(ids), "paper_cells_per_s": len(ids) / t_paper, "sts_cells_per_s": len(ids) / t_sts,
           "paper_bytes_per_cell": bytes_paper, "sts_bytes_per_cell": bytes_sts,
           "throughput_ratio": t_paper / t_sts, "bytes_ratio": bytes_sts / bytes_paper,
           # a shard while the stage runs (one .npy header each), before consolidation retires it
           "shard_bytes_ratio": shard_bytes / bytes_paper}
    print(pd.Series(out).to_string())
    return out


if __name__ == "__main__":
    main()
