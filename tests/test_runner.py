"""The papermill runner: parameters reach the notebook; a failing cell fails the run."""
import csv
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from sts_utils.pages.runner import TIMING_COLUMNS, main, module_dependencies, read_timings, record_timing, timings_table


ROOT = Path(__file__).resolve().parents[1]

SOURCE = '''# %% [markdown]
# # probe

# %% tags=["parameters"]
DATASET = "demo"
EPOCHS = 1
OFFSETS = [40, 50]
OUT = "out.json"
FAIL = False

# %%
import json
json.dump({"DATASET": DATASET, "EPOCHS": EPOCHS, "OFFSETS": OFFSETS}, open(OUT, "w"))
if FAIL:
    raise RuntimeError("this cell fails on purpose")
'''


def run(tmp_path, *params):
    src = tmp_path / "probe.py"
    src.write_text(SOURCE)
    args = [sys.executable, "-m", "sts_utils.pages.runner", str(src), str(tmp_path / "build" / "probe.ipynb"), "--cwd", str(tmp_path)]
    for k, v in params:
        args += ["-p", k, v]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_parameters_reach_the_notebook_and_source_is_untouched(tmp_path):
    r = run(tmp_path, ("DATASET", "teeter2018"), ("EPOCHS", "5"), ("OFFSETS", "[30, 60]"), ("UNUSED", "1"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == {"DATASET": "teeter2018", "EPOCHS": 5, "OFFSETS": [30, 60]}
    assert (tmp_path / "build" / "probe.ipynb").exists()
    assert (tmp_path / "probe.py").read_text() == SOURCE
    # the page's wall time, beside the executed notebook (not under figures/, whose tables are compared)
    (row,) = read_timings(tmp_path / "build" / "timings.csv")
    assert row["page"] == "probe" and 0 < float(row["seconds"]) < 300


def test_a_failing_cell_fails_the_run_and_shows_the_error(tmp_path):
    r = run(tmp_path, ("FAIL", "true"))
    assert r.returncode != 0
    assert "this cell fails on purpose" in r.stderr
    assert not (tmp_path / "build" / "probe.ipynb").exists()
    assert (tmp_path / "build" / "probe.failed.ipynb").exists()
    assert not (tmp_path / "build" / "timings.csv").exists(), "a failed run records no timing"


def test_timings_one_row_per_page_replaced_on_rerun(tmp_path, capsys):
    path = tmp_path / "demo" / "timings.csv"
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    record_timing(path, "02_scalograms", 61.26, t)
    record_timing(path, "01_data_acquisition", 12.0, t)
    record_timing(path, "02_scalograms", 3600.0, t)  # a rerun replaces the page's row
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [list(TIMING_COLUMNS), ["01_data_acquisition", "12.0", "2026-01-02T03:04:05+00:00"],
                    ["02_scalograms", "3600.0", "2026-01-02T03:04:05+00:00"]]
    assert not [p for p in path.parent.iterdir() if p.name != "timings.csv"], "written atomically, no leftovers"
    table = timings_table(path).splitlines()
    assert table[0].split()[:3] == ["page", "seconds", "h:mm:ss"]
    assert table[1].split()[:3] == ["01_data_acquisition", "12.0", "0:00:12"]
    assert table[-1].split() == ["total", "3612.0", "1:00:12"]
    assert main(["--timings", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["total", "3612.0", "1:00:12"]
    assert "no page timings" in timings_table(tmp_path / "none.csv")


def test_module_dependencies_follow_imports_through_the_layer_folders():
    """make's dependencies of a page: every package file it runs, found through ``from sts_utils.<layer> import x``
    and ``from sts_utils.<layer>.x import y`` at any depth (the subpackages' ``__init__`` files hold no code)."""
    deps = module_dependencies(ROOT / "notebooks" / "04_finetune.py")
    assert {"sts_utils/stages/training.py", "sts_utils/pages/page.py", "sts_utils/pages/plots.py",  # the page's own
            "sts_utils/data/models.py", "sts_utils/core/config.py",  # imported by those
            "sts_utils/core/errors.py"} <= set(deps), deps  # two steps away (config imports errors)
    assert all((ROOT / d).is_file() and not d.endswith("__init__.py") for d in deps), deps
    assert deps == sorted(set(deps))
