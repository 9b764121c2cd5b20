"""Training throughput per backbone and the projected wall time of the paper's full protocol.

Measures training images/s (forward + backward + Adam step, the same step as ``sts_utils.stages.fit.fit`` on CUDA:
scalograms already on the device, bf16 autocast or fp16 + GradScaler, channels_last) and evaluation
images/s, per backbone at the paper's image sizes (224 px, 299 for inception_v3) and batch sizes 32 and 64,
on synthetic scalograms of the store's shape (2 x 180 x 480, float16): a few warm-up steps, then timed
steps between ``torch.cuda.synchronize()`` calls.

Projection for ``allen`` (4,472 training cells): 50 trials x 3 folds, each fold training on
4472 x 2/3 x 0.8 cells for ``--mean-epochs`` epochs (default 40; the paper's fold epoch counts include the
patience epochs) with a validation pass over the 20 % each epoch and one scoring pass over the fold's
third, then the refit on all 4,472 cells for the same number of epochs. Batch sizes 32 and 64 are
equally likely in the paper's space, so a trial costs the mean of the two. ``k`` workers on ``k`` GPUs
divide the search (not the refit) by ``k``.

``--processes K`` measures ``K`` trials sharing one GPU (what the search's ``TRIALS_PER_GPU=K`` runs):
``K`` processes (``spawn``) each build their model and warm up, then time the same steps together (a
barrier starts them); the images/s printed are the sum of the ``K`` (the GPU's aggregate), and the
search is projected at that aggregate rate (``K`` trials at once, each at about 1/K of it). The refit
runs alone after the search; it is projected at the per-trial rate (aggregate / K), an upper bound.
``k`` in the columns is then the number of GPUs, each with ``K`` trials.

On a machine without CUDA it runs a tiny configuration (small images, batch 8, two steps) only to
check that the script works, and says so.

    python benchmarks/bench_gpu_training.py [--backbones resnet18 ...] [--mean-epochs 40] [--workers 1 4]
                                            [--processes 2] [--compile]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import time

import torch
from torch.nn import functional as F

from sts_utils.core.config import BACKBONES, DEFAULT_IMAGE_SIZE
from sts_utils.data.models import MIN_IMAGE_SIZE, build_model
from sts_utils.stages.fit import amp_dtype

SHAPE = (2, 180, 480)


def _throughput(backbone: str, image_size: int, batch_size: int, warmup: int, steps: int, device: torch.device,
                compile_model: bool | str | None = False, barrier=None) -> tuple[float, float]:
    """Training and evaluation images/s of one backbone and batch size.

    Parameters
    ----------
    backbone, image_size, batch_size
        The model and the size of its (synthetic) input batches.
    warmup, steps
        Untimed steps first, then timed steps.
    device
        Where to run; on CUDA the model is channels_last under autocast, as in ``sts_utils.stages.fit.fit``.
    compile_model
        ``torch.compile`` the model (CUDA only): ``True``/``"default"``, or a mode such as
        ``"reduce-overhead"`` (CUDA graphs: one launch per step instead of one per kernel) or
        ``"max-autotune"``; ``False``/``None``: eager.
    barrier
        A ``multiprocessing`` barrier shared with the other processes of ``--processes``: every timed
        phase (training, evaluation) starts only when all of them are warmed up, so they overlap.

    Returns
    -------
    tuple of float
        (training images/s, evaluation images/s) of this process.
    """
    torch.manual_seed(0)
    model, _ = build_model(backbone, pretrained="none", image_size=image_size)
    model = model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device)
    mode = "default" if compile_model is True else (compile_model or None)
    step_model = torch.compile(model, mode=mode) if mode and cuda else model
    # CUDA graphs reuse their output buffers: each new step must be declared, or a graph replay would
    # overwrite tensors the previous step's backward still needs
    mark_step = torch.compiler.cudagraph_mark_step_begin if mode == "reduce-overhead" and cuda else (lambda: None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    pool = torch.rand(4 * batch_size, *SHAPE, device=device).half()  # synthetic scalograms, on the device once
    labels = torch.randint(0, 4, (len(pool),), device=device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def start_together():
        # the other processes may still be compiling or warming up; timing before they run would
        # measure an idle GPU, not a shared one
        sync()
        if barrier is not None:
            barrier.wait()

    def train_step(i):
        idx = torch.arange(i % 4 * batch_size, (i % 4 + 1) * batch_size, device=device)
        opt.zero_grad(set_to_none=True)
        mark_step()
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(step_model(pool[idx].float()), labels[idx])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    model.train()
    for i in range(warmup):
        train_step(i)
    start_together()
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(i)
    sync()
    train_ips = steps * batch_size / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=cuda):
        for i in range(max(1, warmup // 2)):
            mark_step()
            step_model(pool[:batch_size].float())
        start_together()
        t0 = time.perf_counter()
        for i in range(steps):
            mark_step()
            step_model(pool[(i % 4) * batch_size:(i % 4 + 1) * batch_size].float())
        sync()
    eval_ips = steps * batch_size / (time.perf_counter() - t0)
    # free the device memory before the next case (None, not del: the step closures still name them)
    model = step_model = opt = pool = labels = None
    if cuda:
        torch.cuda.empty_cache()
    return train_ips, eval_ips


def _worker(rank: int, cases: list[tuple[str, int, int]], warmup: int, steps: int, device: str, compile_model: bool | str | None,
            threads: int, barrier, results) -> None:
    """One of the ``--processes`` processes: :func:`_throughput` of every case, in order, in step with the others.

    Puts ``(rank, backbone, batch_size, train_ips, eval_ips)`` per case on ``results``, or
    ``(rank, "error", message)`` and aborts ``barrier`` (so the others stop waiting) on failure.
    """
    try:
        torch.set_num_threads(threads)  # K processes on the CPU cores (tiny mode) without oversubscribing them
        for backbone, size, bs in cases:
            train_ips, eval_ips = _throughput(backbone, size, bs, warmup, steps, torch.device(device), compile_model,
                                              barrier)
            results.put((rank, backbone, bs, train_ips, eval_ips))
    except BaseException as exc:  # noqa: BLE001 - report anything (OOM, broken barrier) to the parent
        barrier.abort()
        results.put((rank, "error", f"{type(exc).__name__}: {exc}"))


def _shared_throughput(cases: list[tuple[str, int, int]], warmup: int, steps: int, device: torch.device,
                       compile_model: bool | str | None, processes: int, timeout_s: float = 1800) -> dict:
    """Aggregate images/s of ``processes`` processes running every case together on one device.

    Parameters
    ----------
    cases
        ``(backbone, image_size, batch_size)`` to measure, in order; all processes run the same case at
        the same time (a barrier before each timed phase).
    warmup, steps, device, compile_model
        As in :func:`_throughput`.
    processes
        Number of processes sharing ``device`` (the search's ``TRIALS_PER_GPU``).
    timeout_s
        Longest wait for the next result before giving up (a hung process must not hang the benchmark).

    Returns
    -------
    dict
        ``(backbone, batch_size) -> (train images/s, eval images/s)``, each the sum over the processes.
    """
    # spawn, not fork: CUDA cannot be used in a forked child of a process that has initialised it
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes, timeout=timeout_s)
    results = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // processes)
    procs = [ctx.Process(target=_worker, args=(r, cases, warmup, steps, str(device), compile_model, threads,
                                               barrier, results), daemon=True) for r in range(processes)]
    for p in procs:
        p.start()
    sums: dict = {}
    errors: list[str] = []
    pending, deadline = processes * len(cases), time.monotonic() + timeout_s
    try:
        while pending and not errors:
            try:
                msg = results.get(timeout=5)
            except queue.Empty:
                # a process killed outright (out of memory, a crash in CUDA) reports nothing: look for it
                dead = [f"process {r} exited with {p.exitcode}" for r, p in enumerate(procs) if p.exitcode]
                late = [f"no result within {timeout_s:g} s"] if time.monotonic() > deadline else []
                errors += dead + late
                continue
            if msg[1] == "error":
                errors.append(f"process {msg[0]}: {msg[2]}")  # the others then fail at the aborted barrier
                continue
            _, backbone, bs, train_ips, eval_ips = msg
            t, e, n = sums.get((backbone, bs), (0.0, 0.0, 0))
            sums[(backbone, bs)] = (t + train_ips, e + eval_ips, n + 1)
            if n + 1 == processes:
                _progress(backbone, bs, *sums[(backbone, bs)][:2])
            pending -= 1
            deadline = time.monotonic() + timeout_s
    finally:
        if errors:
            barrier.abort()  # release the processes still waiting for the failed one
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    if errors:
        raise RuntimeError("; ".join(errors))
    return {case: (t, e) for case, (t, e, _) in sums.items()}


def _progress(backbone: str, batch_size: int, train_ips: float, eval_ips: float) -> None:
    """One line per measured case as soon as it is known (a run cut short by a timeout still shows those)."""
    print(f"  {backbone} bs{batch_size}: train {train_ips:.1f} images/s, eval {eval_ips:.1f} images/s", flush=True)


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
    ap.add_argument("--compile", nargs="?", const="default", default=None,
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                    help="torch.compile the model (CUDA), optionally with a mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--processes", type=int, default=1,
                    help="K processes sharing the device at once (TRIALS_PER_GPU=K); images/s are their sum")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    if args.processes < 1:
        ap.error(f"--processes must be >= 1, got {args.processes}")
    n_proc = args.processes
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = device.type != "cuda"
    if tiny:
        print("No CUDA device: TINY CPU configuration (32-75 px images, batch 8, 2 steps); the numbers are NOT the "
              "paper's and the projection only shows the arithmetic.")
        batch_sizes, warmup, steps = [8], 1, 2
    else:
        batch_sizes, warmup, steps = args.batch_sizes, args.warmup, args.steps
        print(f"{torch.cuda.get_device_name(device)}; autocast {amp_dtype(device)}; compile {args.compile}")
    if n_proc > 1:
        print(f"{n_proc} trials sharing one {'GPU' if not tiny else 'device'} (TRIALS_PER_GPU={n_proc}): {n_proc} "
              f"processes time the same steps together; images/s are their sum, the search is projected at that rate, "
              f"the refit at 1/{n_proc} of it; column 'k GPUs x{n_proc}' = k GPUs with {n_proc} trials each.")
    n_gpus = torch.cuda.device_count() if not tiny else 0
    workers = args.workers or sorted({1, max(1, n_gpus)})
    rows, totals = [], {k: 0.0 for k in workers}
    sizes = {b: max(MIN_IMAGE_SIZE[b], 32 if b != "inception_v3" else 75) if tiny else DEFAULT_IMAGE_SIZE[b]
             for b in args.backbones}
    shared = None
    if n_proc > 1:
        # one set of long-lived processes for all cases: spawning (import torch, CUDA init) once, not per case
        shared = _shared_throughput([(b, sizes[b], bs) for b in args.backbones for bs in batch_sizes], warmup, steps,
                                    device, args.compile, n_proc)
    for backbone in args.backbones:
        size = sizes[backbone]
        per_bs = {}
        for bs in batch_sizes:
            if shared:
                per_bs[bs] = shared[(backbone, bs)]
            else:
                per_bs[bs] = _throughput(backbone, size, bs, warmup, steps, device, args.compile)
                _progress(backbone, bs, *per_bs[bs])
        # the paper's space draws batch 32 or 64 alike: a trial costs the mean time of the two; n_proc trials at
        # once share the aggregate rate (search), the refit runs alone at a trial's share of it (an upper bound)
        proj = [project(t, e, args.n_cells, args.n_trials, 3, args.mean_epochs) for t, e in per_bs.values()]
        search_s = sum(p["search_s"] for p in proj) / len(proj)
        refit_s = n_proc * sum(p["refit_s"] for p in proj) / len(proj)
        row = {"backbone": backbone, "image_size": size,
               **{f"train_ips_bs{bs}": round(t, 1) for bs, (t, e) in per_bs.items()},
               **{f"eval_ips_bs{bs}": round(e, 1) for bs, (t, e) in per_bs.items()},
               "processes": n_proc, "search_s_1_worker": search_s, "refit_s": refit_s,
               **{f"total_s_{k}_workers": search_s / k + refit_s for k in workers}}
        for k in workers:
            totals[k] += search_s / k + refit_s
        rows.append(row)
    header = ["backbone", "px"] + [f"train/s bs{bs}" for bs in batch_sizes] + [f"eval/s bs{bs}" for bs in batch_sizes] \
        + [f"{k} worker{'s' if k > 1 else ''}" if n_proc == 1 else f"{k} GPU{'s' if k > 1 else ''} x{n_proc}"
           for k in workers]
    print(f"\nProjected paper protocol on {args.n_cells} cells: {args.n_trials} trials x 3 folds x {args.mean_epochs:g} "
          f"epochs + refit ({'tiny CPU numbers' if tiny else device.type}"
          f"{f'; {n_proc} trials sharing one device, aggregate images/s' if n_proc > 1 else ''})")
    print(" | ".join(f"{h:>14}" for h in header))
    for r in rows:
        vals = [r["backbone"], r["image_size"]] + [r[f"train_ips_bs{bs}"] for bs in batch_sizes] \
            + [r[f"eval_ips_bs{bs}"] for bs in batch_sizes] + [_fmt_h(r[f"total_s_{k}_workers"]) for k in workers]
        print(" | ".join(f"{v:>14}" for v in vals))
    print(" | ".join(f"{v:>14}" for v in ["total", ""] + [""] * (2 * len(batch_sizes))
                     + [_fmt_h(totals[k]) for k in workers]))
    return {"device": str(device), "tiny": tiny, "rows": rows, "total_s": totals, "mean_epochs": args.mean_epochs,
            "processes": n_proc}


if __name__ == "__main__":
    main()
