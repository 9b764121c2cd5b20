"""requirements/lock.txt pins every dependency of pyproject.toml within its ranges; environment.yml (conda)
pins exactly the lock's versions; tools/sync_pins.py --check catches a drift and names the package."""
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
SYNC = ROOT / "tools" / "sync_pins.py"
# every extra of pyproject.toml is locked (`make env` installs the whole lock)
EXTRAS = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def load_sync():
    spec = importlib.util.spec_from_file_location("sync_pins", SYNC)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sync_pins = load_sync()


def project_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def lock_pins():
    return sync_pins.lock_pins(LOCK)


def run_check(*args):
    return subprocess.run([sys.executable, str(SYNC), "--check", *map(str, args)], capture_output=True, text=True)


def test_lock_pins_every_dependency_within_pyproject_ranges():
    pins = lock_pins()
    for req in project_requirements():
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({req}) is not in requirements/lock.txt; run `make lock`"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), \
            f"the lock pins {name}=={pins[name]}, outside pyproject.toml's {req}; run `make lock`"


def test_lock_is_complete_hashed_and_machine_independent():
    text = LOCK.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    pinned = [e for e in entries if sync_pins.PIN.match(e)]
    assert len(pinned) == len(lock_pins()) > 100
    for entry in pinned:
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"
    assert not re.search(r"^\s*(--index-url|--extra-index-url|--find-links|-f )", text, re.M), \
        "the lock names an index or wheel folder (machine specific); `make lock` leaves them out"
    assert "file://" not in text and "/opt/" not in text


def make_plan(*args: str) -> list[str]:
    """The commands ``make -n`` would run for a fresh virtual environment (nothing is installed)."""
    r = subprocess.run(["make", "--no-print-directory", "-n", *args, "VENV=/nonexistent/venv"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=True)
    return r.stdout.replace("\\\n", " ").splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_env_installs_exactly_the_lock():
    plan = make_plan("env")
    pip = [line for line in plan if " -m pip install " in line]
    # everything from the lock, hash-checked and without resolving; then the package itself, again without deps
    assert pip[1].endswith("pip install --quiet --require-hashes --no-deps -r requirements/lock.txt"), pip
    assert pip[2].endswith("pip install --quiet --no-deps --no-build-isolation -e ."), pip
    assert len(pip) == 3, "nothing else is installed"
    def pip_compile(plan):  # the command that runs pip-compile (not the check that it is installed)
        return next(line for line in plan if line.split()[0].endswith("/pip-compile")).split()

    compile_ = pip_compile(make_plan("lock", "UPGRADE=1"))
    for flag in ("--generate-hashes", "--allow-unsafe", "--no-emit-index-url", "--no-emit-find-links", "--upgrade"):
        assert flag in compile_, flag
    assert compile_[compile_.index("-o") + 1] == "requirements/lock.txt"
    assert "--upgrade" not in pip_compile(make_plan("lock"))
    assert any(line.endswith("tools/sync_pins.py --lock requirements/lock.txt") for line in make_plan("lock"))


def test_environment_yml_pins_the_lock_without_cuda():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip[-1] == "-e .", "environment.yml installs the package itself"
    listed = {}
    for line in pip[:-1]:
        m = sync_pins.PIN.match(line)
        assert m, f"environment.yml: {line!r} is not an exact pin"
        listed[canonicalize_name(m["name"])] = m["version"]
    pins = lock_pins()
    expected = {n: v for n, v in pins.items() if not sync_pins.cuda_only(n)}
    assert listed == expected
    assert listed["torch"] == pins["torch"] == "2.14.1" and listed["torchvision"] == "0.29.1"
    assert not [n for n in listed if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    assert {"nvidia-cublas", "triton"} <= set(pins), "the lock (Linux, CUDA torch) has the CUDA packages"


def test_generated_files_agree_with_the_lock():
    r = run_check()
    assert r.returncode == 0, r.stderr


def copies(tmp_path):
    out = {}
    for name, src in (("lock", LOCK), ("binder", ROOT / "binder" / "requirements.txt"),
                      ("environment", ROOT / "environment.yml")):
        out[name] = tmp_path / src.name
        out[name].write_text(src.read_text())
    return out


def check_args(files):
    return ["--lock", files["lock"], "--binder", files["binder"], "--environment", files["environment"]]


def test_an_unchanged_copy_passes(tmp_path):
    files = copies(tmp_path)
    assert run_check(*check_args(files)).returncode == 0


@pytest.mark.parametrize("edit", ["environment", "binder"])
def test_a_drifted_pin_fails_naming_the_package(tmp_path, edit):
    files = copies(tmp_path)
    scipy = lock_pins()["scipy"]
    text = files[edit].read_text()
    assert f"scipy=={scipy}\n" in text
    files[edit].write_text(text.replace(f"scipy=={scipy}\n", "scipy==1.10.0\n"))
    r = run_check(*check_args(files))
    assert r.returncode == 1
    assert f"scipy==1.10.0, the lock pins scipy=={scipy}" in r.stderr
    assert str(files[edit]) in r.stderr and "make lock" in r.stderr


def test_a_changed_lock_fails_naming_the_package(tmp_path):
    files = copies(tmp_path)
    numba = lock_pins()["numba"]
    files["lock"].write_text(files["lock"].read_text().replace(f"\nnumba=={numba} ", "\nnumba==0.99.0 "))
    r = run_check(*check_args(files))
    assert r.returncode == 1
    assert f"numba=={numba}, the lock pins numba==0.99.0" in r.stderr
    assert str(files["binder"]) in r.stderr and str(files["environment"]) in r.stderr
    # the generator then rewrites both, and they pass
    subprocess.run([sys.executable, str(SYNC), *map(str, check_args(files))], check=True, capture_output=True)
    assert run_check(*check_args(files)).returncode == 0
    assert "numba==0.99.0\n" in files["binder"].read_text()


def test_a_dropped_or_added_package_is_named(tmp_path):
    files = copies(tmp_path)
    text = files["binder"].read_text()
    seaborn = lock_pins()["seaborn"]
    files["binder"].write_text(text.replace(f"seaborn=={seaborn}\n", "") + "leftpad==1.0\n")
    r = run_check(*check_args(files))
    assert r.returncode == 1
    assert f"seaborn missing (the lock pins seaborn=={seaborn})" in r.stderr
    assert "leftpad==1.0 is not in the lock" in r.stderr
