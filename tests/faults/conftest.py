"""Fixtures of the fault-injection tests: private copies of the session's tiny demo folder, byte snapshots."""
from __future__ import annotations

import shutil
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
