"""The layers of docs/ARCHITECTURE.md, checked by import-linter (its contracts are in pyproject.toml): the
package keeps them, and a planted import breaks each kind (upward, data reading -> building, rewards -> torch,
an import circle)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
]

pytestmark = pytest.mark.integration  # a subprocess (the lint runs)


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )  # fmt: skip


def test_the_package_keeps_its_layers():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        ("grpo/trainer.py", "from rookworld_trl.stages.eval import charts", "rookworld_trl.grpo.trainer -> rookworld_trl.stages.eval.charts"),
        ("data/load.py", "from rookworld_trl.data import generate", "rookworld_trl.data.load -> rookworld_trl.data.generate"),
        ("grpo/rewards/policy.py", "import torch", "rookworld_trl.grpo.rewards.policy -> torch"),
        ("grpo/config.py", "from rookworld_trl.grpo import trainer", "No cycles are allowed in rookworld_trl.grpo."),
    ],
    ids=["upward", "reading-imports-building", "rewards-import-torch", "circle"],
)  # fmt: skip
def test_a_planted_import_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(
        ROOT / "rookworld_trl", tmp_path / "rookworld_trl", ignore=shutil.ignore_patterns("assets")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    planted = tmp_path / "rookworld_trl" / module
    planted.write_text(planted.read_text() + f"\n{line}  # noqa: E402\n")
    result = lint(tmp_path)
    assert result.returncode == 1
    assert broken in result.stdout
