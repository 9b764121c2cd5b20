"""Write binder/requirements.txt and environment.yml from the pins of requirements/lock.txt (or check them).

    python tools/sync_pins.py           # what `make lock` runs after pip-compile
    python tools/sync_pins.py --check   # exit 1 naming every package whose pin drifted from the lock

The lock (pip-compile, hash-checked, for Linux/CPython 3.11) is the one list of versions; the two files
derived from it pin exactly the same versions, with two differences that keep them installable off the
lock's platform: the CUDA-only packages (``nvidia-*``, ``cuda-*``, ``triton``) are left out, and Binder,
which has no GPU, gets torch/torchvision as the CPU builds (``+cpu``) of the locked versions from the
PyTorch CPU wheel index. Neither carries hashes (the ``+cpu`` wheels' are not in the lock).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
BINDER = ROOT / "binder" / "requirements.txt"
ENVIRONMENT = ROOT / "environment.yml"

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_BUILDS = ("torch", "torchvision")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;#]+)")
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<spec>[^\\#]*)")

GENERATED = "Generated from requirements/lock.txt by `make lock` (tools/sync_pins.py --check: drift); do not edit."


def cuda_only(name: str) -> bool:
    """Packages only the CUDA builds of torch need (and only on Linux)."""
    name = canonicalize_name(name)
    return name.startswith(("nvidia-", "cuda-")) or name == "triton"


def read_pins(text: str) -> dict[str, str]:
    """``canonical name -> version`` of the ``name==version`` lines of a requirements text (the lock's order)."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        m = PIN.match(line.strip().removeprefix("- "))
        if m:
            pins[canonicalize_name(m["name"])] = m["version"]
    return pins


def read_requirements(text: str) -> dict[str, str]:
    """``canonical name -> what follows the name`` (``==1.2``, ``>=1.0``, empty) of every requirement line."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("- "):  # environment.yml's list items
            line = line[2:].strip()
        m = REQUIREMENT.match(line)
        if m and not line.startswith(("name:", "channels:", "dependencies:", "pip:", "python=")) \
                and m["name"] not in ("pip", "conda-forge"):
            found[canonicalize_name(m["name"])] = m["spec"].strip().replace(" ", "")
    return found


def lock_pins(lock: str | Path = LOCK) -> dict[str, str]:
    """The lock's pins, by canonical name."""
    return read_pins(Path(lock).read_text())


def portable_pins(pins: dict[str, str]) -> dict[str, str]:
    """The pins without the CUDA-only packages, sorted by name."""
    return {n: v for n, v in sorted(pins.items()) if not cuda_only(n)}


def binder_pins(pins: dict[str, str]) -> dict[str, str]:
    """Binder's pins: the portable ones, torch/torchvision as their ``+cpu`` builds."""
    return {n: (f"{v}+cpu" if n in CPU_BUILDS and "+" not in v else v) for n, v in portable_pins(pins).items()}


def binder_text(pins: dict[str, str]) -> str:
    lines = [
        f"# {GENERATED}",
        "# mybinder.org / repo2docker: every pin of the lock except the CUDA-only packages (nvidia-*, cuda-*, triton),",
        "# torch/torchvision as the CPU builds of the locked versions from the PyTorch CPU wheel index (Binder has",
        "# no GPU; the CUDA wheels would not fit its image). No hashes: the +cpu wheels' are not in the lock.",
        f"--extra-index-url {CPU_INDEX}",
        *(f"{n}=={v}" for n, v in binder_pins(pins).items()),
        "# the package itself (repo2docker installs a requirements file that names the repository after copying it)",
        "-e .",
    ]
    return "\n".join(lines) + "\n"


def environment_text(pins: dict[str, str]) -> str:
    lines = [
        f"# {GENERATED}",
        "# The conda route to the environment of `make env`: the lock's pins except the CUDA-only packages",
        "# (nvidia-*, cuda-*, triton; on Linux pip adds the ones torch's own pins name). repo2docker ignores this",
        "# file while binder/ exists.",
        "name: sts",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        *(f"      - {n}=={v}" for n, v in portable_pins(pins).items()),
        "      - -e .",
    ]
    return "\n".join(lines) + "\n"


def drift(path: Path, expected_text: str, expected: dict[str, str]) -> list[str]:
    """What differs between ``path`` and the text generated from the lock, package by package."""
    if not path.exists():
        return [f"{path}: missing"]
    text = path.read_text()
    if text == expected_text:
        return []
    found = read_requirements(text)
    problems = []
    for name, version in expected.items():
        if name not in found:
            problems.append(f"{path}: {name} missing (the lock pins {name}=={version})")
        elif found[name] != f"=={version}":
            problems.append(f"{path}: {name}{found[name]}, the lock pins {name}=={version}")
    problems += [f"{path}: {name}{found[name]} is not in the lock" for name in found if name not in expected]
    return problems or [f"{path}: the pins agree with the lock, but not the rest of the generated text"]


def targets(pins: dict[str, str], binder: Path, environment: Path) -> list[tuple[Path, str, dict[str, str]]]:
    return [(binder, binder_text(pins), binder_pins(pins)), (environment, environment_text(pins), portable_pins(pins))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock", type=Path, default=LOCK)
    ap.add_argument("--binder", type=Path, default=BINDER)
    ap.add_argument("--environment", type=Path, default=ENVIRONMENT)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 naming each drifted package")
    args = ap.parse_args(argv)
    pins = lock_pins(args.lock)
    if not pins:
        print(f"{args.lock}: no name==version pins", file=sys.stderr)
        return 1
    todo = targets(pins, args.binder, args.environment)
    if args.check:
        problems = [p for path, text, expected in todo for p in drift(path, text, expected)]
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"they differ from {args.lock}; run `make lock` (or python tools/sync_pins.py)", file=sys.stderr)
            return 1
        return 0
    for path, text, _ in todo:
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(f".{path.name}.part")
            tmp.write_text(text)
            tmp.replace(path)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
