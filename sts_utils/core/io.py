"""Artifact I/O: atomic writes, JSON provenance sidecars, CSV + Markdown tables, array stores.

Every artifact goes through :func:`atomic_path`: it is written to a temporary file beside its target
and renamed into place, so an interrupted run never leaves a partial file that a later run would
mistake for a finished one. Nothing here unpickles: arrays are ``.npy`` loaded with
``allow_pickle=False``, tables are CSV, models are state dicts loaded with ``weights_only=True``.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sts_utils.core.errors import DataDirLocked, DiskFullError

#: Packages whose versions go into every sidecar.
PROVENANCE_PACKAGES = (
    "sts_utils", "numpy", "scipy", "pandas", "pywavelets", "torch", "torchvision", "lightgbm",
    "scikit-learn", "captum", "pynwb", "ipfx", "h5py", "optuna",
)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` only on success.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and the
    previous content of ``target``, if any, is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artifacts get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as exc:
        full = disk_full_error(exc, target)  # (before the partial file frees its space)
        tmp_path.unlink(missing_ok=True)
        if full is not None:
            raise full from exc
        raise


#: errno values of a full disk or an exhausted quota
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: below this many free bytes, a write error without an errno (NumPy's "requested and written") is a full disk
_NEARLY_FULL_BYTES = 1 << 20


def disk_full_error(exc: BaseException, target: str | os.PathLike) -> DiskFullError | None:
    """A one-line :class:`~sts_utils.core.errors.DiskFullError` naming ``target`` when ``exc`` is a full disk, else None."""
    if not isinstance(exc, OSError) or isinstance(exc, DiskFullError):
        return None
    folder = Path(target).parent
    try:
        st = os.statvfs(folder)
        free_bytes = st.f_bavail * st.f_frsize
    except OSError:
        free_bytes = None
    if exc.errno not in _NO_SPACE and not (exc.errno is None and free_bytes is not None
                                           and free_bytes < _NEARLY_FULL_BYTES):
        return None
    free = f"{free_bytes / 1e6:.1f} MB free" if free_bytes is not None else "free space unknown"
    return DiskFullError(f"{target}: the disk is full ({free} on the disk of {folder}); nothing was replaced. "
                         f"Free some space there (or set STS_DATA_DIR to a larger disk) and run again")


def write_files_together(folder: str | os.PathLike, contents: Mapping[str, bytes], last: str) -> dict[str, Path]:
    """Write the files of ``contents`` (name -> bytes) into ``folder`` as one generation.

    Every file is first written in full to a temporary file beside its target, so a full disk or any
    other failure there changes nothing. Then the previous ``last`` (the file that marks the set as
    done: a stage's make target) is removed, the others are renamed into place and ``last`` is renamed
    last, so no moment shows the new ``last`` beside an older file of the set, and an interruption
    between the renames leaves no ``last`` (the stage reruns) rather than a mixed set that looks done.
    """
    if last not in contents:
        raise ValueError(f"last={last!r} is not one of the files {sorted(contents)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        for name, data in contents.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            staged[name] = Path(tmp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)
    except BaseException as exc:
        full = disk_full_error(exc, folder / name)
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if full is not None:
            raise full from exc
        raise
    (folder / last).unlink(missing_ok=True)
    for name in [n for n in staged if n != last] + [last]:
        os.replace(staged[name], folder / name)
    return {name: folder / name for name in contents}


#: set in the environment of a notebook kernel by the runner, which already holds that folder's lock
LOCK_ENV = "STS_LOCK_HELD"


@contextlib.contextmanager
def data_dir_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``<folder>/.lock`` while a stage writes the folder; a second run gets a one-line error.

    An advisory ``flock``: the kernel releases it when the holding process ends, however it ends,
    so no stale lock survives a killed run. The lock file names the holder (pid, host, command).
    A process whose parent already holds the lock (``STS_LOCK_HELD``) goes on without it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / ".lock").resolve()
    if os.environ.get(LOCK_ENV) == str(lock):
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
            raise DataDirLocked(f"{folder} is being written by {holder}; wait for that run to finish "
                                f"(or stop it) and run again") from None
        info = (f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} ({' '.join(sys.argv)[:200]})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        previous = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = str(lock)  # worker processes and kernels started from here share it
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = previous
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_update_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Wait for and hold an exclusive advisory lock on ``folder`` itself, for a short read-modify-write of a
    file in it by processes that run side by side (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_csv_atomic(df: pd.DataFrame, target: str | os.PathLike, **kwargs: Any) -> Path:
    kwargs.setdefault("index", False)
    with atomic_path(target) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(target)


def save_npy_atomic(array: np.ndarray, target: str | os.PathLike) -> Path:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return Path(target)


def write_npy_rows_atomic(target: str | os.PathLike, shape: tuple[int, ...], dtype: Any,
                          rows: Iterable[np.ndarray]) -> Path:
    """Write a ``.npy`` array row by row through a memory map (never whole in memory), atomically.

    ``rows`` must yield exactly ``shape[0]`` arrays of shape ``shape[1:]``.
    """
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        # the memory map's file is sparse: on a full disk a write through the map would kill the process
        # (SIGBUS); allocating its blocks first turns that into an OSError here, before any row is computed
        with open(tmp, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.path.getsize(tmp))
        n_rows = 0
        for n_rows, row in enumerate(rows, start=1):
            out[n_rows - 1] = row
        if n_rows != shape[0]:
            raise ValueError(f"{target}: got {n_rows} rows for shape {shape}")
        out.flush()
        del out
    return Path(target)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content; of a folder (a cell's Igor waves), of its files' names and hashes."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(q for q in path.iterdir() if q.is_file()):
            h.update(f"{p.name}\0{file_sha256(p, chunk)}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """``foo/bar.csv`` -> ``foo/bar.csv.json``; a folder artifact gets ``<folder>/params.json``."""
    artifact = Path(artifact)
    if artifact.is_dir():
        return artifact / "params.json"
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(
    artifact: str | os.PathLike,
    params: Mapping[str, Any],
    seed: int | None = None,
    inputs: Mapping[str, str | os.PathLike] | list[str | os.PathLike] | None = None,
    stage: str | None = None,
    extra: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
) -> Path:
    """Write the JSON provenance record of an artifact.

    Parameters
    ----------
    artifact
        The artifact described (file or folder).
    params
        The stage's parameters.
    seed
        The stage's seed.
    inputs
        Input files (name -> path or list of paths); each is recorded with its SHA-256, or as
        missing, so a reader can tell which inputs produced the artifact.
    stage, extra
        Stage name and any additional fields (counts, warnings).
    path
        Where to write the sidecar (default :func:`sidecar_path`).
    """
    if isinstance(inputs, (list, tuple)):
        inputs = {Path(p).name: p for p in inputs}
    hashed: dict[str, Any] = {}
    for name, p in (inputs or {}).items():
        p = Path(p)
        hashed[name] = {"path": str(p), "sha256": file_sha256(p) if p.is_file() else None}
    record = {
        "artifact": str(artifact),
        "stage": stage,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "params": _jsonable(dict(params)),
        "inputs": hashed,
        "versions": package_versions(),
    }
    if extra:
        record.update(_jsonable(dict(extra)))
    out = Path(path) if path is not None else sidecar_path(artifact)
    write_text_atomic(out, json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return out


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any]:
    return json.loads(sidecar_path(artifact).read_text())


def write_table(df: pd.DataFrame, stem: str | os.PathLike, caption: str = "", float_format: str = "{:.3f}") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md`` (a Markdown table with an optional caption) atomically."""
    stem = Path(stem)
    csv_path = write_csv_atomic(df, stem.with_suffix(".csv"))
    md = df_to_markdown(df, float_format=float_format)
    if caption:
        md = f"{caption}\n\n{md}"
    md_path = write_text_atomic(stem.with_suffix(".md"), md + "\n")
    return csv_path, md_path


def df_to_markdown(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """Markdown pipe table without the optional ``tabulate`` dependency."""
    def fmt(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)):
            return float_format.format(v)
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)
