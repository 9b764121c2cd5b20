"""The package's layers: pure computation below stage I/O below the stages below presentation.

Every module of ``sts_utils`` has a layer; a module imports only from its own layer or below; the import
graph has no cycle; no package import hides inside a function (the usual way to dodge a cycle); the
LightGBM stage runs without torch; and ``sts_utils/README.md`` lists every module in its layer.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sts_utils"

LAYERS = {
    0: {"config", "errors", "io"},
    1: {"cwt", "signals", "steps", "sweeps", "metrics", "simulate", "spike_train_features", "stats", "fusion"},
    2: {"nwb", "rigs", "registry", "labels", "tables", "recordings", "store", "models", "search"},
    3: {"acquisition", "scalograms", "splits", "training", "features", "baseline", "evaluation", "audit", "saliency",
        "bundle", "predict", "comparison", "rig_recordings"},
    4: {"plots", "pages", "runner", "book", "report"},
}
LAYER_OF = {m: k for k, mods in LAYERS.items() for m in mods}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def package_imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sts_utils"):
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
    return {m for m in out if m in MODULES}


def graph() -> dict[str, set[str]]:
    return {m: package_imports(ast.parse((PACKAGE / f"{m}.py").read_text())) for m in MODULES}


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(LAYER_OF), sorted(set(MODULES) - set(LAYER_OF))


@pytest.mark.parametrize("module", MODULES)
def test_lower_layers_import_no_higher_one(module):
    higher = {m for m in graph()[module] if LAYER_OF[m] > LAYER_OF[module]}
    assert not higher, f"{module} (layer {LAYER_OF[module]}) imports {sorted(higher)}"


def test_the_import_graph_has_no_cycle():
    g, state = graph(), {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for n in sorted(g[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in MODULES:
        visit(m, [])


@pytest.mark.parametrize("module", MODULES)
def test_no_package_import_inside_a_function(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    hidden = [f"{f.name}: {sorted(package_imports(f))}" for f in ast.walk(tree)
              if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and package_imports(f)]
    assert not hidden, f"{module}: {hidden}"


@pytest.mark.parametrize("module", ["baseline", "features", "acquisition", "metrics", "stats", "search"])
def test_modules_that_need_no_torch_do_not_load_it(module):
    code = f"import sys, sts_utils.{module}; assert 'torch' not in sys.modules, 'torch loaded'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]


def test_no_module_chooses_a_matplotlib_backend():
    for m in MODULES:
        assert "matplotlib.use(" not in (PACKAGE / f"{m}.py").read_text(), m


def test_the_module_map_lists_every_module_in_its_layer():
    text = (PACKAGE / "README.md").read_text()
    sections = text.split("\n## ")[1:]
    found = {}
    for k, section in enumerate(sections):
        for m in MODULES:
            if f"`{m}.py`" in section:
                found.setdefault(m, k)
    assert set(found) == set(MODULES), sorted(set(MODULES) - set(found))
    for m, k in found.items():
        assert k == LAYER_OF[m], f"{m} listed under section {k}, its layer is {LAYER_OF[m]}"
