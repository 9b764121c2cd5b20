"""`make bench`: every stage benchmark, then the end-to-end time of `make paper` on demo, as one table.

The end-to-end run uses a fresh temporary data/figures/build folder (so nothing is skipped as up to
date); pass --no-paper to leave it out. The stage benchmarks need the demo cohort in the data folder
(`make data scalograms` first, or the end-to-end run's own folder is used).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_readers, bench_scalograms, bench_training_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-paper", action="store_true")
    args = ap.parse_args()
    rows = []
    data_dir = os.environ.get("STS_DATA_DIR", "data")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_paper:
            t0 = time.perf_counter()
            r = subprocess.run(["make", "paper", f"DATA_DIR={tmp}/data", f"FIGURES_DIR={tmp}/figures", f"BUILD_DIR={tmp}/build"],
                               cwd=ROOT, capture_output=True, text=True)
            rows.append({"benchmark": "make paper (demo, from scratch)", "metric": "wall time (min)",
                         "value": (time.perf_counter() - t0) / 60, "ok": r.returncode == 0})
            data_dir = f"{tmp}/data"
        if not (Path(data_dir) / "demo" / "scalograms" / "index.csv").exists():
            sys.exit(f"no demo scalograms in {data_dir}: run `make data scalograms` first")
        s = bench_scalograms.main(["--data-dir", data_dir])
        rows += [{"benchmark": "scalograms vs paper-style", "metric": "throughput ratio (x)", "value": s["throughput_ratio"], "ok": s["throughput_ratio"] >= 5},
                 {"benchmark": "scalograms vs paper-style", "metric": "bytes/cell ratio (store on disk)", "value": s["bytes_ratio"], "ok": s["bytes_ratio"] <= 0.05},
                 {"benchmark": "scalograms vs paper-style", "metric": "bytes/cell ratio (shard, while running)", "value": s["shard_bytes_ratio"], "ok": True}]
        t = bench_training_step.main(["--data-dir", data_dir])
        rows.append({"benchmark": "training step (resnet18, 64 px)", "metric": "data-loading share", "value": t["loading_share"], "ok": t["loading_share"] < 0.05})
        rd = bench_readers.main(["--data-dir", data_dir])
        rows.append({"benchmark": "NWB 2 sweep listing", "metric": "h5py vs pynwb speedup (x)", "value": rd["speedup"], "ok": True})
    print()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
