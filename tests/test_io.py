import json

import numpy as np
import pandas as pd
import pytest

from sts_utils.core import io
from sts_utils.core.config import get_data_dir, project_root, seed_everything


def test_atomic_write_leaves_no_partial_file_when_interrupted(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old content\n")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "a.npy"
    io.save_npy_atomic(np.arange(5), target)
    assert np.array_equal(io.load_npy(target), np.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_row_by_row_array_write_is_atomic_and_checks_the_row_count(tmp_path):
    target = tmp_path / "store.npy"
    rows = [np.full((2, 3), k, dtype=np.float16) for k in range(4)]
    io.write_npy_rows_atomic(target, (4, 2, 3), np.float16, iter(rows))
    assert np.array_equal(io.load_npy(target), np.stack(rows))
    with pytest.raises(ValueError, match="got 3 rows"):
        io.write_npy_rows_atomic(target, (4, 2, 3), np.float16, iter(rows[:3]))
    assert np.array_equal(io.load_npy(target), np.stack(rows))  # the previous array is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["store.npy"]
    io.write_npy_rows_atomic(tmp_path / "empty.npy", (0, 2, 3), np.float16, iter([]))
    assert io.load_npy(tmp_path / "empty.npy").shape == (0, 2, 3)


def test_sidecar_records_params_seed_versions_and_input_hashes(tmp_path):
    inp = tmp_path / "in.csv"
    inp.write_text("x\n1\n")
    art = io.write_csv_atomic(pd.DataFrame({"a": [1]}), tmp_path / "out.csv")
    side = io.write_sidecar(art, {"n": np.int64(3), "offsets": (40, 50)}, seed=7, inputs={"in.csv": inp}, stage="test")
    rec = json.loads(side.read_text())
    assert side.name == "out.csv.json"
    assert rec["params"] == {"n": 3, "offsets": [40, 50]}
    assert rec["seed"] == 7 and rec["stage"] == "test"
    assert rec["inputs"]["in.csv"]["sha256"] == io.file_sha256(inp)
    assert rec["versions"]["numpy"] == np.__version__


def test_markdown_table_and_data_dir(tmp_path, monkeypatch):
    csv, md = io.write_table(pd.DataFrame({"m": ["a|b"], "v": [0.12345]}), tmp_path / "t", caption="Cap.")
    text = md.read_text()
    assert text.startswith("Cap.") and "0.123" in text and "a\\|b" in text
    monkeypatch.setenv("STS_DATA_DIR", str(tmp_path))
    assert get_data_dir() == tmp_path
    assert get_data_dir("x") == project_root() / "x"  # relative to the project, wherever the kernel starts
    monkeypatch.delenv("STS_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert get_data_dir() == project_root() / "data" and (project_root() / "notebooks").is_dir()


def test_seed_everything_rejects_bad_seed():
    with pytest.raises(ValueError, match=r"^SEED must be a non-negative integer, got -1$"):
        seed_everything(-1)
    assert seed_everything(3).integers(1000) == seed_everything(3).integers(1000)
