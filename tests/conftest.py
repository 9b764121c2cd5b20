"""Shared fixtures: a tiny simulated cohort (generated once per session), paths to the shared real data, a
throwaway PostgreSQL server (once per session, a new database per test)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import postgres

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("STS_OFFLINE", "1")  # tests never download anything
os.environ.setdefault("MPLBACKEND", "Agg")


#: The pages after page 02, in the order `make -n` plans them (training: once per backbone).
LATER_PAGES = ["notebooks/03_splitting.py", *["notebooks/04_finetune.py"] * 4, "notebooks/05_baseline.py",
               "notebooks/06_testing.py", "notebooks/07_saliency.py", "notebooks/08_comparison.py",
               "notebooks/09_new_cells.py", "notebooks/10_rig_recordings.py"]


def planned_pages(make_output: str) -> list[str]:
    """Notebooks a ``make -n`` would execute: the runner's page runs (``runner notebooks/NN_x.py ...``), not its
    stamp checks, timings table, default job count or the lock that ``make paper`` holds around its inner make."""
    pages = []
    for line in make_output.splitlines():
        words = line.split()
        if "sts_utils.pages.runner" in words[:-1]:
            page = words[words.index("sts_utils.pages.runner") + 1]
            if page.endswith(".py"):
                pages.append(page)
    return pages


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real files of ../shared/data; in CI (CI=true) they are there, so their absence fails rather than skips."""
    if not SHARED.is_dir():
        if in_ci():
            pytest.fail(f"shared real data not found at {SHARED}, but CI is set: the tests that need it must run")
        pytest.skip(f"shared real data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 3-cells-per-class demo cohort with scalograms and a split, in a session temp data folder."""
    from sts_utils.stages.acquisition import acquire
    from sts_utils.stages.scalograms import compute_scalograms
    from sts_utils.stages.splits import make_splits

    data_dir = tmp_path_factory.mktemp("data")
    acquire("demo", data_dir, seed=0, n_cells=3, n_jobs=2)
    compute_scalograms("demo", data_dir, n_jobs=1, progress=False)
    make_splits("demo", data_dir, test_fraction=0.25, seed=0)
    return data_dir


@pytest.fixture
def teeter_data_dir(tmp_path, shared_data) -> Path:
    """A data folder whose teeter2018 cache holds the shared real files (as a user would copy them)."""
    raw = tmp_path / "teeter2018" / "raw"
    raw.mkdir(parents=True)
    for name in ("GLIF_clustering", "mouse_struc_data_dir"):
        (raw / name).symlink_to(shared_data / "teeter2018" / name)
    return tmp_path


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server from the system binaries for the whole session; skipped only outside CI when absent."""
    why = postgres.missing()
    if why is not None:
        if in_ci():
            pytest.fail(f"no PostgreSQL for the tests, but CI is set ({why}); .ci/run installs it")
        pytest.skip(why)
    server = postgres.Server(postgres.find_bin_dir()).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The SQLAlchemy URL of a new empty database on the session's PostgreSQL server."""
    return postgres_server.url()


@pytest.fixture(params=["journal", "postgres"])
def search_storage(request, tmp_path) -> str:
    """A shared search storage of each kind: a journal file, a new database on the session's PostgreSQL server."""
    if request.param == "journal":
        return str(tmp_path / "study.journal")
    return request.getfixturevalue("postgres_url")
