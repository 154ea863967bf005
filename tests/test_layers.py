"""The layers of docs/ARCHITECTURE.md, checked by import-linter (its contracts are in pyproject.toml): the
package keeps them, and a planted upward import (grpo -> eval) breaks them."""

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


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(
        ROOT / "rookworld_trl", tmp_path / "rookworld_trl", ignore=shutil.ignore_patterns("assets")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    trainer = tmp_path / "rookworld_trl" / "grpo" / "trainer.py"
    trainer.write_text(trainer.read_text() + "\nfrom rookworld_trl.eval import report  # noqa: E402\n")
    result = lint(tmp_path)
    assert result.returncode == 1
    assert "rookworld_trl.grpo.trainer -> rookworld_trl.eval.report" in result.stdout


def test_the_house_has_no_circle_no_module_over_400_lines_and_few_entries():
    """scripts/house_figures.py's figures (docs/ARCHITECTURE.md quotes them): a file's imports never come back to
    it, no module outgrows a screenful of screens, and the package's folder stays a short list."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from house_figures import figures

    found = figures()
    assert found["circles"] == []
    assert found["largest"][0]["lines"] <= 400, found["largest"][0]
    assert len(found["top_level"]["code"]) <= 9, found["top_level"]
