"""README's result tables, generated from ``figures/<dataset>/results_table.csv`` and checked against it.

Presentation layer. README holds each dataset's table between the markers
``<!-- results:<dataset> -->`` and ``<!-- /results:<dataset> -->``; ``make readme`` rewrites those
blocks from the files, and ``python -m sts_utils.pages.report --check`` (run by the tests) fails when a
block and its file disagree, so no number in README is typed by hand.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd

from sts_utils.core.config import CLASSES, DATASETS, figures_dir, project_root
from sts_utils.core.io import write_text_atomic

MODEL_NAMES = {"resnet18": "ResNet18", "inception_v3": "InceptionV3", "densenet121": "DenseNet121",
               "mobilenet_v2": "MobileNetV2", "lightgbm": "LightGBM"}
BLOCK = re.compile(r"(<!-- results:(?P<dataset>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=dataset) -->)", re.S)


def _model_label(row: pd.Series) -> str:
    name = MODEL_NAMES.get(row["model"], row["model"])
    if str(row.get("weights", "")) in ("random", "imagenet"):
        size = row["image_size"]  # read back as float when the baseline row's "n/a" became NaN
        return f"{name} ({int(float(size))} px, {row['weights']} init)"
    note = str(row.get("note", "") or "")
    return f"{name}, {note.split(' (')[0].replace('LightGBM on ', '')}" if note else name


def results_markdown(table: pd.DataFrame) -> str:
    """README's form of a results table: model, balanced accuracy with CI (and mean ± sd over repeats), recalls."""
    repeats = int(table["n_repeats"].max()) if "n_repeats" in table else 1
    scored_on = str(table["scored_on"].iloc[0]) if "scored_on" in table else ""
    folds = "folds pooled" in scored_on
    head = "| model | balanced acc. " + (f"({repeats} folds pooled, 95 % CI)" if folds else "(95 % CI)") + " |" \
        + (f" mean ± sd over {repeats} {'folds' if folds else 'splits'} |" if repeats > 1 else "") \
        + " " + " | ".join(CLASSES) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in table.iterrows():
        cells = [_model_label(r), f"{r['balanced_accuracy']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f})"]
        if repeats > 1:
            cells.append(f"{r['bacc_mean_over_repeats']:.3f} ± {r['bacc_sd_over_repeats']:.3f}")
        cells += [f"{r[f'recall_{c}']:.2f}" for c in CLASSES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def expected_blocks(readme_text: str, figures_root: str | os.PathLike | None = None) -> dict[str, str]:
    """For each results block README has, the table its dataset's ``results_table.csv`` gives."""
    out = {}
    for m in BLOCK.finditer(readme_text):
        dataset = m.group("dataset")
        if dataset not in DATASETS:
            raise ValueError(f"README block for unknown dataset {dataset!r}")
        path = figures_dir(dataset, figures_root) / "results_table.csv"
        out[dataset] = results_markdown(pd.read_csv(path)) if path.exists() else f"(no {path} yet: run make paper DATASET={dataset})\n"
    return out


def mismatches(readme_text: str, figures_root: str | os.PathLike | None = None) -> list[str]:
    """Datasets whose README block differs from what their results file gives (empty when all agree)."""
    want = expected_blocks(readme_text, figures_root)
    return [m.group("dataset") for m in BLOCK.finditer(readme_text) if m.group("body") != want[m.group("dataset")]]


def update(readme: str | os.PathLike, figures_root: str | os.PathLike | None = None) -> list[str]:
    """Rewrite README's results blocks from the files; return the datasets whose block changed."""
    readme = Path(readme)
    text = readme.read_text()
    want = expected_blocks(text, figures_root)
    changed = mismatches(text, figures_root)
    new = BLOCK.sub(lambda m: m.group(1) + want[m.group("dataset")] + m.group(4), text)
    if new != text:
        write_text_atomic(readme, new)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", default=str(project_root() / "README.md"))
    ap.add_argument("--figures-dir", default=None)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 naming the blocks that disagree")
    args = ap.parse_args(argv)
    if args.check:
        bad = mismatches(Path(args.readme).read_text(), args.figures_dir)
        if bad:
            print(f"{args.readme}: the results of {', '.join(bad)} differ from figures/<dataset>/results_table.csv; "
                  "run `make readme`", file=sys.stderr)
            return 1
        return 0
    changed = update(args.readme, args.figures_dir)
    print(f"README results blocks rewritten: {', '.join(changed) or 'none changed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
