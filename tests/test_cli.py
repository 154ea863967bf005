"""The `rookworld` commands as a user types them, with tiny flags, bad inputs and `--help`; each answer checked as
a demanding user would (one line naming the problem and the fix, exit code 2,
nothing written; a finished run is not retrained; ...).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_cli.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tiny_grpo import make_trainer

from rookworld_trl.common.entry import run_stage
from rookworld_trl.stages import grpo as grpo_stage
from rookworld_trl.stages import sft

ROOT = Path(__file__).resolve().parent.parent
RECIPE = str(ROOT / "recipes" / "grpo_tiny_cpu.yaml")
SFT_RECIPE = str(ROOT / "recipes" / "sft_embedded_cpu.yaml")


def one_error_line(capsys, command: str) -> str:
    """The stage's stderr, which must be one `rookworld COMMAND: error: ...` line besides progress bars."""
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.strip() and "%|" not in line]  # progress bars are no error
    assert len(err) == 1 and err[0].startswith(f"rookworld {command}: error: "), err
    return err[0]


def train_error(tmp_path, capsys, *flags: str) -> str:
    """`rookworld train FLAGS` in this process (the stage under the launcher): exit 2, one line, nothing written."""
    out = tmp_path / "run"
    argv = ([] if "--config" in flags else ["--config", RECIPE]) + ["--output_dir", str(out), *flags]
    assert run_stage("train", grpo_stage.main, argv) == 2
    assert not out.exists()
    return one_error_line(capsys, "train")


# ---- 1. re-running a finished run trains nothing and says how to start over; an interrupted one resumes ----


def test_cpu_recipe_resumes_automatically(tmp_path):
    script, args, _ = grpo_stage.parse(["--config", RECIPE, "--output_dir", str(tmp_path / "run")])
    assert args.resume_from_checkpoint == "auto"


def test_finished_run_is_not_retrained_even_without_auto(model_dir, tmp_path, capsys):
    save = dict(save_strategy="steps", save_steps=1)
    assert grpo_stage.train(make_trainer(model_dir, tmp_path, **save)) == 0
    weights = (tmp_path / "final" / "model.safetensors").read_bytes()
    # item 10: the run folder's README.md is our model card, not TRL's "fine-tuned version of [None]"
    assert (tmp_path / "README.md").read_text() == (tmp_path / "final" / "README.md").read_text()
    again = make_trainer(model_dir, tmp_path, **save)  # no resume_from_checkpoint: still not retrained
    assert grpo_stage.train(again) == 0 and again.state.global_step == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "is finished" in line]
    assert len(said) == 1 and str(tmp_path / "final") in said[0] and "--output_dir" in said[0]
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == weights


# ---- 2. counts that cannot be meant ----


@pytest.mark.parametrize(
    "name, value",
    [
        ("max_steps", "-5"),
        ("max_steps", "0"),
        ("per_device_train_batch_size", "0"),
        ("learning_rate", "-0.0001"),
    ],
)
def test_impossible_counts_are_one_line(name, value, tmp_path, capsys):
    line = train_error(tmp_path, capsys, f"--{name}={value}")
    assert name in line and value in line


def test_sft_max_steps_below_one_is_one_line(tmp_path, capsys):
    out = tmp_path / "sft"
    assert (
        run_stage("sft", sft.main, ["--config", SFT_RECIPE, "--max_steps=-5", "--output_dir", str(out)]) == 2
    )
    assert "max_steps" in one_error_line(capsys, "sft") and not out.exists()


# ---- 3. `rookworld sft` with no arguments: a short SFT on the embedded model and data ----


def test_sft_default_recipe_needs_nothing_made_or_downloaded(tmp_path, capsys):
    from rookworld_trl.stages.cli import COMMANDS

    recipe = str(ROOT / COMMANDS["sft"][2])
    out = tmp_path / "sft"
    tiny = [
        "--max_steps",
        "1",
        "--max_train_samples",
        "16",
        "--max_eval_samples",
        "8",
        "--eval_strategy",
        "no",
    ]
    tiny += ["--save_strategy", "no", "--format_check_samples", "2", "--report_to", "none"]
    tiny += ["--early_stopping_patience", "0", "--load_best_model_at_end", "false"]
    assert run_stage("sft", sft.main, ["--config", recipe, "--output_dir", str(out), *tiny]) == 0
    assert (out / "model.safetensors").is_file() and "held-out P: prompts" in capsys.readouterr().out


def test_missing_local_dataset_hint_says_how_to_make_it(monkeypatch):
    import datasets

    from rookworld_trl.data.load import load_rookworld_dataset
    from rookworld_trl.data.rows import DataSourceError

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataSourceError, match=r"rookworld data generate --out data/no_such_dir"):
        load_rookworld_dataset("data/no_such_dir")


# ---- 4. a dataset_name that holds no P:/A: rows: what it holds and what is expected ----

BAD_DATA = {"empty.txt": b"", "weights.bin": bytes(range(256)) * 8, "table.csv": b"fen,move\nabc,e2e4\n"}


@pytest.mark.parametrize("name", BAD_DATA)
def test_bad_dataset_path_is_explained(name, tmp_path, capsys):
    data = tmp_path / name
    data.write_bytes(BAD_DATA[name])
    line = train_error(tmp_path, capsys, "--dataset_name", str(data))
    if BAD_DATA[name]:  # the first malformed line, named, and the two fixes
        assert line.startswith(f"rookworld train: error: {data}:1: ") and "pass --skip_bad_rows" in line
        line = train_error(tmp_path, capsys, "--dataset_name", str(data), "--skip_bad_rows", "true")
    assert f"{data} (split 'train') holds no P:/A: rows" in line and "rookworld data load" in line
    assert ("0 lines" if not BAD_DATA[name] else "malformed (") in line


def test_an_empty_split_of_a_generated_dir_names_the_split_flags(tmp_path):
    """A generated dir may hold a split of no rows (the tactics data's validation split): datasets' parquet
    builder fails on such a file, so it loads as an empty table and the loader names the split flags."""
    import pyarrow.parquet as pq

    from rookworld_trl.data.files import DataSourceError
    from rookworld_trl.data.load import load_rookworld_dataset

    tactics = ROOT / "rookworld_trl" / "assets" / "tactics"
    rows = pq.read_table(tactics / "train.parquet").slice(0, 8)
    pq.write_table(rows, tmp_path / "train.parquet")
    pq.write_table(rows.slice(0, 0), tmp_path / "validation.parquet")
    assert len(load_rookworld_dataset(tmp_path, split="train")) == 8
    with pytest.raises(DataSourceError, match="its 'validation' split has no rows; name another split"):
        load_rookworld_dataset(tmp_path, split="validation")


# ---- 10. `data audit` of a source with nothing to audit fails ----


@pytest.mark.parametrize("name", ["empty.txt", "table.csv"])
def test_audit_of_nothing_exits_nonzero(name, tmp_path, capsys):
    from rookworld_trl.data import commands

    data = tmp_path / name
    data.write_bytes(BAD_DATA[name])
    assert run_stage("data", commands.main, ["audit", str(data), "--max-lines", "10", "--no-progress"]) == 2
    assert "nothing audited" in one_error_line(capsys, "data")


# ---- 5. --help: what a user sets, with the recipe's values, at once; --help_all: every field ----


def test_train_help_is_short_fast_and_shows_the_recipe_values(capsys, monkeypatch):
    import time

    from rookworld_trl.stages.cli import main

    monkeypatch.setenv("COLUMNS", "100")  # the help wraps to the terminal (80-100 columns): count it at 100

    start = time.perf_counter()
    assert main(["train", "--max_steps", "7", "--help"]) == 0
    assert time.perf_counter() - start < 2
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert len(lines) < 30 and "--config" in lines[3] and "recipes/grpo_tiny_cpu.yaml" in lines[3]
    values = {line.split()[0]: line.split()[1] for line in lines if line.startswith("  --")}
    recipe = yaml.safe_load((ROOT / "recipes" / "grpo_tiny_cpu.yaml").read_text())
    assert values["--max_steps"] == "7" and values["--output_dir"] == recipe["output_dir"]
    assert float(values["--learning_rate"]) == float(recipe["learning_rate"])
    assert values["--model_name_or_path"] == recipe["model_name_or_path"]
    assert "--help_all" in text
    assert main(["sft", "--config", "recipes/sft_tiny_cpu.yaml", "--help"]) == 0
    sft_values = {
        line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if "  --" in line
    }
    sft_recipe = yaml.safe_load((ROOT / "recipes" / "sft_tiny_cpu.yaml").read_text())
    assert sft_values["--dataset_name"] == sft_recipe["dataset_name"]
    assert sft_values["--max_steps"] == str(sft_recipe["max_steps"])


@pytest.mark.slow  # slow: --help_all builds every field's help (11 s)
def test_help_all_lists_every_field(capsys):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "rookworld_trl.stages.cli", "sft", "--help_all"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert (
        done.returncode == 0 and "--tokenizer_name_or_path" in done.stdout and "--adam_beta2" in done.stdout
    )


# ---- 8. one line for a recipe with a YAML error or a misspelt field, an unwritable output_dir, a model dir
# that is no model dir ----


def test_recipe_yaml_syntax_error_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("max_steps: 3\nlearning_rate: [1e-4\n")
    line = train_error(tmp_path, capsys, "--config", str(recipe))
    assert f"recipe {recipe}: YAML syntax error at line 3" in line


def test_misspelt_recipe_field_and_flag_say_did_you_mean(tmp_path, capsys):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(Path(RECIPE).read_text() + "learnin_rate: 1.0e-4\n")
    line = train_error(tmp_path, capsys, "--config", str(recipe))
    assert "unknown field 'learnin_rate' (did you mean --learning_rate?)" in line
    line = train_error(tmp_path, capsys, "--max_step", "3")  # no prefix matching: a typo is no abbreviation
    assert "unknown flag --max_step (did you mean --max_steps?)" in line


def test_unwritable_output_dir_is_one_line(tmp_path, capsys):
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=locked):  # root writes anyway: take a read-only place of the system
            locked = Path("/sys/rookworld_run")
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("no directory here refuses a write")
    except OSError:
        pass
    assert run_stage("train", grpo_stage.main, ["--config", RECIPE, "--output_dir", str(locked / "run")]) == 2
    assert "cannot write in" in one_error_line(capsys, "train")


def test_empty_model_dir_is_not_a_model_directory(tmp_path, capsys):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    line = train_error(tmp_path, capsys, "--model_name_or_path", str(empty))
    assert f"'{empty}' is not a model directory" in line and "tokenizer_name_or_path" not in line


# ---- 9. a --config with a few fields: one line says it replaces the default recipe ----


def test_custom_config_with_few_fields_says_it_replaces_the_recipe(tmp_path, capsys):
    from rookworld_trl.stages.launch import say_unset_fields

    recipe = tmp_path / "mine.yaml"
    recipe.write_text("max_steps: 3\n")
    say_unset_fields("train", str(recipe), ["--output_dir", "x"], "recipes/grpo_tiny_cpu.yaml")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "sets no model_name_or_path, dataset_name, learning_rate" in out[0]
    assert "replaces the default recipe (recipes/grpo_tiny_cpu.yaml)" in out[0]
    for bundled in sorted((ROOT / "recipes").glob("*.yaml")):  # a full recipe: nothing to say
        command = "sft" if bundled.name.startswith("sft") else "train"
        say_unset_fields(command, str(bundled), [], "recipes/grpo_tiny_cpu.yaml")
    assert capsys.readouterr().out == ""


# ---- 6 and 7. `rookworld eval MODEL`: the embedded test split, the table on the console; bundled paths resolve
# from any working directory (as recipes' do) ----


def test_eval_defaults_to_the_embedded_test_split_from_anywhere(tmp_path, monkeypatch, capsys):
    from rookworld_trl.stages.eval import evaluate

    monkeypatch.chdir(tmp_path)  # outside the repository
    flags = ["--suites", "policy", "--policy_samples", "4", "--depth", "1", "--out", "ev", "--device", "cpu"]
    assert run_stage("eval", evaluate.main, ["rookworld_trl/assets/model", *flags]) == 0
    out = capsys.readouterr().out
    assert "legal" in out and "|" in out  # the figures table itself, not only "wrote ..."
    assert "rookworld_trl/assets/data" in (tmp_path / "ev" / "eval.json").read_text()


def test_parity_help_example_works_outside_the_repo(tmp_path, monkeypatch):
    from rookworld_trl.stages.eval import parity

    monkeypatch.chdir(tmp_path)
    assert run_stage("parity", parity.main, ["rookworld_trl/assets/model", "--max_new_tokens", "2"]) == 0


# ---- 10. no one-point learning curve before step 1; no loss_type warning ----


@pytest.mark.slow  # slow: a 15 s training stage
def test_tiny_max_steps_runs_no_learning_curve_eval(tmp_path, capsys):
    from rookworld_trl.stages.grpo import EvalCallback

    trainer, engine, *_ = grpo_stage.build(
        ["--config", RECIPE, "--output_dir", str(tmp_path), "--max_steps", "3"]
    )
    engine.close()
    assert not any(isinstance(c, EvalCallback) for c in trainer.callback_handler.callbacks)
    every = yaml.safe_load(Path(RECIPE).read_text())["eval_every_steps"]
    assert f"no learning curve: eval_every_steps {every} > max_steps 3" in capsys.readouterr().err


def test_our_models_name_their_loss():
    from transformers.loss.loss_utils import LOSS_MAPPING

    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(ROOT / "rookworld_trl" / "assets" / "model"))
    assert model.loss_type in LOSS_MAPPING  # None made transformers warn on every run with labels


# ---- 11. one compact console line per logging step, the bar with its ETA; the whole dict in metrics.jsonl ----


def test_each_logging_step_is_one_compact_line(model_dir, tmp_path, capsys):
    import json

    from tiny_grpo import tiny_recipe_argv

    from rookworld_trl.training.console import CompactPrinter, CompactProgress, compact_line

    flags = ["--max_steps", "2", "--eval_samples", "0", "--eval_every_steps", "0", "--report_to", "none"]
    assert grpo_stage.main(tiny_recipe_argv(model_dir, tmp_path, *flags)) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert (
        [line.split()[1] for line in lines] == ["1/2", "2/2"]
        and "reward" in lines[0]
        and "s/step" in lines[0]
    )
    assert "'completions/mean_length'" not in out  # TRL's dict stays off the console...
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("completions/mean_length" in row for row in logged)  # ...and goes whole to metrics.jsonl
    logs = {"reward": 0.41, "watch/b_legal": 0.581, "kl": None, "loss": 0.04, "step_time": 2.6}
    assert (
        compact_line(logs, 12, 150)
        == "step 12/150  reward 0.410  legal best move 58.1%  loss 0.040  2.6 s/step"
    )
    held_out = {"eval/policy/greedy/legal_best_move": 0.615, "eval/policy/greedy/best_move_accuracy": 0.02,
                "eval/policy/greedy/best_move_loss": 0.4941, "eval/env/next_state_accuracy": 0.32, "epoch": 0.04}  # fmt: skip
    assert compact_line(held_out, 30, 150) == (
        "step 30/150  held-out legal best move 61.5%  top 1 2.0%  B: loss 0.494  A: next state exact 32.0%"
    )
    trainer = make_trainer(model_dir, tmp_path / "bar", disable_tqdm=False)
    grpo_stage.use_compact_logs(trainer)
    kinds = {type(c) for c in trainer.callback_handler.callbacks}
    assert CompactProgress in kinds and CompactPrinter not in kinds


# ---- 12. report_to trackio: accepted, or one line saying how to install it ----


def test_report_to_trackio_is_accepted_or_says_how_to_install(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("trackio") is not None:
        _, args, _ = grpo_stage.parse(
            ["--config", RECIPE, "--output_dir", str(tmp_path), "--report_to", "trackio"]
        )
        assert args.report_to == ["trackio"]
    else:
        assert "pip install trackio" in train_error(tmp_path, capsys, "--report_to", "trackio")


# ---- 13. bounded adaptive KL in every GPU recipe; setup.sh's CPU wheel index ----


def test_gpu_recipes_bound_their_adaptive_kl():
    """Each recipe with adaptive KL sets both bounds, the lower below the upper (their values are tuning)."""
    import yaml

    gpu = [p for p in (ROOT / "recipes").glob("grpo_*.yaml") if "tiny_cpu" not in p.name]
    for path in gpu:
        recipe = yaml.safe_load(path.read_text())
        if recipe.get("adaptive_kl"):
            assert 0 < recipe["beta_min"] < recipe["beta_max"], path.name


def test_setup_takes_the_cpu_wheel_index_without_a_gpu_and_the_default_build_with_one(tmp_path):
    """Both torch branches of setup.sh, run with a stand-in pip that records its arguments (no download) and a
    stand-in nvidia-smi first on PATH (failing: no GPU; listing one: a GPU box), so the test means the same on
    a CPU machine and on a GPU machine."""
    import subprocess

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "setup.sh").write_text((ROOT / "scripts" / "setup.sh").read_text())
    (repo / "pyproject.toml").write_text("")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "pip.log"
    python = bin_dir / "python"  # `import torch` fails, so setup installs it; every pip call is logged
    python.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exit 1\necho "$@" >> {log}\n')
    python.chmod(0o755)
    fake = tmp_path / "fake_bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "STOCKFISH_PATH": "/usr/games/stockfish"}
    for gpu, extra, index in (
        (False, {}, "https://download.pytorch.org/whl/cpu"),
        (False, {"TORCH_INDEX_URL": "http://mirror"}, "http://mirror"),
        (True, {}, None),
    ):
        smi.write_text("#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA H100'" if gpu else "exit 9") + "\n")
        smi.chmod(0o755)
        log.write_text("")
        done = subprocess.run(
            ["bash", "scripts/setup.sh"], cwd=repo, env={**env, **extra}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        torch_call = next(line for line in log.read_text().splitlines() if " torch" in line)
        if index is None:  # a GPU: pip's default (CUDA) build, no CPU index
            assert "--index-url" not in torch_call and "NVIDIA GPU found" in done.stdout, torch_call
        else:
            assert f"--index-url {index}" in torch_call and "torch==" in torch_call, torch_call


# ---- exit code 2 for bad input reaches the shell through `accelerate launch` (which says 1 for any failure) ----


def test_bad_input_exit_code_passes_through_the_launcher(tmp_path, capsys):
    from rookworld_trl.stages.launch import launch

    argv = ["--accelerate_config", "accelerate_configs/cpu.yaml", "load", str(tmp_path / "missing.txt")]
    assert launch("rookworld_trl.data.commands", argv, None, "data") == 2
