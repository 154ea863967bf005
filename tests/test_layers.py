"""The layers of docs/ARCHITECTURE.md, checked by import-linter (its contracts are in pyproject.toml): the
package keeps them, and a planted import breaks each kind (upward, data reading -> building, rewards -> torch);
and the house's figures (scripts/house_figures.py): no circle, no module over 400 lines, few top-level entries."""

import json
import os
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
        ("grpo/trainer.py", "from rookworld_trl.stages.eval import report", "rookworld_trl.grpo.trainer -> rookworld_trl.stages.eval.report"),
        ("data/load.py", "from rookworld_trl.data import generate", "rookworld_trl.data.load -> rookworld_trl.data.generate"),
        ("grpo/rewards/policy.py", "import torch", "rookworld_trl.grpo.rewards.policy -> torch"),
    ],
    ids=["upward", "reading-imports-building", "rewards-import-torch"],
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


def test_the_house_has_no_circle_no_module_over_400_lines_and_few_entries():
    """scripts/house_figures.py's figures (docs/ARCHITECTURE.md quotes them): a file's imports never come back to
    it, no module outgrows a screenful of screens (but grpo/config.py: every GRPO field with its help, in one place
    as TRL's grpo_config.py), and the package's folder stays a short list."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "house_figures.py"), "--json"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    found = json.loads(done.stdout)
    assert found["circles"] == []
    code = [m for m in found["largest"] if m["module"] != "rookworld_trl.grpo.config"]
    assert code[0]["lines"] <= 400, code[0]
    assert len(found["top_level"]["code"]) + len(found["top_level"]["data"]) <= 8, found["top_level"]


# every RL option on: each adds its hooks to the step (docs/ARCHITECTURE.md, "The house in figures")
EVERY_OPTION = ["--curriculum_ratio", "0.25", "--dynamic_sampling", "true", "--value_baseline", "true",
                "--sampler_importance_sampling", "true", "--beta", "0.02", "--kl_estimator", "forward",
                "--replay_coef", "0.1", "--field_credit", "true", "--choice_credit", "0.1", "--adaptive_kl", "true"]  # fmt: skip


@pytest.mark.slow
def test_the_grpo_stage_enters_each_data_module_from_two_places_and_climbs_back_up_eight_times(tmp_path):
    """scripts/call_trace.py profiles a whole 2-step GRPO run from main(argv) with every RL option on."""
    args = ["--config", "recipes/grpo_tiny_cpu.yaml", "--max_steps", "2", "--eval_samples", "0",
            "--eval_every_steps", "0", "--save_strategy", "no", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run([sys.executable, "scripts/call_trace.py", "--json", *args, *EVERY_OPTION], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(figures["entries"]) >= 8 and max(figures["entries"].values()) <= 2, figures["entries"]
    # 8: the six of docs/ARCHITECTURE.md's fifth round and two paths the stage-5 model's steps reach (refill, micro_step)
    assert 1 <= len(figures["backs"]) <= 8, figures["backs"]
