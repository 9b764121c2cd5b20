"""Training-step breakdown: the data-loading share of a step (goal < 5 %).

Times, over one epoch of the demo training loop's DataLoader (in-memory float16 tensor, cast per
batch) and model, the time spent fetching batches against forward + backward + optimizer step. One
warm-up step (first-call set-up of the model's kernels) comes before the timing.

    python benchmarks/bench_training_step.py [--backbone resnet18] [--image-size 64]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from sts_utils.data.models import build_model
from sts_utils.data.store import ScalogramStore
from sts_utils.stages.fit import as_tensor, encode_labels


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args(argv)
    store = ScalogramStore.load(args.dataset, args.data_dir)
    x = as_tensor(store.images[: 16 * args.batches])
    y = torch.as_tensor(encode_labels(store.index.label[: len(x)]))
    model, _ = build_model(args.backbone, pretrained="none", image_size=args.image_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    warm_x, warm_y = next(iter(loader))
    torch.nn.functional.cross_entropy(model(warm_x.float()), warm_y).backward()
    opt.zero_grad()
    t_load = t_step = 0.0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        xb = xb.float()
        t1 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        t2 = time.perf_counter()
        t_load += t1 - t0
        t_step += t2 - t1
    out = {"backbone": args.backbone, "image_size": args.image_size, "load_s": t_load, "compute_s": t_step,
           "loading_share": t_load / (t_load + t_step)}
    print(pd.Series(out).to_string())
    return out


if __name__ == "__main__":
    main()
