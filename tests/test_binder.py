"""binder/ (mybinder.org, repo2docker) installs the pins of requirements/lock.txt, with CPU-only torch.

repo2docker reads only binder/ when the folder exists (the root environment.yml is then ignored):
runtime.txt picks Python, requirements.txt is pip-installed after the repository is copied (it names
the package itself, `-e .`), and postBuild does what `make env` does after pip. requirements.txt is
generated from the lock by `make lock` (tools/sync_pins.py); tests/test_environment.py checks that a
drift is caught.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.test_environment import lock_pins, make_plan, sync_pins

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def requirement_lines():
    lines = [l.split(" #")[0].strip() for l in (BINDER / "requirements.txt").read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def binder_pins():
    pins = {}
    for line in requirement_lines():
        if line.startswith(("-", ".")):
            continue
        m = sync_pins.PIN.match(line)
        assert m, f"binder/requirements.txt: {line!r} is not an exact pin"
        name = canonicalize_name(m["name"])
        assert name not in pins, f"{name} is listed twice"
        pins[name] = m["version"]
    return pins


def test_runtime_is_python_311():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def test_requirements_are_generated_from_the_lock():
    text = (BINDER / "requirements.txt").read_text()
    assert text.startswith("# Generated from requirements/lock.txt by `make lock`")
    assert requirement_lines()[-1] == "-e .", "binder installs the package itself, last"
    assert "--hash" not in text


def test_every_pin_is_the_locks_and_torch_is_the_cpu_build():
    pins, lock = binder_pins(), lock_pins()
    assert f"--extra-index-url {CPU_INDEX}" in requirement_lines()
    for name in ("torch", "torchvision"):
        assert pins[name] == f"{lock[name]}+cpu", f"binder should pin {name}=={lock[name]}+cpu"
    others = {n: v for n, v in pins.items() if n not in ("torch", "torchvision")}
    assert others == {n: v for n, v in lock.items() if n not in ("torch", "torchvision") and not sync_pins.cuda_only(n)}


def test_no_cuda_only_package():
    cuda = [n for n in binder_pins() if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    assert not cuda, cuda


def test_postbuild_registers_kernel_and_viewer():
    post = BINDER / "postBuild"
    text = post.read_text()
    assert text.startswith("#!/bin/bash")
    assert os.access(post, os.X_OK), "postBuild must be executable (git update-index --chmod=+x binder/postBuild)"
    assert re.search(r"ipykernel install .*--name sts --display-name \"Python \(sts\)\"", text)
    assert re.search(r"jupytext-config\"? --settings-file .*overrides\.json\"? set-default-viewer python", text)
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(post)], check=True)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_env_sets_the_same_viewer():
    """`make env` registers the `sts` kernel and sets jupytext's viewer, as postBuild does."""
    plan = make_plan("env")
    assert any("-m ipykernel install --sys-prefix --name sts " in line for line in plan)
    assert any("jupytext-config --settings-file" in line and line.removesuffix(" >/dev/null").endswith("set-default-viewer python")
               for line in plan)
    post = (BINDER / "postBuild").read_text()
    assert "set-default-viewer python" in post and "--name sts" in post


@pytest.mark.parametrize("name", ["requirements.txt", "runtime.txt", "postBuild"])
def test_binder_files_present(name):
    assert (BINDER / name).is_file()
