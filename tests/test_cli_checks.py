"""The CLI's checks before launch, part 1: a mistake in a reward module, a recipe's field types, a keypress (Ctrl-C) or a
byte-order mark, made as a new user makes it (tests/cli_user.py), answered by one line that names the file or
field, the problem and the fix, a nonzero exit and no traceback, before accelerate starts (no launch line). Part
2 (model names, data, flags, commands, the README): tests/test_cli_mistakes.py.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_cli_checks.py -q
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from cli_user import (
    GOOD,
    LAUNCHED,
    RECIPE,
    command,
    train_refuses,
    user_env,
)

from rookworld_trl.data.files import check_source
from rookworld_trl.stages import preflight
from rookworld_trl.stages import recipe as stage_recipe

pytestmark = pytest.mark.integration  # a subprocess per case


# ---- 1, 3 and 9. your own reward: a wrong signature, a syntax error, a missing module, a non-function ----

REWARDS = {
    "rw_sig.py": "def b(x):\n    return [1.0]\n",
    "rw_syntax.py": "def b(prompts, completions, **kwargs)\n    return [1.0 for _ in completions]\n",
    "rw_value.py": "b = 3\n",
    "rw_raises.py": "raise RuntimeError('no config here')\n",
}


@pytest.mark.parametrize(
    "name, says",
    [
        ("rw_sig.b", ("'rw_sig.b' takes (x)", "def b(prompts, completions, **kwargs)")),
        ("rw_syntax.b", ("rw_syntax.py:1: syntax error", "fix that line")),
        ("rw_missing.b", ("no module named 'rw_missing'", "rw_missing.py (or rw_missing/)", "PYTHONPATH")),
        ("rw_value.b", ("'rw_value.b' is not callable (it is the int 3)", "def b(prompts, completions")),
        ("rw_raises.b", ("importing 'rw_raises' raised RuntimeError: no config here",)),
        ("rw_sig.nope", ("module 'rw_sig' has no 'nope'",)),
        ("polcy_reward", ("unknown reward function 'polcy_reward' (did you mean policy_reward?)",)),
    ],
)
def test_a_reward_function_is_checked_before_accelerate_starts(name, says, tmp_path):
    for file, text in REWARDS.items():
        (tmp_path / file).write_text(text)
    train_refuses(
        tmp_path, "--reward_funcs", "policy_reward", name, "--reward_weights", "1", "1", says=(name, *says)
    )


def test_reward_signatures_trl_can_call_pass():
    from rookworld_trl.grpo.rewards.functions import check_signature

    def keywords(prompts, completions, **kwargs): ...

    def columns(completions, task, **kwargs): ...  # a dataset column by name

    def only_kwargs(**kwargs): ...

    for func in (keywords, columns, only_kwargs):
        check_signature(func.__name__, func)
    with pytest.raises(preflight.UserError, match="TRL calls it with the keywords"):
        check_signature("positional", lambda prompts, completions, /, **kwargs: None)


# ---- 2. every recipe field against its dataclass type; TRL's batch rule; both before accelerate starts ----


@pytest.mark.parametrize(
    "line, says",
    [
        ("num_generations: [8, 4]", "num_generations must be a whole number (or null), got [8, 4]; e.g. `num_generations: 8`"),
        ("num_generations: eight", "num_generations must be a whole number (or null), got 'eight'"),
        ("num_generations: 128", "x processes 1 = 64 completions per generation round, which must be whole groups of num_generations (128)"),
        ("lr_scheduler_type: cosin", "lr_scheduler_type must be one of linear, cosine"),
        ("reward_funcs: policy_reward", "reward_funcs must be a list ([...]) of strings, got 'policy_reward'"),
        ("bf16: maybe", "bf16 must be true or false (or null), got 'maybe'"),
        ("max_grad_norm: [1]", "max_grad_norm must be a number, got [1]"),
    ],
)  # fmt: skip
def test_every_recipe_field_is_type_checked(line, says, tmp_path):
    recipe = tmp_path / "mine.yaml"
    kept = [row for row in RECIPE.read_text().splitlines() if not row.startswith(line.split(":")[0] + ":")]
    recipe.write_text("\n".join([*kept, line]) + "\n")
    where = () if "whole groups" in says else (f"recipe {recipe}: ",)  # the batch rule: no one field
    train_refuses(tmp_path, "--config", str(recipe), says=(*where, says))


def test_flags_are_type_checked_and_the_batch_rule_counts_processes(tmp_path):
    train_refuses(
        tmp_path, "--num_generations", "8", "4", says=("--num_generations takes one value, got 8 4",)
    )
    train_refuses(
        tmp_path, "--eval_strategy", "step", says=("one of no, steps, epoch", "(did you mean steps?)")
    )
    line = train_refuses(tmp_path, "--num_generations", "7", says=("whole groups of num_generations (7)",))
    assert "per_device_train_batch_size to a multiple of 7" in line
    config = {"per_device_train_batch_size": 4, "num_generations": 8, "gradient_accumulation_steps": 1,
              "steps_per_generation": None, "generation_batch_size": None}  # fmt: skip
    preflight.check_batch(config, processes=2)  # 4 x 2 processes: one group of 8
    with pytest.raises(preflight.UserError, match="processes 1 = 4 completions"):
        preflight.check_batch(config, processes=1)


def test_the_fields_file_holds_types_defaults_and_bounds():
    fields = stage_recipe.fields_of("train")
    assert fields["num_generations"] == ["int|None", 8, ">= 2 (a group needs two completions to compare)"]
    assert fields["reward_funcs"][0] == "list[str]" and fields["eval_samples"][2] == ">= 0 (0: no final eval)"
    assert fields["eval_strategy"][0] == "{no,steps,epoch}" and fields["learning_rate"][0] == "float"


# ---- 4. Ctrl-C from the first line of `rookworld` to the trainer's: one line, exit 130 ----


def interrupt_after(argv: list[str], cwd: Path, marker: str, env: dict | None = None) -> tuple[int, str]:
    """Start `rookworld ARGV`, send SIGINT (as a terminal's Ctrl-C) once `marker` is on its stdout; (exit code,
    stderr). SIGINT at its default in the child, whatever the test runner's is."""
    proc = subprocess.Popen(
        [*command(), *argv], cwd=cwd, env=env or user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    seen = ""
    for line in proc.stdout:
        seen += line
        if marker in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert marker in seen, (seen + out)[-2000:]
    assert "Traceback" not in out + err, err[-3000:]
    return proc.returncode, err


def test_ctrl_c_during_the_checks_is_one_line(tmp_path):
    (tmp_path / "rw_slow.py").write_text(
        "import time\nprint('importing rw_slow', flush=True)\ntime.sleep(60)\n"
        "def b(prompts, completions, **kwargs):\n    return [0.0 for _ in completions]\n"
    )
    code, err = interrupt_after(
        ["train", "--reward_funcs", "policy_reward", "rw_slow.b", "--reward_weights", "1", "1",
         "--output_dir", str(tmp_path / "run")], tmp_path, "importing rw_slow",
    )  # fmt: skip
    assert code == 130 and err.strip().splitlines() == [
        "rookworld: interrupted (Ctrl-C) before training began: nothing to save"
    ]
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_the_stage_imports_stops_the_launch_in_one_line(tmp_path):
    out = tmp_path / "run"
    code, err = interrupt_after(["train", "--output_dir", str(out), "--max_steps", "1"], tmp_path, LAUNCHED)
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    # the launcher's start, or the stage's imports: either way the launch stops, nothing trains
    assert code == 130 and len(lines) == 1 and lines[0].startswith("rookworld"), lines
    assert "before training began" in lines[0] or "interrupted" in lines[0], lines
    assert not (out / "final").exists()


# ---- 5. a UTF-8 byte-order mark (Windows editors write one) is no part of line 1 ----


@pytest.mark.parametrize("name", ["bom.txt", "bom.jsonl"])
def test_a_byte_order_mark_is_read_past(name, tmp_path, monkeypatch, capsys):
    from rookworld_trl.data.commands import main as data_main  # in this process: a file read, not a refusal

    path = tmp_path / name
    line = GOOD if name.endswith(".txt") else json.dumps({"text": GOOD})
    path.write_bytes(b"\xef\xbb\xbf" + f"{line}\n{line}\n".encode())
    monkeypatch.chdir(tmp_path)
    assert data_main(["load", name]) == 0 and "P: 2 rows" in capsys.readouterr().out
    check_source(str(path), skip_bad_rows=False)  # `rookworld train`'s check of the file
