"""`make paper` end to end on a tiny demo configuration: its tables against the committed references,
the up-to-date skip, and reruns that rerun.

The tiny run is made once per session (in ``$STS_TINY_RUN_DIR`` when set, so ``.ci/run`` can check its
web book in Chromium afterwards; else in a temporary folder).
"""
import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tests.conftest import LATER_PAGES, ROOT, planned_pages

sys.path.insert(0, str(ROOT / "tools"))
import references  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.integration

LATER = LATER_PAGES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = Path(os.environ["STS_TINY_RUN_DIR"]) if os.environ.get("STS_TINY_RUN_DIR") else tmp_path_factory.mktemp("tiny")
    r = references.run_tiny_paper(folder)
    (folder / "paper.log").write_text(r.stdout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return folder


def test_tiny_paper_reproduces_the_reference_tables(tiny):
    """Every table of the tiny run equals the committed one (made by another clean run with the same lock)."""
    problems = references.compare_tables(references.REFERENCE_DIR, tiny / "figures" / "demo")
    assert not problems, ("the tiny paper's tables moved (if on purpose: `make update-references` and commit):\n"
                          + "\n".join(problems))


def test_tiny_paper_outputs_and_timings(tiny):
    figs = tiny / "figures" / "demo"
    table = pd.read_csv(figs / "results_table.csv")
    assert set(table.model) == {"resnet18", "inception_v3", "densenet121", "mobilenet_v2", "lightgbm"}
    for f in ["confusion_panel.png", "saliency_grid.png", "saliency_deletion.png", "deletion_table.csv",
              "baseline_confusion.png", "baseline_shap_Pvalb.png", "audit.png"]:
        assert (figs / f).exists(), f
    notebooks = ["01_data_acquisition", "02_scalograms", "03_splitting", "04_finetune_resnet18", "05_baseline",
                 "06_testing", "07_saliency", "08_comparison", "09_new_cells", "10_rig_recordings"]
    for nb in notebooks:
        assert (tiny / "build" / "demo" / f"{nb}.ipynb").exists(), nb
    timings = pd.read_csv(tiny / "build" / "demo" / "timings.csv")
    assert set(notebooks) <= set(timings["page"]) and (timings["seconds"] > 0).all()
    # page 08's learning curve ends on notebook 04's model itself: its last CNN point is that model's score
    curve = pd.read_csv(figs / "learning_curve.csv")
    cnn_end = curve[(curve.model != "lightgbm_same_input") & (curve.fraction == 1.0)].iloc[0]
    row = table.set_index("model").loc[cnn_end.model]
    assert abs(cnn_end.balanced_accuracy - row.balanced_accuracy) < 1e-9


def test_every_page_shows_its_figures_without_progress_bars_or_paths(tiny):
    """The executed pages hold every figure the run wrote, and no progress bar or object repr leaks onto them."""
    build, figs = tiny / "build" / "demo", tiny / "figures" / "demo"
    order = [line.split()[1] for line in (tiny / "paper.log").read_text().splitlines() if line.startswith("executed ")]
    assert len(order) == 13, order
    n_images = 0
    for page in sorted(build.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(page, as_version=4)
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{page.name} shows no figure"
        n_images += len(images)
        text = json.dumps([c.get("outputs", []) for c in nb.cells])
        assert "PosixPath" not in text, page.name
        assert text.count("\\r") < 5 and "it/s" not in text, f"{page.name}: progress bars in the executed notebook"
    # a page may show a figure more than once, never less
    assert n_images >= len(list(figs.glob("*.png")))
    assert "[SIMULATED demo cohort]" in (figs / "results_table.md").read_text()


def test_pages_run_side_by_side_each_after_its_inputs(tiny):
    """`make paper` runs JOBS=2 pages at once; every page starts after the pages whose artifacts it reads."""
    t = pd.read_csv(tiny / "build" / "demo" / "timings.csv")
    start = dict(zip(t.page, pd.to_datetime(t.started_utc)))
    end = dict(zip(t.page, pd.to_datetime(t.finished_utc)))
    trainings = [p for p in t.page if p.startswith("04_finetune_")]
    needs = {"02_scalograms": ["01_data_acquisition"], "03_splitting": ["02_scalograms"], "05_baseline": ["03_splitting"],
             **{p: ["03_splitting"] for p in trainings}, "06_testing": [*trainings, "05_baseline"],
             "07_saliency": ["06_testing"], "08_comparison": ["06_testing"], "09_new_cells": ["06_testing"],
             "10_rig_recordings": ["09_new_cells"]}
    second = pd.Timedelta(seconds=1)  # the file's times are whole seconds
    for page, inputs in needs.items():
        for before in inputs:
            assert start[page] >= end[before] - second, f"{page} started before {before} finished"
    overlaps = [(a, b) for a in t.page for b in t.page if a < b and start[b] + second < end[a] and start[a] + second < end[b]]
    assert overlaps, "no two pages ran at once"


def test_up_to_date_and_reruns_that_rerun(tiny):
    def make_n(*args):
        return planned_pages(references.run_tiny_paper(tiny, "-n", *args).stdout)

    # nothing to redo
    assert make_n("paper") == []
    # a changed parameter reruns its stage and everything after it; a dry run leaves no trace
    assert make_n("scalograms", "N_SCALES=128") == ["notebooks/02_scalograms.py"]
    assert make_n("paper", "N_SCALES=128") == ["notebooks/02_scalograms.py", *LATER]
    assert make_n("paper") == []
    # a changed training parameter reruns the training of every backbone and what follows, not the data stages
    assert make_n("paper", "PATIENCE=4") == LATER[1:5] + LATER[6:]
    # deleting the baseline predictions redoes the baseline and what depends on it, nothing else
    predictions = tiny / "data" / "demo" / "baseline" / "predictions.csv"
    saved = predictions.read_bytes()
    predictions.unlink()
    try:
        assert make_n("paper") == ["notebooks/05_baseline.py", "notebooks/06_testing.py", "notebooks/07_saliency.py",
                                   "notebooks/08_comparison.py", "notebooks/09_new_cells.py",
                                   "notebooks/10_rig_recordings.py"]
    finally:
        predictions.write_bytes(saved)
        os.utime(predictions, (os.stat(predictions.parent / "config.json").st_mtime,) * 2)
    # a changed raw file reruns acquisition (which re-verifies it) and what depends on it
    raw = sorted((tiny / "data" / "demo" / "raw").glob("sub-*/*.nwb"))[0]
    stat = raw.stat()
    os.utime(raw)
    try:
        assert make_n("paper")[:2] == ["notebooks/01_data_acquisition.py", "notebooks/02_scalograms.py"]
    finally:
        os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
