"""A page's parameters: the notebook's cell tagged ``parameters`` is the one list of what a page accepts.

The runner gives each page the values it declares and refuses a name no page declares; the search's
command line (``make search``) accepts exactly the parameters of the training page
(:data:`TRAINING_PAGE`). Values given as text (make's command line) are read as YAML scalars or lists.
"""
from __future__ import annotations

import ast
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from sts_utils.core.config import project_root

#: The training page, whose parameters cell lists what ``make train`` and ``make search`` accept.
TRAINING_PAGE = "notebooks/04_finetune.py"


def parse_value(text: str) -> Any:
    """Parameter values as YAML scalars/lists: ``5`` -> 5, ``[40, 50]`` -> list, ``null`` -> None."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parameter_cell(nb) -> str:
    """Source of the cell tagged ``parameters`` (a ``ValueError`` when there is none)."""
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell.source
    raise ValueError("the notebook has no cell tagged 'parameters'")


def _literal_assignments(code: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = ast.literal_eval(node.value)
    return out


def declared_parameters(nb) -> dict[str, Any]:
    """Names assigned in the notebook's ``parameters`` cell, with their default values (literals)."""
    return _literal_assignments(parameter_cell(nb))


_CELL_MARKER = re.compile(r"^#\s*%%(?!%)(?P<options>.*)$")
_PARAMETERS_TAG = re.compile(r"""tags\s*=\s*\[[^\]]*["']parameters["']""")


def percent_parameter_cell(text: str) -> str | None:
    """Source of the ``# %% tags=["parameters"]`` cell of a jupytext percent-format text (None: no such cell).

    What :func:`parameter_cell` finds through jupytext, without loading it (tests/test_runner.py checks
    that both agree on every notebook).
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _CELL_MARKER.match(line)
        if m and _PARAMETERS_TAG.search(m.group("options")):
            body = []
            for rest in lines[i + 1:]:
                if _CELL_MARKER.match(rest):
                    break
                body.append(rest)
            return "\n".join(body)
    return None


def source_parameters(source: str | os.PathLike) -> dict[str, Any]:
    """The declared parameters of a notebook source: read directly from a percent-format ``.py`` file,
    through jupytext otherwise."""
    source = Path(source)
    if source.suffix == ".py":
        cell = percent_parameter_cell(source.read_text())
        if cell is not None:
            return _literal_assignments(cell)
    import jupytext
    return declared_parameters(jupytext.read(source))


def undeclared_parameters(parameters: dict[str, Any], sources: list[str | os.PathLike]) -> str | None:
    """A one-line refusal naming each of ``parameters`` that no notebook of ``sources`` declares, else None.

    make passes every variable of its command line to every stage, and each page takes the ones its
    ``parameters`` cell declares; a name that none declares (``EPOCH=5``) would otherwise change nothing.
    """
    declared: dict[str, list[str]] = {}
    for source in dict.fromkeys(str(s) for s in sources):
        for name in source_parameters(source):
            declared.setdefault(name, []).append(Path(source).stem)
    unknown = [name for name in parameters if name not in declared]
    if not unknown:
        return None
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(declared), n=1)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return (f"{', '.join(hints)}: not a parameter of any page ({', '.join(Path(s).stem for s in dict.fromkeys(map(str, sources)))}); "
            f"the pages' parameters are {', '.join(sorted(declared))}")


def training_page_parameters() -> dict[str, Any]:
    """The parameters (and defaults) of :data:`TRAINING_PAGE` in this checkout.

    Raises
    ------
    FileNotFoundError
        outside a checkout of the compendium (the package installed on its own has no pages).
    """
    path = project_root() / TRAINING_PAGE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the search's parameters are those of the compendium's training page; "
                                "run it from a checkout of the compendium (git clone, make env)")
    return source_parameters(path)
