"""Paths, seeding and logging conventions shared by every stage.

The data folder follows MNE's dataset-fetcher convention: an explicit argument wins, then the
``STS_DATA_DIR`` environment variable, then ``data/`` in the current working directory.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np

#: The four classes, in the order used for every model output and table.
CLASSES: tuple[str, ...] = ("Pvalb", "Sst", "Vip/Lamp5", "Excitatory")
#: Cells with this label are kept in ``cells.csv`` but never trained or tested on.
UNSURE = "Unsure"
DATASETS: tuple[str, ...] = ("demo", "teeter2018", "patchseq", "celltypes", "allen")

logger = logging.getLogger("sts_utils")


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the root data folder (argument, else ``$STS_DATA_DIR``, else ``./data``)."""
    if data_dir in (None, ""):
        data_dir = os.environ.get("STS_DATA_DIR") or "data"
    return Path(data_dir).expanduser()


def dataset_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of one dataset's artifacts: ``<data_dir>/<dataset>/``."""
    check_dataset(dataset)
    return get_data_dir(data_dir) / dataset


def raw_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Download cache of a dataset, mirroring the origin's relative paths."""
    return dataset_dir(dataset, data_dir) / "raw"


def figures_dir(dataset: str, figures_root: str | os.PathLike | None = None) -> Path:
    """Folder for a dataset's figures and tables (``figures/<dataset>/``), created on demand."""
    root = Path(figures_root) if figures_root not in (None, "") else Path(os.environ.get("STS_FIGURES_DIR", "figures"))
    out = root / dataset
    out.mkdir(parents=True, exist_ok=True)
    return out


def offline() -> bool:
    """True when ``STS_OFFLINE`` is set: nothing may be downloaded (tests, CI, air-gapped machines)."""
    return os.environ.get("STS_OFFLINE", "").lower() in ("1", "true", "yes")


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return dataset


def simulated_tag(dataset: str) -> str:
    """Label put in every title and caption of results computed on the simulated cohort."""
    return " [SIMULATED demo cohort]" if dataset == "demo" else ""


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (if imported) torch; return a fresh NumPy generator for the stage."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    try:
        import torch

        torch.manual_seed(int(seed))
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep the helper usable
        pass
    return np.random.default_rng(int(seed))


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Send ``sts_utils`` log records to stderr once (notebooks call this in their first cell)."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
