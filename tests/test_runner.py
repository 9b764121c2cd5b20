"""The papermill runner: parameters reach the notebook; a failing cell fails the run."""
import json
import subprocess
import sys
from pathlib import Path


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
    args = [sys.executable, "-m", "sts_utils.runner", str(src), str(tmp_path / "build" / "probe.ipynb"), "--cwd", str(tmp_path)]
    for k, v in params:
        args += ["-p", k, v]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_parameters_reach_the_notebook_and_source_is_untouched(tmp_path):
    r = run(tmp_path, ("DATASET", "teeter2018"), ("EPOCHS", "5"), ("OFFSETS", "[30, 60]"), ("UNUSED", "1"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == {"DATASET": "teeter2018", "EPOCHS": 5, "OFFSETS": [30, 60]}
    assert (tmp_path / "build" / "probe.ipynb").exists()
    assert (tmp_path / "probe.py").read_text() == SOURCE


def test_a_failing_cell_fails_the_run_and_shows_the_error(tmp_path):
    r = run(tmp_path, ("FAIL", "true"))
    assert r.returncode != 0
    assert "this cell fails on purpose" in r.stderr
    assert not (tmp_path / "build" / "probe.ipynb").exists()
    assert (tmp_path / "build" / "probe.failed.ipynb").exists()
