"""The package's layers: pure computation below stage I/O below the stages below presentation.

A module's layer is its folder: ``sts_utils/core/`` 0, ``compute/`` 1, ``data/`` 2, ``stages/`` 3, ``pages/`` 4,
and every module lives in one of them (only ``__init__.py`` at the top, and the folders' ``__init__.py``
hold a docstring, nothing to import). A module imports only from its own layer or below; the import graph
has no cycle; no package import hides inside a function (the usual way to dodge a cycle); the LightGBM
stage and the search's launcher run without torch; and ``sts_utils/README.md`` lists every module under
its folder.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sts_utils"

#: the layer of each folder of the package: a module's folder is its layer
FOLDER_LAYERS = {"core": 0, "compute": 1, "data": 2, "stages": 3, "pages": 4}
#: every module, by its name inside the package (``core.config``), and its file
FILES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))
         if p.name != "__init__.py"}
MODULES = sorted(FILES)


def layer_of(module: str) -> int:
    folder = module.split(".")[0]
    assert "." in module and folder in FOLDER_LAYERS, f"{module}: not in a layer folder ({', '.join(FOLDER_LAYERS)})"
    return FOLDER_LAYERS[folder]


def package_imports(tree: ast.AST, module: str) -> set[str]:
    """The package modules (``core.config``) that ``tree``, the code of ``module``, imports: ``from
    sts_utils.core.config import x``, ``from sts_utils.compute import cwt``, ``import sts_utils.data.nwb``, and
    relative imports resolved from ``module``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(f"sts_utils.{module}".split(".")[:-node.level] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "sts_utils":
                base = node.module
            else:
                continue
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m.removeprefix("sts_utils.") for m in out} & set(MODULES)


def graph() -> dict[str, set[str]]:
    return {m: package_imports(ast.parse(FILES[m].read_text()), m) for m in MODULES}


def test_every_module_lives_in_a_layer_folder():
    """No module left at the top level or in another folder; each folder's ``__init__.py`` is a docstring only,
    and the top-level one imports no module of the package (nothing is re-exported)."""
    stray = [m for m in MODULES if len(m.split(".")) != 2 or m.split(".")[0] not in FOLDER_LAYERS]
    assert not stray, f"modules outside the layer folders {sorted(FOLDER_LAYERS)}: {stray}"
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]
    for folder in FOLDER_LAYERS:
        body = ast.parse((PACKAGE / folder / "__init__.py").read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str), f"{folder}/__init__.py: only a docstring"
    assert not package_imports(ast.parse((PACKAGE / "__init__.py").read_text()), "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_lower_layers_import_no_higher_one(module):
    higher = {m for m in graph()[module] if layer_of(m) > layer_of(module)}
    assert not higher, f"{module} (layer {layer_of(module)}) imports {sorted(higher)}"


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
    tree = ast.parse(FILES[module].read_text())
    hidden = [f"{f.name}: {sorted(package_imports(f, module))}" for f in ast.walk(tree)
              if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and package_imports(f, module)]
    assert not hidden, f"{module}: {hidden}"


@pytest.mark.parametrize("module", ["stages.baseline", "stages.features", "stages.acquisition", "compute.metrics",
                                    "compute.stats", "data.profiles", "data.studies", "stages.search"])
def test_modules_that_need_no_torch_do_not_load_it(module):
    code = f"import sys, sts_utils.{module}; assert 'torch' not in sys.modules, 'torch loaded'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]


def test_no_module_chooses_a_matplotlib_backend():
    for m in MODULES:
        assert "matplotlib.use(" not in FILES[m].read_text(), m


def test_the_module_map_lists_every_module_under_its_folder():
    """One section per folder (its heading names it: ``## `core/` — layer 0 ...``), in layer order; each lists
    exactly that folder's modules, one row each."""
    text = (PACKAGE / "README.md").read_text()
    sections = {}
    for section in text.split("\n## ")[1:]:
        heading, _, body = section.partition("\n")
        folder = heading.split("`")[1].rstrip("/") if heading.startswith("`") else heading
        sections[folder] = [line.split("`")[1] for line in body.splitlines() if line.startswith("| `")]
    assert list(sections) == list(FOLDER_LAYERS), list(sections)
    for k, folder in enumerate(sections):
        assert f"layer {k}" in text.split(f"\n## `{folder}/`")[1].splitlines()[0], folder
    for folder, rows in sections.items():
        files = sorted(FILES[m].name for m in MODULES if m.split(".")[0] == folder)
        assert sorted(rows) == files, f"{folder}/: README lists {sorted(rows)}, the folder holds {files}"


def optuna_private_names(tmp_path: Path) -> set[str]:
    """The private attribute names (``_x``, not ``__x__``) of Optuna's objects as they live: a study on each
    kind of storage, a trial, a frozen trial, the samplers, pruners and callbacks the package uses."""
    import optuna

    objects = []
    for storage in (None, f"sqlite:///{tmp_path / 'p.db'}",
                    optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "p.log")))):
        study = optuna.create_study(storage=storage)
        trial = study.ask()
        objects += [study, study._storage, trial, study.sampler, study.pruner]
        study.tell(trial, 1.0)
        objects.append(study.trials[0])
    objects += [optuna.storages.RetryHeartbeatStaleTrialCallback(), optuna.study.MaxTrialsCallback(1),
                optuna.pruners.MedianPruner(), optuna.pruners.HyperbandPruner()]
    names = set()
    for obj in objects:
        names |= {n for n in set(dir(type(obj))) | set(vars(obj)) if n.startswith("_") and not n.endswith("__")}
    return names


def private_optuna_uses(source: str, private: set[str]) -> list[str]:
    """Uses of Optuna's private names in ``source``: its private modules, and attributes (not of ``self``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "optuna":
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names if a.name.split(".")[0] == "optuna"]
        else:
            modules = []
        found += [f"line {node.lineno}: import of {m}" for m in modules if any(p.startswith("_") for p in m.split("."))]
        if isinstance(node, ast.Attribute) and (node.attr in private or (
                node.attr.startswith("_") and isinstance(node.value, ast.Name) and node.value.id == "optuna")):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_no_private_optuna_names(tmp_path):
    """Only Optuna's public API: no ``study._storage``, ``trial._trial_id``, ``optuna._...`` (issue 25)."""
    private = optuna_private_names(tmp_path)
    assert {"_storage", "_trial_id", "_study_id"} <= private
    # the check itself catches what the search once did
    old = ("from optuna.storages._heartbeat import is_heartbeat_enabled\n"
           "study._storage.set_trial_user_attr(t._trial_id, 'stale', True)\noptuna._experimental\n")
    assert len(private_optuna_uses(old, private)) == 4
    uses = {m: private_optuna_uses(FILES[m].read_text(), private) for m in MODULES}
    assert not {m: u for m, u in uses.items() if u}
