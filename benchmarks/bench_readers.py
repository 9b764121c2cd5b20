"""Reading the sweep list of NWB 2 files: pynwb's object tree vs the h5py layout reader.

    python benchmarks/bench_readers.py [--files 20]
"""
from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd

from sts_utils.core import config
from sts_utils.data.nwb import read_nwb2_sweep_table


def main(argv=None) -> dict:
    from pynwb import NWBHDF5IO

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--files", type=int, default=20)
    args = ap.parse_args(argv)
    files = sorted(config.raw_dir(args.dataset, args.data_dir).glob("sub-*/*.nwb"))[: args.files]
    t0 = time.perf_counter()
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with NWBHDF5IO(str(f), "r") as io:
                nwb = io.read()
                _ = [(s.sweep_number, s.stimulus_description) for s in nwb.acquisition.values()]
    t_pynwb = time.perf_counter() - t0
    t0 = time.perf_counter()
    for f in files:
        read_nwb2_sweep_table(f)
    t_h5 = time.perf_counter() - t0
    out = {"files": len(files), "pynwb_s_per_file": t_pynwb / len(files), "h5py_s_per_file": t_h5 / len(files),
           "speedup": t_pynwb / t_h5}
    print(pd.Series(out).to_string())
    return out


if __name__ == "__main__":
    main()
