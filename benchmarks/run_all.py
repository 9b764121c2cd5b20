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

from benchmarks import (bench_gpu_training, bench_readers, bench_scalograms, bench_simulator,  # noqa: E402
                        bench_training_step)


#: Per-page seconds of `make paper` on demo before issue 27 (main at 6c2500a, 2 cores; see its README).
BEFORE = ROOT / "benchmarks" / "results" / "cpu2_6c2500a" / "paper_pages.csv"


def page_rows(timings_csv: Path) -> list[dict]:
    """One row per page: its seconds in this run, and the ratio to the same page before issue 27."""
    if not timings_csv.is_file():
        return []
    table = pd.read_csv(timings_csv)
    now = table.set_index("page")["seconds"]
    before = pd.read_csv(BEFORE).set_index("page")["seconds"]
    rows = []
    for page in sorted(now.index):
        ratio = before.get(page, float("nan")) / now[page]
        rows.append({"benchmark": f"page {page}", "metric": "seconds (speedup vs 6c2500a; pages now run side by side)",
                     "value": f"{now[page]:.0f} ({ratio:.1f}x)", "goal": "—", "ok": None})
    if "started_utc" in table:  # the pages' wall span against 6c2500a's pages, which ran one at a time
        span_s = (pd.to_datetime(table["finished_utc"]).max() - pd.to_datetime(table["started_utc"]).min()).total_seconds()
        rows.append({"benchmark": "pages' wall span", "metric": "seconds (speedup vs 6c2500a's total)",
                     "value": f"{span_s:.0f} ({before.sum() / span_s:.1f}x)", "goal": "—", "ok": None})
    return rows


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
            wall_s = time.perf_counter() - t0
            rows.append({"benchmark": "make paper (demo, from scratch)", "metric": "wall time (min)",
                         "value": wall_s / 60, "goal": "<= 10, exit 0", "ok": r.returncode == 0 and wall_s <= 600})
            t0 = time.perf_counter()
            subprocess.run(["make", "paper", f"DATA_DIR={tmp}/data", f"FIGURES_DIR={tmp}/figures", f"BUILD_DIR={tmp}/build"],
                           cwd=ROOT, capture_output=True, text=True)
            noop_s = time.perf_counter() - t0
            rows.append({"benchmark": "make paper (demo, up to date)", "metric": "wall time (s)", "value": noop_s,
                         "goal": "<= 5", "ok": noop_s <= 5})
            rows += page_rows(Path(tmp) / "build" / "demo" / "timings.csv")
            data_dir = f"{tmp}/data"
        if not (Path(data_dir) / "demo" / "scalograms" / "index.csv").exists():
            sys.exit(f"no demo scalograms in {data_dir}: run `make data scalograms` first")
        sim = bench_simulator.main([])
        rows.append({"benchmark": f"simulator numba vs numpy ({sim['cells']} cells)", "metric": "speedup (x)",
                     "value": sim["speedup"], "goal": ">= 20", "ok": sim["speedup"] >= 20})
        rows.append({"benchmark": f"simulator numba vs numpy ({sim['cells']} cells)", "metric": "max spike time difference (ms)",
                     "value": sim["max_spike_time_difference_ms"], "goal": "<= 0.1, same spike counts",
                     "ok": sim["max_spike_time_difference_ms"] <= 0.1 and sim["sweeps_other_spike_count"] == 0})
        s = bench_scalograms.main(["--data-dir", data_dir])
        # "ok" is only set where the row has a goal; the others are measurements to read, not checks
        rows += [{"benchmark": "scalograms vs paper-style", "metric": "throughput ratio (x)", "value": s["throughput_ratio"],
                  "goal": ">= 5", "ok": s["throughput_ratio"] >= 5},
                 {"benchmark": "scalograms vs paper-style", "metric": "bytes/cell ratio (store on disk)", "value": s["bytes_ratio"],
                  "goal": "<= 0.05", "ok": s["bytes_ratio"] <= 0.05},
                 {"benchmark": "scalograms vs paper-style", "metric": "bytes/cell ratio (shard, while running)",
                  "value": s["shard_bytes_ratio"], "goal": "—", "ok": None}]
        t = bench_training_step.main(["--data-dir", data_dir])
        rows.append({"benchmark": "training step (resnet18, 64 px)", "metric": "data-loading share", "value": t["loading_share"],
                     "goal": "< 0.05", "ok": t["loading_share"] < 0.05})
        rd = bench_readers.main(["--data-dir", data_dir])
        rows.append({"benchmark": "NWB 2 sweep listing", "metric": "h5py vs pynwb speedup (x)", "value": rd["speedup"],
                     "goal": "—", "ok": None})
        g = bench_gpu_training.main([])
        rows.append({"benchmark": f"paper protocol, 4 backbones ({g['device']}{', tiny CPU check' if g['tiny'] else ''})",
                     "metric": "projected hours, 1 worker", "value": g["total_s"][1] / 3600 if 1 in g["total_s"] else float("nan"),
                     "goal": "<= 2 on one H100/H200", "ok": None if g["tiny"] else g["total_s"][1] / 3600 <= 2})
    print()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
