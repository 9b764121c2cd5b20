"""Execute a jupytext notebook source with papermill (what ``make`` calls for every stage).

    python -m sts_utils.runner notebooks/02_scalograms.py build/demo/02_scalograms.ipynb -p DATASET demo -p SEED 0

The ``.py`` source (jupytext percent format) is converted in memory, executed with papermill in the
repository root with the given parameters injected after the cell tagged ``parameters``, and
written to the output path only when every cell ran: a failing cell exits non-zero, prints the
cell's error, and leaves the partly executed notebook at ``<output>.failed.ipynb`` for inspection
(so ``make`` never mistakes a failed run for a finished one). The source is never modified.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

KERNEL_NAME = "sts"


def parse_value(text: str) -> Any:
    """Parameter values as YAML scalars/lists: ``5`` -> 5, ``[40, 50]`` -> list, ``null`` -> None."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def declared_parameters(nb) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    import ast

    names: set[str] = set()
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
    return names


def kernel_name() -> str:
    """The project's kernel (registered by ``make``) when installed, else the default ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def execute_notebook(source: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any] | None = None,
                     cwd: str | os.PathLike | None = None, kernel: str | None = None, log_output: bool = True) -> Path:
    """Convert ``source`` with jupytext and execute it with papermill into ``output``.

    Raises
    ------
    papermill.PapermillExecutionError
        when a cell fails; the partly executed notebook is kept at ``<output>.failed.ipynb``.
    """
    import jupytext
    import nbformat
    import papermill as pm

    source, output = Path(source), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(source)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"{source} has no cell tagged 'parameters'")
    # make passes its variables to every stage; each notebook receives the ones it declares
    declared = declared_parameters(nb)
    parameters = {k: v for k, v in (parameters or {}).items() if k in declared}
    kernel = kernel or kernel_name()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": f"Python ({kernel})", "language": "python"}
    staged = output.with_name(output.stem + ".source.ipynb")
    nbformat.write(nb, staged)
    partial = output.with_name(output.stem + ".part.ipynb")
    failed = output.with_name(output.stem + ".failed.ipynb")
    try:
        pm.execute_notebook(str(staged), str(partial), parameters=parameters, kernel_name=kernel,
                            cwd=str(cwd or Path.cwd()), log_output=log_output, progress_bar=False)
    except BaseException:
        if partial.exists():
            os.replace(partial, failed)
        raise
    finally:
        staged.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    os.replace(partial, output)
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("output")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--cwd", default=None)
    args = ap.parse_args(argv)
    params = {k: parse_value(v) for k, v in args.param}
    try:
        execute_notebook(args.source, args.output, params, cwd=args.cwd)
    except Exception as exc:  # print the failing cell's error in a form make's log shows clearly
        name = type(exc).__name__
        print(f"\n*** {args.source} failed ({name}) ***\n{exc}\n"
              f"partly executed notebook: {Path(args.output).with_name(Path(args.output).stem + '.failed.ipynb')}",
              file=sys.stderr)
        return 1
    print(f"executed {args.source} -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
