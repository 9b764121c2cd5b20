"""Training throughput per backbone and the projected wall time of the paper's full protocol.

Measures training images/s (forward + backward + Adam step, the same step as ``training.fit`` on CUDA:
scalograms already on the device, bf16 autocast or fp16 + GradScaler, channels_last) and evaluation
images/s, per backbone at the paper's image sizes (224 px, 299 for inception_v3) and batch sizes 32 and 64,
on synthetic scalograms of the store's shape (2 x 180 x 480, float16): a few warm-up steps, then timed
steps between ``torch.cuda.synchronize()`` calls.

Projection for ``allen`` (4,472 training cells): 50 trials x 3 folds, each fold training on
4472 x 2/3 x 0.8 cells for ``--mean-epochs`` epochs (default 40; the paper's fold epoch counts include the
patience epochs) with a validation pass over the 20 % each epoch and one scoring pass over the fold's
third, then the refit on all 4,472 cells for the same number of epochs. Batch sizes 32 and 64 are
equally likely in the paper's space, so a trial costs the mean of the two. ``k`` workers on ``k`` GPUs
divide the search (not the refit) by ``k``; workers sharing one GPU (``TRIALS_PER_GPU``) are not
projected here (measure them with the real search).

On a machine without CUDA it runs a tiny configuration (small images, batch 8, two steps) only to
check that the script works, and says so.

    python benchmarks/bench_gpu_training.py [--backbones resnet18 ...] [--mean-epochs 40] [--workers 1 4]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from sts_utils.models import BACKBONES, DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE, build_model
from sts_utils.training import amp_dtype

SHAPE = (2, 180, 480)


def _throughput(backbone: str, image_size: int, batch_size: int, warmup: int, steps: int, device: torch.device,
                compile_model: bool = False) -> tuple[float, float]:
    """(training images/s, evaluation images/s) of one backbone and batch size."""
    torch.manual_seed(0)
    model, _ = build_model(backbone, pretrained="none", image_size=image_size)
    model = model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device)
    step_model = torch.compile(model) if compile_model and cuda else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    pool = torch.rand(4 * batch_size, *SHAPE, device=device).half()  # synthetic scalograms, on the device once
    labels = torch.randint(0, 4, (len(pool),), device=device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def train_step(i):
        idx = torch.arange(i % 4 * batch_size, (i % 4 + 1) * batch_size, device=device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(step_model(pool[idx].float()), labels[idx])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    model.train()
    for i in range(warmup):
        train_step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(i)
    sync()
    train_ips = steps * batch_size / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=cuda):
        for i in range(max(1, warmup // 2)):
            step_model(pool[:batch_size].float())
        sync()
        t0 = time.perf_counter()
        for i in range(steps):
            step_model(pool[(i % 4) * batch_size:(i % 4 + 1) * batch_size].float())
        sync()
    eval_ips = steps * batch_size / (time.perf_counter() - t0)
    del model, opt, pool
    if cuda:
        torch.cuda.empty_cache()
    return train_ips, eval_ips


def project(train_ips: float, eval_ips: float, n_cells: int = 4472, n_trials: int = 50, n_folds: int = 3,
            mean_epochs: float = 40, inner_val: float = 0.2) -> dict:
    """Seconds of the paper's protocol for one backbone at the given throughputs (one worker)."""
    fold_train = n_cells * (n_folds - 1) / n_folds
    per_epoch = fold_train * (1 - inner_val) / train_ips + fold_train * inner_val / eval_ips
    fold = mean_epochs * per_epoch + (n_cells / n_folds) / eval_ips
    search_s = n_trials * n_folds * fold
    refit_s = round(mean_epochs) * n_cells / train_ips
    return {"search_s": search_s, "refit_s": refit_s}


def _fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="On CPU a tiny configuration runs, only to check the script.")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn autotuning, compile)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--mean-epochs", type=float, default=40, help="expected epochs per fold (and of the refit)")
    ap.add_argument("--n-cells", type=int, default=4472, help="training cells (allen: 4,472)")
    ap.add_argument("--n-trials", type=int, default=50)
    ap.add_argument("--workers", nargs="+", type=int, default=None, help="worker counts to project (default: 1 and #GPUs)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = device.type != "cuda"
    if tiny:
        print("No CUDA device: TINY CPU configuration (32-75 px images, batch 8, 2 steps); the numbers are NOT the "
              "paper's and the projection only shows the arithmetic.")
        batch_sizes, warmup, steps = [8], 1, 2
    else:
        batch_sizes, warmup, steps = args.batch_sizes, args.warmup, args.steps
        print(f"{torch.cuda.get_device_name(device)}; autocast {amp_dtype(device)}; compile {args.compile}")
    n_gpus = torch.cuda.device_count() if not tiny else 0
    workers = args.workers or sorted({1, max(1, n_gpus)})
    rows, totals = [], {k: 0.0 for k in workers}
    for backbone in args.backbones:
        size = max(MIN_IMAGE_SIZE[backbone], 32 if backbone != "inception_v3" else 75) if tiny else DEFAULT_IMAGE_SIZE[backbone]
        per_bs = {}
        for bs in batch_sizes:
            per_bs[bs] = _throughput(backbone, size, bs, warmup, steps, device, args.compile)
        # the paper's space draws batch 32 or 64 alike: a trial costs the mean time of the two
        proj = [project(t, e, args.n_cells, args.n_trials, 3, args.mean_epochs) for t, e in per_bs.values()]
        search_s = sum(p["search_s"] for p in proj) / len(proj)
        refit_s = sum(p["refit_s"] for p in proj) / len(proj)
        row = {"backbone": backbone, "image_size": size,
               **{f"train_ips_bs{bs}": round(t, 1) for bs, (t, e) in per_bs.items()},
               **{f"eval_ips_bs{bs}": round(e, 1) for bs, (t, e) in per_bs.items()},
               "search_s_1_worker": search_s, "refit_s": refit_s,
               **{f"total_s_{k}_workers": search_s / k + refit_s for k in workers}}
        for k in workers:
            totals[k] += search_s / k + refit_s
        rows.append(row)
    header = ["backbone", "px"] + [f"train/s bs{bs}" for bs in batch_sizes] + [f"eval/s bs{bs}" for bs in batch_sizes] \
        + [f"{k} worker{'s' if k > 1 else ''}" for k in workers]
    print(f"\nProjected paper protocol on {args.n_cells} cells: {args.n_trials} trials x 3 folds x {args.mean_epochs:g} "
          f"epochs + refit ({'tiny CPU numbers' if tiny else device.type})")
    print(" | ".join(f"{h:>14}" for h in header))
    for r in rows:
        vals = [r["backbone"], r["image_size"]] + [r[f"train_ips_bs{bs}"] for bs in batch_sizes] \
            + [r[f"eval_ips_bs{bs}"] for bs in batch_sizes] + [_fmt_h(r[f"total_s_{k}_workers"]) for k in workers]
        print(" | ".join(f"{v:>14}" for v in vals))
    print(" | ".join(f"{v:>14}" for v in ["total", ""] + [""] * (2 * len(batch_sizes))
                     + [_fmt_h(totals[k]) for k in workers]))
    return {"device": str(device), "tiny": tiny, "rows": rows, "total_s": totals, "mean_epochs": args.mean_epochs}


if __name__ == "__main__":
    main()
