"""Execute a jupytext notebook source with papermill (what ``make`` calls for every stage).

    python -m sts_utils.pages.runner notebooks/02_scalograms.py build/demo/02_scalograms.ipynb -p DATASET demo -p SEED 0

The ``.py`` source (jupytext percent format) is converted in memory, executed with papermill in the
repository root with the given parameters injected after the cell tagged ``parameters``, and
written to the output path only when every cell ran: a failing cell exits non-zero, prints the
cell's error, and leaves the partly executed notebook at ``<output>.failed.ipynb`` for inspection
(so ``make`` never mistakes a failed run for a finished one). The source is never modified. While a
notebook runs, its dataset's data folder is locked (:func:`sts_utils.core.io.data_dir_lock`).

Two more modes serve the Makefile:

``--stamp FILE``
    a successful run records its resolved parameters (the notebook's defaults with the ``-p`` values
    on top) and its start time in ``<output folder>/.params/<output stem>.json``. ``--stamp`` sets
    that file's modification time to the recorded start when the requested parameters equal the
    recorded ones, and to now when they differ (or nothing is recorded), leaving its content alone:
    the file is a make prerequisite that is newer than the stage's artifacts exactly when a
    parameter changed, and a dry run (``make -n``) with other parameters leaves no trace.
``--stamps --check FILE SOURCE [NAME=VALUE ...] ...``
    the same for many stamps in one start-up (what make runs, once per call): each ``--check`` names a
    stamp, its notebook and the parameters of that stage only (``BACKBONE=resnet18``), on top of the
    ``-p`` values shared by all. This mode reads the parameter cells without jupytext, so it is quick.
``--deps``
    prints, for each notebook, the package modules it imports directly or through other modules,
    as make variables (``DEPS_02_scalograms := sts_utils/…``), so stages depend on what they run.
``--timings FILE``
    prints the table of ``FILE`` (``<output folder>/timings.csv``, where every successful run records
    its page's wall seconds, one row per page, replaced on a rerun) with the total (``make paper`` ends
    with it).
``--locked DATASET [-p DATA_DIR D] -- COMMAND ...``
    runs COMMAND (``make paper``'s inner make, which runs ``JOBS`` pages at once) holding the dataset's
    data folder lock; the pages it starts share it (``STS_LOCK_HELD``), and another run on the folder is
    refused as before. A name that is no dataset takes no lock (its first page says what is wrong).
``--default-jobs``
    prints how many pages ``make paper`` runs at once when ``JOBS`` is not given
    (:func:`sts_utils.core.config.default_page_jobs`: 2 on 2 CPUs with 4 GiB, 1 in Binder's 2 GB).
``--target FILE``
    with a notebook to execute: the stage's make target. A run that fails after writing it removes it
    (make's own deletion is switched off for stage targets, because make also deletes a target that
    another process rewrote while a refused run was starting).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any

from sts_utils.core.config import (FIGURES_PREFIX, STAGE_OUTPUTS, dataset_dir, default_page_jobs, figures_dir,
                                   is_known_dataset)
from sts_utils.core.errors import DataDirLocked
from sts_utils.core.io import data_dir_lock, folder_update_lock, write_text_atomic
from sts_utils.core.parameters import declared_parameters, parse_value, source_parameters, undeclared_parameters

# jupytext, nbformat, papermill and jupyter_client are imported where they are used: the stamp checks
# and the timings table, which make runs on every call, need none of them (about a second of start-up)

KERNEL_NAME = "sts"
PACKAGE = Path(__file__).resolve().parents[1]


def resolved_parameters(source: str | os.PathLike, parameters: dict[str, Any] | None,
                        declared: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters a run of ``source`` uses: its defaults, with the declared ones of ``parameters`` on top."""
    declared = source_parameters(source) if declared is None else declared
    return {**declared, **{k: v for k, v in (parameters or {}).items() if k in declared}}


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def stamp_path(output: str | os.PathLike) -> Path:
    """Where a run writing ``output`` records its parameters: ``<output folder>/.params/<stem>.json``."""
    output = Path(output)
    return output.parent / ".params" / f"{output.stem}.json"


def stage_outputs(source: str | os.PathLike, params: dict[str, Any]) -> dict[str, list[int]]:
    """Size and modification time (ns) of every file the stage of ``source`` leaves for later stages.

    The files are those of :data:`sts_utils.core.config.STAGE_OUTPUTS` for the notebook's stem, under
    ``data/<DATASET>/`` and ``figures/<DATASET>/`` of ``params`` (``{BACKBONE}`` filled in); keys are
    paths relative to those folders (``figures:`` before the figures folder's).
    """
    patterns = STAGE_OUTPUTS.get(Path(source).stem, ())
    dataset = params.get("DATASET")
    if not patterns or not is_known_dataset(dataset, params.get("DATA_DIR")):
        return {}
    roots = {"": dataset_dir(dataset, params.get("DATA_DIR")),
             FIGURES_PREFIX: figures_dir(dataset, params.get("FIGURES_DIR"), create=False)}
    found: dict[str, list[int]] = {}
    for pattern in patterns:
        prefix = FIGURES_PREFIX if pattern.startswith(FIGURES_PREFIX) else ""
        root = roots[prefix]
        for path in sorted(root.glob(pattern[len(prefix):].format(**params))):
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                found[prefix + path.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return found


def record_stamp(stamp: str | os.PathLike, params: dict[str, Any], started: float,
                 outputs: dict[str, list[int]] | None = None) -> None:
    """Record the parameters a successful run used, dated at its start (before any artifact it wrote).

    ``outputs`` (:func:`stage_outputs` after the run) is recorded too: a later check finds a file of
    them deleted or rewritten since, and dates the stamp now, so make reruns the stage.
    """
    stamp = Path(stamp)
    record = {"params": json.loads(_canonical(params)), "started": started, "outputs": outputs or {}}
    write_text_atomic(stamp, json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.utime(stamp, (started, started))


def _outputs_intact(recorded: dict[str, list[int]], current: dict[str, list[int]]) -> bool:
    """Whether every recorded output file is still there, with its recorded size and modification time."""
    return all(current.get(name) == list(stat) for name, stat in recorded.items())


def check_stamp(source: str | os.PathLike, stamp: str | os.PathLike, parameters: dict[str, Any] | None,
                declared: dict[str, Any] | None = None) -> bool:
    """Date ``stamp`` at its recorded run when the requested parameters are the recorded ones and the
    stage's recorded outputs are intact (:func:`stage_outputs`), else now.

    Returns whether the parameters changed, an output is missing or changed, or nothing is recorded. The content is never changed here
    (a missing stamp is created with no parameters recorded). ``declared``: the notebook's declared
    parameters, when the caller has read them already.
    """
    stamp = Path(stamp)
    resolved = resolved_parameters(source, parameters, declared)
    requested = _canonical(resolved)
    if stamp.exists():
        try:
            rec = json.loads(stamp.read_text())
            same = _canonical(rec.get("params")) == requested
            # an output deleted, replaced or written by a run that did not finish: the stage is due again
            same = same and _outputs_intact(rec.get("outputs") or {}, stage_outputs(source, resolved))
        except (ValueError, AttributeError, TypeError):  # unreadable: treated as nothing known
            rec, same = None, False
        if same:
            os.utime(stamp, (rec["started"], rec["started"]))
            return False
        os.utime(stamp)
        return True
    write_text_atomic(stamp, json.dumps({"params": None, "started": 0.0}) + "\n")  # nothing known: a run is due
    return True


def check_stamps(checks: list[tuple[str | os.PathLike, str | os.PathLike, dict[str, Any]]],
                 parameters: dict[str, Any] | None) -> list[Path]:
    """:func:`check_stamp` for each ``(stamp, source, stage parameters)``, the stage's parameters on top of
    ``parameters``; each source is read once. Returns the stamps whose parameters changed."""
    declared: dict[Path, dict[str, Any]] = {}
    changed = []
    for stamp, source, own in checks:
        key = Path(source).resolve()
        if key not in declared:
            declared[key] = source_parameters(source)
        if check_stamp(source, stamp, {**(parameters or {}), **own}, declared[key]):
            changed.append(Path(stamp))
    return changed


# ------------------------------------------------------------------------------------------ timings

TIMINGS = "timings.csv"
TIMING_COLUMNS = ("page", "seconds", "started_utc", "finished_utc")


def read_timings(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a timings file (none when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("page")]


def record_timing(path: str | os.PathLike, page: str, seconds: float, finished: datetime | None = None) -> Path:
    """Set ``page``'s row of the timings file ``path`` (a rerun replaces it), rows sorted by page, atomically.

    Pages that run side by side (``make paper JOBS=2``) record under one lock (on the folder), so no
    page's row is lost to another's read-modify-write.
    """
    finished = (finished or datetime.now(timezone.utc)).astimezone(timezone.utc)
    started = datetime.fromtimestamp(finished.timestamp() - seconds, timezone.utc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_update_lock(path.parent):
        rows = {r["page"]: r for r in read_timings(path)}
        rows[page] = {"page": page, "seconds": f"{seconds:.1f}", "started_utc": started.isoformat(timespec="seconds"),
                      "finished_utc": finished.isoformat(timespec="seconds")}
        out = StringIO()
        writer = csv.DictWriter(out, fieldnames=TIMING_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[p] for p in sorted(rows))
        return write_text_atomic(path, out.getvalue())


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def timings_table(path: str | os.PathLike) -> str:
    """The timings file as a text table: one line per page (seconds, h:mm:ss, when it finished), the pages'
    total and their wall span (first start to last finish; less than the total when pages ran side by side)."""
    rows = read_timings(path)
    if not rows:
        return f"no page timings recorded in {path}"
    width = max(len("wall (span)"), *(len(r["page"]) for r in rows))
    lines = [f"{'page':<{width}}  {'seconds':>9}  {'h:mm:ss':>8}  finished (UTC)"]
    total = 0.0
    for r in rows:
        sec = float(r["seconds"])
        total += sec
        lines.append(f"{r['page']:<{width}}  {sec:>9.1f}  {_hms(sec):>8}  {r['finished_utc']}")
    lines.append(f"{'total':<{width}}  {total:>9.1f}  {_hms(total):>8}")
    starts = [datetime.fromisoformat(r["started_utc"]) for r in rows if r.get("started_utc")]
    if len(starts) == len(rows):  # files written before started_utc was recorded have no span
        span = max(datetime.fromisoformat(r["finished_utc"]) for r in rows) - min(starts)
        lines.append(f"{'wall (span)':<{width}}  {span.total_seconds():>9.1f}  {_hms(span.total_seconds()):>8}")
    return "\n".join(lines)


def run_locked(dataset: str, data_dir: str | os.PathLike | None, command: list[str]) -> int:
    """Run ``command`` holding ``dataset``'s data folder lock (shared with the pages it starts); its exit status.

    An interrupt reaches the command too (one process group): the lock is kept until it has cleaned up.
    """
    known = is_known_dataset(dataset, data_dir)
    with data_dir_lock(dataset_dir(dataset, data_dir)) if known else contextlib.nullcontext():
        proc = subprocess.Popen(command)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue


#: Kernel option that keeps the kernel's own stdout/stderr (progress, logs) out of the executed notebook.
NO_FD_CAPTURE = "--IPKernelApp.capture_fd_output=False"


def kernel_name() -> str:
    """The project's kernel (registered by ``make``) when installed, else the default ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager
    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def execute_notebook(source: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any] | None = None,
                     cwd: str | os.PathLike | None = None, kernel: str | None = None, log_output: bool = True,
                     target: str | os.PathLike | None = None) -> Path:
    """Convert ``source`` with jupytext and execute it with papermill into ``output``.

    A successful run records its parameters and outputs (:func:`record_stamp`) and its wall seconds in
    ``<output folder>/timings.csv`` (:func:`record_timing`). ``target``: the make target of the stage;
    a run that fails after writing it removes it (make itself never deletes a stage target: a run
    refused because another process holds the folder must not delete that process's file).

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
    declared = declared_parameters(nb)
    # make passes its variables to every stage; each notebook receives the ones it declares
    parameters = {k: v for k, v in (parameters or {}).items() if k in declared}
    kernel = kernel or kernel_name()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": f"Python ({kernel})", "language": "python"}
    staged = output.with_name(output.stem + ".source.ipynb")
    nbformat.write(nb, staged)
    partial = output.with_name(output.stem + ".part.ipynb")
    failed = output.with_name(output.stem + ".failed.ipynb")
    dataset = parameters.get("DATASET", declared.get("DATASET"))
    # a stage page (it declares DATASET and DATA_DIR) holds its data folder's lock for the whole run
    lock = data_dir_lock(dataset_dir(dataset, parameters.get("DATA_DIR"))) \
        if "DATA_DIR" in declared and is_known_dataset(dataset, parameters.get("DATA_DIR")) else contextlib.nullcontext()
    # every kernel hashes strings the same way, so no set or dict of strings can order a result differently
    # from one run to the next (Python salts str hashes per process otherwise)
    os.environ["PYTHONHASHSEED"] = "0"
    started = time.time()
    try:
        with lock:
            try:
                # ipykernel copies whatever the kernel writes to its file descriptors into the notebook; without
                # that capture, progress bars (written to sys.__stderr__) reach make's terminal and only there
                pm.execute_notebook(str(staged), str(partial), parameters=parameters, kernel_name=kernel,
                                    cwd=str(cwd or Path.cwd()), log_output=log_output, progress_bar=False,
                                    extra_arguments=[NO_FD_CAPTURE])
            except BaseException:
                _remove_if_written(target, started)  # under the lock: only this run can have written it
                raise
    except BaseException:
        if partial.exists():
            os.replace(partial, failed)
        raise
    finally:
        staged.unlink(missing_ok=True)
    failed.unlink(missing_ok=True)
    os.replace(partial, output)
    resolved = {**declared, **parameters}
    record_stamp(stamp_path(output), resolved, started, stage_outputs(source, resolved))
    record_timing(output.parent / TIMINGS, output.stem, time.time() - started)
    return output


def _remove_if_written(target: str | os.PathLike | None, since: float) -> None:
    """Remove ``target`` when it was written at or after ``since`` (by the failed run), saying so."""
    if target is None:
        return
    path = Path(target)
    try:
        written = path.stat().st_mtime >= since - 0.05  # (file times are kernel ticks, a little behind)
    except FileNotFoundError:
        return
    if written:
        path.unlink(missing_ok=True)
        print(f"removed {path}: written by this failed run, so make does not take the stage as done", file=sys.stderr)


# ------------------------------------------------------------------------------------ dependencies

def _module_file(name: str) -> Path | None:
    """The file of package module ``name`` (``sts_utils.core.config`` -> ``sts_utils/core/config.py``); None for
    a subpackage, a name inside a module, or anything outside the package."""
    parts = name.split(".")
    if parts[0] != "sts_utils" or len(parts) < 2:
        return None
    path = PACKAGE.joinpath(*parts[1:]).with_suffix(".py")
    return path if path.is_file() else None


def _imported_modules(tree: ast.AST, current: str | None = None) -> set[str]:
    """Package modules (``sts_utils.<layer>.x``) that an AST imports at any depth.

    ``from sts_utils.compute import cwt`` imports the module ``sts_utils.compute.cwt``; ``from
    sts_utils.core.config import CLASSES`` the module ``sts_utils.core.config``; relative imports are
    resolved from ``current``, the importing module's name.
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sts_utils.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level and current is not None:
                base = ".".join(current.split(".")[:-node.level] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "sts_utils":
                base = node.module
            else:
                continue
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if _module_file(m) is not None}


def module_dependencies(source: str | os.PathLike) -> list[str]:
    """Files of the package that a notebook (or module) imports, directly or through other modules."""
    import jupytext

    source = Path(source)
    text = "\n".join(c.source for c in jupytext.read(source).cells if c.cell_type == "code") \
        if source.parent.name == "notebooks" else source.read_text()
    todo = _imported_modules(ast.parse(text))
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo |= _imported_modules(ast.parse(_module_file(mod).read_text()), current=mod) - seen
    root = PACKAGE.parent
    return sorted(str(_module_file(m).relative_to(root)) for m in seen)


def make_dependencies(notebooks: list[str]) -> str:
    """Make variables ``DEPS_<notebook stem> := <package files>`` for ``notebooks``."""
    lines = ["# generated by `python -m sts_utils.pages.runner --deps`: the package files each notebook runs"]
    for nb in sorted(notebooks):
        lines.append(f"DEPS_{Path(nb).stem} := " + " ".join(module_dependencies(nb)))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="*", help="notebook source (and, to execute it, the output path)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--cwd", default=None)
    ap.add_argument("--stamp", default=None, help="date this parameter stamp of the source (see above)")
    ap.add_argument("--stamps", action="store_true", help="date the parameter stamps of every --check")
    ap.add_argument("--check", nargs="+", action="append", default=[], metavar="STAMP SOURCE [NAME=VALUE]",
                    help="with --stamps: a stamp, its notebook source and that stage's own parameters")
    ap.add_argument("--deps", action="store_true", help="print make variables of each notebook's package files")
    ap.add_argument("--timings", default=None, metavar="CSV", help="print this timings file as a table")
    ap.add_argument("--target", default=None, help="the stage's make target, removed when a run that wrote it fails")
    ap.add_argument("--locked", default=None, metavar="DATASET",
                    help="run the command after -- holding the dataset's data folder lock")
    ap.add_argument("--default-jobs", action="store_true", help="print how many pages make paper runs at once by default")
    args = ap.parse_args(argv)
    if args.default_jobs:
        print(default_page_jobs())
        return 0
    if args.locked:
        if not args.source:
            ap.error("--locked DATASET [-p DATA_DIR D] -- COMMAND ...: give the command")
        try:
            return run_locked(args.locked, dict(args.param).get("DATA_DIR"), args.source)
        except DataDirLocked as exc:
            print(f"*** {' '.join(args.source)[:80]} not run: {exc}", file=sys.stderr)
            return 1
    if args.deps:
        sys.stdout.write(make_dependencies(args.source))
        return 0
    if args.timings:
        print(timings_table(args.timings))
        return 0
    params = {k: parse_value(v) for k, v in args.param}
    if args.check and not args.stamps:
        ap.error("--check belongs to --stamps")
    if args.stamps:
        checks = []
        for check in args.check:
            if len(check) < 2 or any("=" not in kv for kv in check[2:]):
                ap.error(f"--check {' '.join(check)}: give STAMP SOURCE [NAME=VALUE ...]")
            own = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in check[2:])}
            checks.append((check[0], check[1], own))
        refusal = undeclared_parameters(params, [c[1] for c in checks])
        if refusal is not None:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        check_stamps(checks, params)
        return 0
    if args.stamp:
        check_stamp(args.source[0], args.stamp, params)
        return 0
    if len(args.source) != 2:
        ap.error("give the notebook source and the output path")
    source, output = args.source
    try:
        execute_notebook(source, output, params, cwd=args.cwd, target=args.target)
    except DataDirLocked as exc:  # refused before anything ran: the one line says it all
        print(f"\n*** {source} not run: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # print the failing cell's error in a form make's log shows clearly
        name = type(exc).__name__
        print(f"\n*** {source} failed ({name}) ***\n{exc}\n"
              f"partly executed notebook: {Path(output).with_name(Path(output).stem + '.failed.ipynb')}",
              file=sys.stderr)
        return 1
    print(f"executed {source} -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
