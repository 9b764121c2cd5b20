"""The notebook sources survive a jupytext round trip unchanged and are parameterised for papermill.

Saving an unedited notebook from JupyterLab goes through the same jupytext writer: if reading a ``.py``
and writing it back with the project's configuration (jupytext.toml) gives the same bytes, the save
leaves the tracked file as it is.
"""
import ast
import difflib
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_configuration_file

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
CONFIG_FILE = ROOT / "jupytext.toml"


@pytest.fixture(scope="module")
def config():
    return load_jupytext_configuration_file(str(CONFIG_FILE))


def test_there_are_notebooks_and_no_paired_copies(config):
    assert NOTEBOOKS, "no notebooks/*.py"
    assert "ipynb" not in str(config.formats), "jupytext.toml must not pair the sources with .ipynb files"


def first_difference(a: str, b: str) -> str:
    a_lines, b_lines = a.splitlines(), b.splitlines()
    op = next(op for op in difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False).get_opcodes()
              if op[0] != "equal")
    _, i1, i2, j1, j2 = op
    return f"line {i1 + 1}: {a_lines[i1:i2][:3]} would become {b_lines[j1:j2][:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_round_trip_is_byte_identical(path, config):
    text = path.read_text(encoding="utf-8")
    nb = jupytext.reads(text, fmt="py:percent", config=config)
    assert nb.metadata["kernelspec"]["name"] == "sts"
    written = jupytext.writes(nb, fmt="py:percent", config=config)
    assert written == text, (f"{path.name}: saving it from JupyterLab would change it at "
                             f"{first_difference(text, written)} (e.g. two blank lines after the header become an empty `# %%` cell)")
    # the header carries the same filter, so the round trip also holds where jupytext.toml is not
    # seen (JupyterLab serving notebooks/ only)
    nb = jupytext.reads(text, fmt="py:percent")
    assert nb.metadata["jupytext"]["notebook_metadata_filter"] == config.notebook_metadata_filter
    assert jupytext.writes(nb, fmt="py:percent") == text


def test_round_trip_drops_what_jupyterlab_adds(config):
    """Metadata a Lab session adds (language_info, execution timings, trust) does not reach the file."""
    path = NOTEBOOKS[0]
    text = jupytext.writes(jupytext.read(path, config=config), fmt="py:percent", config=config)
    nb = jupytext.reads(text, fmt="py:percent", config=config)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.2"}
    nb.metadata["jupytext"]["text_representation"]["jupytext_version"] = "0.0.0"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
            cell.metadata["trusted"] = True
    assert jupytext.writes(nb, fmt="py:percent", config=config) == text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell(path):
    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    assigned = set()
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        assigned |= {t.id for t in targets if isinstance(t, ast.Name)}
    assert {"DATASET", "SEED", "DATA_DIR"} <= assigned, f"{path.name}: parameters cell assigns {sorted(assigned)}"
