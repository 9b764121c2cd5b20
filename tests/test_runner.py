"""The papermill runner: parameters reach the notebook; a failing cell fails the run."""
import csv
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from sts_utils.core import config
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
    assert rows == [list(TIMING_COLUMNS), ["01_data_acquisition", "12.0", "2026-01-02T03:03:53+00:00", "2026-01-02T03:04:05+00:00"],
                    ["02_scalograms", "3600.0", "2026-01-02T02:04:05+00:00", "2026-01-02T03:04:05+00:00"]]
    assert not [p for p in path.parent.iterdir() if p.name != "timings.csv"], "written atomically, no leftovers"
    table = timings_table(path).splitlines()
    assert table[0].split()[:3] == ["page", "seconds", "h:mm:ss"]
    assert table[1].split()[:3] == ["01_data_acquisition", "12.0", "0:00:12"]
    assert table[-2].split() == ["total", "3612.0", "1:00:12"]
    # the pages ran side by side: the wall span (first start to last finish) is less than their total
    assert table[-1].split() == ["wall", "(span)", "3600.0", "1:00:00"]
    assert main(["--timings", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-2].split() == ["total", "3612.0", "1:00:12"]
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


RECORD = """
import sys
from sts_utils.pages.runner import record_timing
for k in range(20):
    record_timing(sys.argv[1], f"{sys.argv[2]}_{k:02d}", float(k))
"""


def test_pages_recording_side_by_side_lose_no_row(tmp_path):
    """`make paper JOBS=2` runs pages at once; each read-modify-write of timings.csv holds the folder's lock."""
    path = tmp_path / "timings.csv"
    procs = [subprocess.Popen([sys.executable, "-c", RECORD, str(path), f"page{j}"], cwd=ROOT) for j in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert sorted(r["page"] for r in read_timings(path)) == sorted(f"page{j}_{k:02d}" for j in range(4) for k in range(20))


HOLDER = """
import os, subprocess, sys
from sts_utils.core.io import LOCK_ENV
print("held", os.environ.get(LOCK_ENV))
# another run on the folder (not started by this one) is refused while the command runs
env = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
other = subprocess.run([sys.executable, "-m", "sts_utils.pages.runner", "--locked", "demo", "-p", "DATA_DIR", sys.argv[1],
                        "--", sys.executable, "-c", "pass"], env=env, capture_output=True, text=True)
print("other", other.returncode, other.stderr.strip().replace(chr(10), " / "))
"""


def test_locked_runs_a_command_holding_the_data_folder_lock_shared_with_its_children(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sts_utils.pages.runner", "--locked", "demo", "-p", "DATA_DIR", str(tmp_path),
                        "--", sys.executable, "-c", HOLDER, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    held, other = r.stdout.splitlines()
    assert held == f"held {(tmp_path / 'demo' / '.lock').resolve()}"
    assert other.startswith("other 1 ") and "is being written by pid" in other and "not run" in other
    # the command's exit status is the run's, and the lock is free again afterwards
    again = subprocess.run([sys.executable, "-m", "sts_utils.pages.runner", "--locked", "demo", "-p", "DATA_DIR", str(tmp_path),
                            "--", sys.executable, "-c", "raise SystemExit(3)"], cwd=ROOT, timeout=120)
    assert again.returncode == 3
    # a name that is no dataset takes no lock and creates no folder
    subprocess.run([sys.executable, "-m", "sts_utils.pages.runner", "--locked", "nosuch", "-p", "DATA_DIR", str(tmp_path),
                    "--", sys.executable, "-c", "pass"], cwd=ROOT, timeout=120, check=True)
    assert not (tmp_path / "nosuch").exists()


def test_default_jobs_follow_the_cpus_and_memory_this_process_may_use(monkeypatch):
    """make paper's JOBS=auto: 2 pages on 2 CPUs with 4 GiB or more; 1 in Binder's 2 GB (two CNN pages were
    killed for memory there) or on one CPU (affinity or cgroup quota)."""
    def machine(cpus, memory_gib, limits):
        monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(cpus)))
        monkeypatch.setattr(config.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096,
                                                                 "SC_PHYS_PAGES": int(memory_gib * 2**30 / 4096)}[name])
        monkeypatch.setattr(config, "_cgroup_limit", lambda v1_controller, v1_file, v2_file: limits.get(v1_file))
        return config.default_page_jobs()

    assert machine(2, 24, {}) == 2
    assert machine(16, 128, {}) == 2, "at most 2: more pages than that gain nothing here"
    assert machine(2, 24, {"memory.limit_in_bytes": str(2 * 2**30)}) == 1  # Binder
    assert machine(2, 3, {}) == 1
    assert machine(1, 24, {}) == 1
    assert machine(8, 24, {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"}) == 1
    assert machine(8, 24, {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}) == 2  # no quota
    assert main(["--default-jobs"]) == 0
