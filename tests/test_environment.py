"""environment.yml (Binder/conda) installs the same packages as pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def names(reqs):
    return {re.split(r"[<>=!~\[ ;]", r.strip())[0].lower().replace("_", "-") for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python=3.11") for d in deps)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(p.startswith("-e .") or p.startswith(".") for p in pip), "environment.yml installs the package itself"
    listed = names([p for p in pip if not p.startswith((".", "-e"))])
    wanted = names(project["dependencies"]) | names(project["optional-dependencies"]["lab"])
    assert listed == wanted
    assert "torch==2.14.1" in project["dependencies"] and "torchvision==0.29.1" in project["dependencies"]
    assert "torch==2.14.1" in pip and "torchvision==0.29.1" in pip
