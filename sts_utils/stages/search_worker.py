"""One worker of a shared hyperparameter search: ``python -m sts_utils.stages.search_worker``.

Started by the launcher, :mod:`sts_utils.stages.search` (``make search``), one process per worker: it loads the training
split of the scalogram store, joins the study named on its command line and runs trials of
:func:`sts_utils.stages.training.search_hyperparameters` until the study has its ``n_trials`` complete ones.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from sts_utils.data.store import ScalogramStore
from sts_utils.stages.fit import TrainConfig, as_tensor, encode_labels
from sts_utils.stages.splits import load_split
from sts_utils.stages.training import search_hyperparameters


def worker_main(argv: list[str] | None = None) -> int:
    """One search worker (started by ``python -m sts_utils.stages.search``): joins the study and runs trials."""
    ap = argparse.ArgumentParser(prog="python -m sts_utils.stages.search_worker",
                                 description="One worker of a shared hyperparameter search (started by sts_utils.stages.search).")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study-name", required=True)
    ap.add_argument("--settings", required=True, help="the resolved run settings as JSON")
    ap.add_argument("--rank", type=int, default=0)
    args = ap.parse_args(argv)
    run = json.loads(args.settings)
    base = TrainConfig.from_run(run, args.backbone)
    store = ScalogramStore.load(args.dataset, args.data_dir)
    split = load_split(args.dataset, args.data_dir, args.repeat)
    train = split[split["split"] == "train"].merge(store.index[["specimen_id", "row"]], on="specimen_id")
    x = as_tensor(store.images[np.sort(train["row"].to_numpy())])
    y = encode_labels(train.sort_values("row")["label"])
    search_hyperparameters(x, y, base, int(run["n_trials"]), int(run["n_folds"]), run.get("trial_epochs"),
                           progress=False, settings=run, storage=args.storage, study_name=args.study_name, rank=args.rank)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
