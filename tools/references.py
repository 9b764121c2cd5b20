"""Reference tables of a tiny `make paper`: the guard that a change which moves a result is noticed.

    python tools/references.py check FIGURES_DIR    # compare FIGURES_DIR/demo/*.{csv,md} with the references
    python tools/references.py update               # run the tiny paper in a temporary folder, rewrite them

It also rewrites the reference history of a tiny seeded fit (``tests/references/tiny_fit/``).

The references (``tests/references/tiny_demo/``) are every table (``.csv``, ``.md``) that a tiny
``make paper`` (:data:`TINY_PARAMS`, demo dataset) writes to ``figures/demo/``, made on a clean
checkout with the locked environment (``requirements/lock.txt``). ``tests/test_integration.py`` runs
the same tiny paper and fails, naming the table, row and column, when a number moved. A change that
moves results on purpose (a new default, a fixed bug, a lock update) rewrites them with
``make update-references`` and commits them with the change.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from sts_utils.stages.fit import TrainConfig, fit
from sts_utils.stages.training import resolve_profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_models import easy_set  # noqa: E402  (the tests' easy images: one home)

REFERENCE_DIR = ROOT / "tests" / "references" / "tiny_demo"

#: The tiny paper: 3 cells per class, every page and backbone, minutes on 2 cores.
TINY_PARAMS = ["N_CELLS=3", "N_FI_CELLS=2", "EPOCHS=2", "N_TRIALS=1", "N_FOLDS=2", "TRIAL_EPOCHS=1", "IMAGE_SIZE=75",
               "N_ITER=2", "IG_STEPS=2", "N_BOOT=20", "N_RESAMPLES=200", "N_NEW_CELLS=2", "TEST_FRACTION=0.25"]

#: At most this many differing cells are listed per table.
MAX_REPORTED = 5

#: The tiny seeded fit's reference history (``tests/test_training_protocol.py`` fits it again and compares).
TINY_FIT_DIR = ROOT / "tests" / "references" / "tiny_fit"


def run_tiny_paper(folder: str | os.PathLike, *make_args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess:
    """``make paper`` (or ``make_args``) on the tiny demo with data, figures and build folders under ``folder``."""
    folder = Path(folder)
    dirs = [f"DATA_DIR={folder / 'data'}", f"FIGURES_DIR={folder / 'figures'}", f"BUILD_DIR={folder / 'build'}"]
    env = {**os.environ, "STS_OFFLINE": "1"}
    return subprocess.run(["make", *(make_args or ("paper",)), *dirs, *TINY_PARAMS], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=timeout_s)


#: tables left out of the references: page 10's come from real files outside the checkout (../shared/data/
#: rig_recordings, absent on some machines) and have their own tests (tests/test_rig_recordings.py)
UNREFERENCED_PREFIXES = ("rig_recordings",)


def table_files(folder: str | os.PathLike) -> list[str]:
    """Names of the tables (``.csv``, ``.md``) in ``folder`` that the references hold, sorted."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".csv", ".md")
                  and not p.name.startswith(UNREFERENCED_PREFIXES)) if folder.is_dir() else []


def _csv_differences(name: str, reference: str, current: str) -> list[str]:
    ref, cur = pd.read_csv(io.StringIO(reference), dtype=str), pd.read_csv(io.StringIO(current), dtype=str)
    if list(ref.columns) != list(cur.columns):
        return [f"{name}: columns changed from {list(ref.columns)} to {list(cur.columns)}"]
    if len(ref) != len(cur):
        return [f"{name}: {len(cur)} rows instead of {len(ref)}"]
    out = []
    key = ref.columns[0]
    for i in range(len(ref)):
        for col in ref.columns:
            a, b = ref.at[i, col], cur.at[i, col]
            if not (a == b or (pd.isna(a) and pd.isna(b))):
                out.append(f"{name}: row {i} ({key}={ref.at[i, key]}), column {col!r}: reference {a!r}, now {b!r}")
    if len(out) > MAX_REPORTED:
        out = out[:MAX_REPORTED] + [f"{name}: ... {len(out) - MAX_REPORTED} more differing cells"]
    return out or [f"{name}: same values, different text (formatting or line endings)"]


def _text_differences(name: str, reference: str, current: str) -> list[str]:
    ref, cur = reference.splitlines(), current.splitlines()
    out = [f"{name}: line {i + 1}: reference {a!r}, now {b!r}" for i, (a, b) in enumerate(zip(ref, cur)) if a != b]
    if len(ref) != len(cur):
        out.append(f"{name}: {len(cur)} lines instead of {len(ref)}")
    return out[:MAX_REPORTED] + ([f"{name}: ... {len(out) - MAX_REPORTED} more differing lines"]
                                 if len(out) > MAX_REPORTED else [])


def compare_tables(reference_dir: str | os.PathLike, figures_dir: str | os.PathLike) -> list[str]:
    """What differs between the reference tables and those of a run (empty: identical, byte for byte).

    Each message names the table and, for a CSV, the row (with its first column's value) and the column
    whose value moved, with both values.
    """
    reference_dir, figures_dir = Path(reference_dir), Path(figures_dir)
    ref_names, cur_names = set(table_files(reference_dir)), set(table_files(figures_dir))
    problems = [f"{n}: in the references, not written by this run" for n in sorted(ref_names - cur_names)]
    problems += [f"{n}: written by this run, not in the references" for n in sorted(cur_names - ref_names)]
    for name in sorted(ref_names & cur_names):
        reference = (reference_dir / name).read_text(encoding="utf-8")
        current = (figures_dir / name).read_text(encoding="utf-8")
        if reference != current:
            problems += (_csv_differences if name.endswith(".csv") else _text_differences)(name, reference, current)
    return problems


def update_references(figures_dir: str | os.PathLike, reference_dir: str | os.PathLike = REFERENCE_DIR) -> list[str]:
    """Replace the references by the tables of ``figures_dir``; return the names written."""
    figures_dir, reference_dir = Path(figures_dir), Path(reference_dir)
    names = table_files(figures_dir)
    if not names:
        raise SystemExit(f"no tables in {figures_dir}: did the tiny paper run?")
    staging = reference_dir.with_name(reference_dir.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in names:
        shutil.copyfile(figures_dir / name, staging / name)
    old = reference_dir.with_name(reference_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if reference_dir.exists():
        reference_dir.rename(old)
    staging.rename(reference_dir)
    shutil.rmtree(old, ignore_errors=True)
    return names


def tiny_fit() -> tuple[pd.DataFrame, int]:
    """The demo's CPU fit (``cpu_small``, ResNet18 from random weights) on ``tests.test_models.easy_set``, 4 epochs
    (single-threaded, as every model: :data:`sts_utils.data.models.TORCH_CPU_THREADS`).

    Returns its history (one row per epoch) and best epoch: what the committed reference holds.
    """
    run = resolve_profile("cpu_small", "demo", "resnet18", {"image_size": 32, "epochs": 4, "batch_size": 5,
                                                            "patience": 2, "decay_period": 1, "dropout": 0.2},
                          default_seed=3)
    cfg = TrainConfig.from_run(run, "resnet18", pretrained="none")
    x, y = easy_set(4)
    _, history, info = fit(x, y, x[::2], y[::2], cfg, progress=False)
    return history, int(info["best_epoch"])


def update_tiny_fit(reference_dir: str | os.PathLike = TINY_FIT_DIR) -> Path:
    """Rewrite the tiny fit's reference (``history.csv`` with the best epoch as a column)."""
    history, best = tiny_fit()
    reference_dir = Path(reference_dir)
    reference_dir.mkdir(parents=True, exist_ok=True)
    path = reference_dir / "history.csv"
    history.assign(best_epoch=best).to_csv(path, index=False, float_format="%.9g")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="compare a run's tables (FIGURES_DIR/demo) with the references")
    check.add_argument("figures_dir")
    update = sub.add_parser("update", help="run the tiny paper in a temporary folder and rewrite the references")
    update.add_argument("--keep", default=None, help="run in this folder instead of a temporary one, and keep it")
    args = ap.parse_args(argv)
    if args.command == "check":
        problems = compare_tables(REFERENCE_DIR, Path(args.figures_dir) / "demo")
        print("\n".join(problems) if problems else f"tables identical to {REFERENCE_DIR.relative_to(ROOT)}")
        return 1 if problems else 0
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sts-references-"))
    try:
        r = run_tiny_paper(folder)
        if r.returncode != 0:
            print(r.stdout[-3000:] + r.stderr[-3000:], file=sys.stderr)
            return r.returncode
        names = update_references(folder / "figures" / "demo")
        print(f"{len(names)} reference tables written to {REFERENCE_DIR.relative_to(ROOT)}")
        print(f"tiny fit's history written to {update_tiny_fit().relative_to(ROOT)}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
