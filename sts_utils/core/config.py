"""Paths, classes, seeds, logging and progress conventions shared by every stage.

Paths resolve from the project root wherever a kernel starts (JupyterLab starts it in
``notebooks/``): an explicit argument wins, then ``STS_DATA_DIR`` / ``STS_FIGURES_DIR``, then the
project's own ``data/`` and ``figures/`` (as MNE's dataset fetchers resolve their folder). The
project root is the checkout this package is installed from (editable install), else the current
working directory.
"""
from __future__ import annotations

import logging
import os
import random
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from sts_utils.core.errors import MissingArtifactError

#: The four classes, in the order used for every model output and table.
CLASSES: tuple[str, ...] = ("Pvalb", "Sst", "Vip/Lamp5", "Excitatory")
#: Each class's colour in every figure (:mod:`sts_utils.pages.plots`, a new cell's report of
#: :mod:`sts_utils.stages.predict`).
CLASS_COLORS = {"Pvalb": "#d62728", "Sst": "#ff7f0e", "Vip/Lamp5": "#9467bd", "Excitatory": "#1f77b4"}
#: Cells with this label are kept in ``cells.csv`` but never trained or tested on.
UNSURE = "Unsure"
DATASETS: tuple[str, ...] = ("demo", "teeter2018", "patchseq", "celltypes", "allen")
#: a folder dataset is registered by this file in its data folder, ``<data_dir>/<name>/dataset.yaml``
#: (read by :func:`sts_utils.data.registry.read_folder_dataset`, acquired by :mod:`sts_utils.stages.acquisition`)
DATASET_FILE = "dataset.yaml"
#: a folder dataset's name: a plain folder name (no path, no space: make uses it in file names)
FOLDER_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: artifact (file or folder name under data/<dataset>/ or figures/<dataset>/) -> notebook and make target
PRODUCED_BY: dict[str, tuple[str, str]] = {
    "cells.csv": ("01_data_acquisition", "data"), "sweeps.csv": ("01_data_acquisition", "data"),
    "spike_trains.parquet": ("01_data_acquisition", "data"), "scalograms": ("02_scalograms", "scalograms"),
    "index.csv": ("02_scalograms", "scalograms"), "splits.csv": ("03_splitting", "splits"),
    "models": ("04_finetune", "train"), "model.pt": ("04_finetune", "train"), "config.json": ("04_finetune", "train"),
    "baseline": ("05_baseline", "baseline"), "predictions.csv": ("06_testing", "evaluate"),
    "results_table.csv": ("06_testing", "evaluate"), "deletion_table.csv": ("07_saliency", "saliency"),
    "bundles": ("09_new_cells", "export"), "rig_recordings_summary.csv": ("10_rig_recordings", "rig-recordings"),
}

#: notebook -> the files its run leaves for later stages and make: glob patterns under data/<dataset>/, or under
#: figures/<dataset>/ when they start with ``figures:`` (``{BACKBONE}``: the page's parameter). A successful run
#: records their sizes and times; make reruns the stage when one of them is deleted or changed, although only
#: one file per stage is its make target. Files that other commands also write (a search's study journal,
#: exported bundles) are left out, so that those never rerun a stage.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "01_data_acquisition": ("cells.csv", "sweeps.csv", "spike_trains.parquet"),
    "02_scalograms": ("scalograms/*",),
    "03_splitting": ("splits.csv",),
    "04_finetune": tuple(f"models/{{BACKBONE}}/{name}" for name in ("model.pt", "config.json", "history.csv",
                                                                  "trials.csv")),
    "05_baseline": ("features.csv", "features_qc.csv", "baseline/*"),
    "06_testing": ("predictions.csv", "figures:results_table.csv"),
    "07_saliency": ("figures:deletion_table.csv",),
    "08_comparison": ("figures:comparison_table.csv",),
    "09_new_cells": ("figures:new_cells_summary.csv",),
    "10_rig_recordings": ("figures:rig_recordings_summary.csv",),
}
#: the prefix of a :data:`STAGE_OUTPUTS` pattern in the figures folder
FIGURES_PREFIX = "figures:"

logger = logging.getLogger("sts_utils")


#: The ImageNet backbones the compendium fine-tunes, and the input size each was trained on in ImageNet (px):
#: the paper's image sizes. Here, not beside the models, so that stages which must start without torch
#: (the search launcher, the run profiles) share them.
BACKBONES: tuple[str, ...] = ("resnet18", "inception_v3", "densenet121", "mobilenet_v2")
DEFAULT_IMAGE_SIZE = {"resnet18": 224, "inception_v3": 299, "densenet121": 224, "mobilenet_v2": 224}


#: Memory one page running beside another may need (GiB): an InceptionV3 page at the demo's sizes peaks near 1 GiB
#: of its own, and two such pages in Binder's 2 GB were killed for memory (measured in a 2 GB cgroup).
GIB_PER_PARALLEL_PAGE = 2.0


def _cgroup_limit(v1_controller: str, v1_file: str, v2_file: str) -> str | None:
    """The content of this process's own cgroup limit file (cgroup v2, or v1's ``v1_controller``); None without one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # the v2 (unified) hierarchy
            candidate = Path("/sys/fs/cgroup" + path) / v2_file
        elif v1_controller in controllers.split(","):
            candidate = Path(f"/sys/fs/cgroup/{v1_controller}{path}") / v1_file
        else:
            continue
        if candidate.is_file():
            return candidate.read_text().strip()
    return None


def default_page_jobs(max_jobs: int = 2) -> int:
    """How many pages ``make paper`` runs at once when ``JOBS`` is not given: at most ``max_jobs``, no more than the
    CPUs this process may use (affinity and cgroup quota), and :data:`GIB_PER_PARALLEL_PAGE` of memory (the
    smaller of the machine's and the cgroup's) per page; at least 1 (Binder: 2 GB, so 1)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_limit("cpu", "cpu.cfs_quota_us", "cpu.max")  # v2: "max 100000" or "200000 100000"
    if quota and " " not in quota:  # v1: the period is a file of its own; -1 is no quota
        quota = f"{quota} {_cgroup_limit('cpu', 'cpu.cfs_period_us', 'cpu.max')}"
    try:
        q, period = quota.split() if quota else ("max", "1")
        if q not in ("max", "-1"):
            cpus = min(cpus, int(int(q) / int(period)))
    except ValueError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit("memory", "memory.limit_in_bytes", "memory.max")
    if limit and limit.isdigit():
        memory = min(memory, int(limit))
    return max(1, min(max_jobs, cpus, int(memory / (GIB_PER_PARALLEL_PAGE * 2**30))))


def check_choice(value: Any, choices: Iterable[Any], what: str) -> Any:
    """``value`` when it is one of ``choices``; else a one-line ``ValueError`` naming ``what`` and the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(str, choices))}")
    return value


def check_backbone(backbone: str) -> str:
    """``backbone`` when it is one of :data:`BACKBONES`, else a one-line error listing them."""
    return check_choice(backbone, BACKBONES, "backbone")


def project_root() -> Path:
    """The checkout this package lives in (it has ``pyproject.toml`` and ``notebooks/``), else the cwd."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file() and (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def _resolve(value: str | os.PathLike | None, env: str, default: str) -> Path:
    if value in (None, ""):
        value = os.environ.get(env) or ""
    if value in (None, ""):
        return project_root() / default
    path = Path(value).expanduser()
    # a relative path means relative to the project root, not to wherever the kernel started
    return path if path.is_absolute() else project_root() / path


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The root data folder: argument, else ``$STS_DATA_DIR``, else the project's ``data/``."""
    return _resolve(data_dir, "STS_DATA_DIR", "data")


#: folder datasets already found registered in this process; figures_dir and the like are called without the
#: data folder, which the page (or make's STS_DATA_DIR) resolved when it first checked the name
_REGISTERED: set[str] = set()


def registration_file(dataset: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """``<data_dir>/<dataset>/dataset.yaml`` when ``dataset`` is a registered folder dataset, else None."""
    if dataset in DATASETS or not isinstance(dataset, str) or not FOLDER_DATASET_NAME.fullmatch(dataset):
        return None
    path = get_data_dir(data_dir) / dataset / DATASET_FILE
    return path if path.is_file() else None


def is_known_dataset(dataset: str, data_dir: str | os.PathLike | None = None) -> bool:
    """True for a built-in dataset (:data:`DATASETS`) or a registered folder dataset (:func:`registration_file`)."""
    return dataset in DATASETS or dataset in _REGISTERED or registration_file(dataset, data_dir) is not None


def check_dataset(dataset: str, data_dir: str | os.PathLike | None = None) -> str:
    """The dataset name, or a one-line error listing the known ones and how to register a folder."""
    if dataset in DATASETS or dataset in _REGISTERED:
        return dataset
    if registration_file(dataset, data_dir) is not None:
        _REGISTERED.add(dataset)
        return dataset
    raise ValueError(f"unknown DATASET {dataset!r}; expected one of {', '.join(DATASETS)}, or a folder of your own "
                     f"recordings registered by {get_data_dir(data_dir) / str(dataset) / DATASET_FILE} "
                     "(README: 'Your own recordings as a dataset')")


def dataset_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of one dataset's artifacts: ``<data_dir>/<dataset>/``."""
    return get_data_dir(data_dir) / check_dataset(dataset, data_dir)


def raw_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Download cache of a dataset, mirroring the origin's relative paths."""
    return dataset_dir(dataset, data_dir) / "raw"


def figures_dir(dataset: str, figures_root: str | os.PathLike | None = None, create: bool = True) -> Path:
    """Folder for a dataset's figures and tables (``figures/<dataset>/``), created on demand (``create``)."""
    out = _resolve(figures_root, "STS_FIGURES_DIR", "figures") / check_dataset(dataset)
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def require(path: str | os.PathLike) -> Path:
    """``path`` if it exists; otherwise a one-line error naming the notebook and make target that make it."""
    path = Path(path)
    if path.exists():
        return path
    for part in (path.name, path.parent.name, path.parent.parent.name):
        if part in PRODUCED_BY:
            notebook, target = PRODUCED_BY[part]
            dataset = next((p for p in path.parts if p in DATASETS or p in _REGISTERED), "<dataset>")
            raise MissingArtifactError(f"{path} does not exist yet: run notebook {notebook} first "
                                       f"(make {target} DATASET={dataset})")
    raise MissingArtifactError(f"{path} does not exist")


def offline() -> bool:
    """True when ``STS_OFFLINE`` is set: nothing may be downloaded (tests, CI, air-gapped machines)."""
    return os.environ.get("STS_OFFLINE", "").lower() in ("1", "true", "yes")


def simulated_tag(dataset: str) -> str:
    """Label put in every title and caption of results computed on the simulated cohort."""
    return " [SIMULATED demo cohort]" if dataset == "demo" else ""


def check_whole_number(name: str, value, minimum: int) -> int:
    """``value`` as an int when it is a whole number (not a bool, str or float) >= ``minimum``.

    Raises a one-line ``ValueError`` naming the parameter ``name`` (its notebook spelling), its value
    and what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and (if loaded) torch; return a fresh NumPy generator for the stage."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"SEED must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    torch = sys.modules.get("torch")  # seeded only where a stage uses it; importing it here would load it everywhere
    if torch is not None:
        torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill or JupyterLab)."""
    return "ipykernel" in sys.modules and hasattr(sys.modules.get("IPython"), "get_ipython") \
        and sys.modules["IPython"].get_ipython() is not None


def progress_stream() -> IO[str]:
    """Where progress bars go: the terminal, never an executed notebook's output.

    In a kernel, ``sys.__stderr__`` is the kernel process's own stderr, which papermill (``make``)
    and ``jupyter lab`` inherit from the terminal they were started in.
    """
    return sys.__stderr__ if in_notebook() else sys.stderr


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Send ``sts_utils`` log records to the terminal once (notebooks call this in their first cell)."""
    if not logger.handlers:
        handler = logging.StreamHandler(progress_stream())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger
