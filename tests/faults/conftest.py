"""Fixtures of the fault-injection tests: private copies of the session's tiny demo folder, byte snapshots."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def demo_copy(tiny_demo, tmp_path) -> Path:
    """A private copy of the session's tiny demo data folder (the session one is never modified)."""
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_demo, data_dir, symlinks=False)
    (data_dir / "demo" / ".lock").unlink(missing_ok=True)
    return data_dir


def snapshot(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    """``name -> bytes`` of the plain files directly in ``folder`` matching ``pattern`` (lock files left out)."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob(pattern)) if p.is_file() and p.name != ".lock"}


def put_temporary_files_on_a_full_disk(monkeypatch, prefix: str = "") -> None:
    """New temporary files whose name starts with ``prefix`` become links to /dev/full: writes get a real ENOSPC."""
    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        if Path(path).name.startswith(prefix):
            os.close(fd)
            os.unlink(path)
            os.symlink("/dev/full", path)
            fd = os.open(path, os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", full_disk)
