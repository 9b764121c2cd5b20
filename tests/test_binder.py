"""binder/ (mybinder.org, repo2docker) installs what `make env` installs, with CPU-only torch.

repo2docker reads only binder/ when the folder exists (the root environment.yml is then ignored):
runtime.txt picks Python, requirements.txt is pip-installed after the repository is copied (it names
the package itself, `-e .`), and postBuild does what `make env` does after pip.
"""
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def names(reqs):
    return {re.split(r"[<>=!~\[ ;]", r.strip())[0].lower().replace("_", "-") for r in reqs}


def requirement_lines():
    lines = [l.split(" #")[0].strip() for l in (BINDER / "requirements.txt").read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def test_runtime_is_python_311():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_requirements_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = requirement_lines()
    assert any(l in ("-e .", ".") for l in lines), "binder installs the package itself"
    packages = [l for l in lines if not l.startswith(("-", "."))]
    wanted = names(project["dependencies"]) | names(project["optional-dependencies"]["lab"])
    assert names(packages) == wanted
    assert len(packages) == len(names(packages)), "a package is listed twice"


def test_torch_is_the_cpu_build_of_the_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = requirement_lines()
    assert f"--extra-index-url {CPU_INDEX}" in lines
    for name in ("torch", "torchvision"):
        pin = next(d for d in project["dependencies"] if re.match(rf"{name}==", d))
        assert f"{pin}+cpu" in lines, f"binder should pin {pin}+cpu (the CPU wheel of pyproject's pin)"


def test_postbuild_registers_kernel_and_viewer():
    post = BINDER / "postBuild"
    text = post.read_text()
    assert text.startswith("#!/bin/bash")
    assert os.access(post, os.X_OK), "postBuild must be executable (git update-index --chmod=+x binder/postBuild)"
    assert re.search(r"ipykernel install .*--name sts --display-name \"Python \(sts\)\"", text)
    assert re.search(r"jupytext-config\"? --settings-file .*overrides\.json\"? set-default-viewer python", text)
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(post)], check=True)


def test_make_env_sets_the_same_viewer():
    """`make env`/`make lab` use the same jupytext-config call as postBuild."""
    makefile = (ROOT / "Makefile").read_text()
    assert "set-default-viewer python" in makefile
    assert "--name sts" in makefile


@pytest.mark.parametrize("name", ["requirements.txt", "runtime.txt", "postBuild"])
def test_binder_files_present(name):
    assert (BINDER / name).is_file()
