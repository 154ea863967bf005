"""pyproject.toml's lower bounds are true. Default tier: every declared floor satisfies what the installed HF
stack itself requires of that package (a floor below trl's or transformers' own cannot be installed with them).
Slow tier: scripts/check_floors.sh installs every dependency at exactly its floor in a fresh venv and runs the
default tier and a 3-step `rookworld train` there.

    .venv/bin/python -m pytest tests/test_floors.py            # the metadata check
    .venv/bin/python -m pytest -m slow tests/test_floors.py    # the whole floor run (10-20 minutes)
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def floors() -> dict[str, str]:
    """{canonical name: floor} of [project].dependencies and the dev extra, as check_floors.sh reads them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name, floor = re.match(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([^,;\s]+)", req).groups()
        found[canonicalize_name(name)] = floor
    return found


def test_every_dependency_has_a_floor_and_each_floor_meets_the_stacks_own_requirements():
    ours = floors()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert len(ours) == len(project["dependencies"]) + len(project["optional-dependencies"]["dev"])
    clashes = []
    for package in ("trl", "transformers", "accelerate", "datasets", "peft"):
        for text in metadata.requires(package) or []:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            applies = req.marker is None or req.marker.evaluate({"extra": ""})
            if name in ours and applies and not req.specifier.contains(ours[name], prereleases=True):
                clashes.append(
                    f"{package} {metadata.version(package)} needs {req}, our floor is {ours[name]}"
                )
    assert not clashes, clashes


@pytest.mark.slow
def test_the_floors_install_together_and_pass_the_default_tier(tmp_path):
    done = subprocess.run(["bash", "scripts/check_floors.sh", str(tmp_path / "venv")], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "check_floors: PASS" in done.stdout
    for name, floor in floors().items():  # the printed table: every package at its floor
        spelt = re.escape(name).replace(r"\-", "[-_]")  # pip prints import-linter or import_linter
        assert re.search(rf"(?i)\b{spelt}\s+floor {re.escape(floor)}\s", done.stdout), (name, floor)
