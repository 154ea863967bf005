"""The CLI's answers to mistakes, part 2: model names, data files, flags and commands, the entry point older
scripts name and the README, each mistake made as a new user makes it (tests/cli_user.py) and answered by one line.
Part 1 (rewards, recipes, Ctrl-C): tests/test_cli_checks.py.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_cli_mistakes.py -q
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from cli_user import (
    FEN,
    RECIPE,
    ROOT,
    before_launch,
    command,
    one_line,
    rookworld,
    train_refuses,
    user_env,
)

pytestmark = pytest.mark.integration  # a subprocess per case


# ---- 6. model names: a local-looking one never goes to the hub; an unreachable hub is asked once ----


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed


@pytest.mark.parametrize(
    "argv, says",
    [
        (["eval", "runs/nosuch/final"], "'runs/nosuch/final' does not exist (looked in"),
        (["eval", "./mymodel"], "a path is never tried on the hub"),
        (["eval", "mymodel", "--suites", "policy"], "the hub (http://127.0.0.1:"),
        (["parity", "nosuchdir"], "cannot be reached"),
        (
            ["eval", "rookworld_trl/assets/model", "--baseline", "runs/x/final"],
            "'runs/x/final' does not exist",
        ),
    ],
)
def test_a_wrong_model_name_is_one_line_before_stockfish_starts(argv, says, tmp_path):
    # no Stockfish at all: had the engine started first, the line would be about it
    env = user_env(HF_HUB_OFFLINE=None, HF_ENDPOINT=closed_port(), STOCKFISH_PATH=str(tmp_path / "no_engine"))
    start = time.monotonic()
    done = rookworld(*argv, cwd=tmp_path, env=env)
    one_line(done, f"rookworld {argv[0]}: error: ", says)
    assert done.returncode == 2 and time.monotonic() - start < 60  # hub retries took a minute


def test_offline_without_a_cached_copy_and_local_model_mistakes_in_train(tmp_path):
    done = rookworld("eval", "mymodel", cwd=tmp_path)  # HF_HUB_OFFLINE=1
    one_line(
        done, "rookworld eval: error: ", "HF_HUB_OFFLINE=1 is set but it is not in the Hugging Face cache"
    )
    train_refuses(tmp_path, "--model_name_or_path", "./nosuch", says=("'./nosuch' does not exist",))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    train_refuses(  # every missing part at once
        tmp_path, "--model_name_or_path", "half", says=("no weights (model.safetensors), no tokenizer files",)
    )


# ---- 7. data load --out: the rows per split; no empty train split left behind ----


def test_data_load_out_counts_the_splits_and_refuses_an_empty_train_split(tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    from rookworld_trl.data.commands import main as data_main

    test_rows = pq.read_table(ROOT / "rookworld_trl/assets/data/test.parquet", columns=["text"])
    rows = test_rows.column("text").to_pylist()[:3]  # the held-out split's positions: none hash to train
    (tmp_path / "held_out.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    done = rookworld("data", "load", "held_out.jsonl", "--out", "mine", cwd=tmp_path)
    one_line(done, "rookworld data: error: mine: no rows for the train split", "--validation_fraction 0")
    assert not list((tmp_path / "mine").glob("*.parquet"))
    monkeypatch.chdir(tmp_path)  # the same load kept in train: in this process (a conversion, not a refusal)
    assert (
        data_main(
            ["load", "held_out.jsonl", "--out", "mine", "--validation_fraction", "0", "--test_fraction", "0"]
        )
        == 0
    )
    assert "wrote mine: train 3 rows (" in capsys.readouterr().out


# ---- 8. one "did you mean" for every command's flags and for the command name ----


@pytest.mark.parametrize(
    "argv, says",
    [
        (["trian"], "rookworld: error: unknown command 'trian' (did you mean train?)"),
        (["--max_steps", "3"], "rookworld: error: --max_steps comes after a command, e.g. `rookworld train"),
        (["eval", "rookworld_trl/assets/model", "--suits", "policy"], "rookworld eval: error: unknown flag --suits (did you mean --suites?)"),
        (["data", "load", "a.jsonl", "--skip-bad"], "rookworld data load: error: unknown flag --skip-bad (did you mean --skip_bad_rows?)"),
        (["data", "lod", "a.jsonl"], "rookworld data: error: unknown command 'lod' (did you mean load?)"),
        (["tokenizer", "trane"], "rookworld tokenizer: error: unknown command 'trane' (did you mean train?)"),
        (["report", "runs/x", "--metrix", "m"], "rookworld report: error: unknown flag --metrix (did you mean --metrics?)"),
        (["train", "--max_step", "3"], "rookworld train: error: unknown flag --max_step (did you mean --max_steps?)"),
    ],
)  # fmt: skip
def test_every_command_says_did_you_mean(argv, says, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "P: 8/8/8/8/8/8/8/K6k w - - 0 1 M: a1a2 E: 0.0 B: a1a2"}\n')
    one_line(rookworld(*argv, cwd=tmp_path), says)


def test_rookworld_alone_fails_with_the_short_usage(tmp_path):
    done = rookworld(cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("usage: rookworld <command>")
    assert len(done.stderr.splitlines()) < 20


# ---- 9. small things: flag names, the bad FEN shown, --config DIR, --help within 100 columns ----


def test_the_small_things(tmp_path):
    done = rookworld("data", "generate", "--out", "g", "--selfplay", "-1", cwd=tmp_path)
    one_line(done, "rookworld data: error: --selfplay must be >= 0, got -1")
    (tmp_path / "bad.txt").write_text(f"P: {FEN.replace('PPPP1PPP', 'PPPP1PPX'):<90}M: e7e5 E: 0.1 B: e7e5\n")
    done = rookworld("data", "load", "bad.txt", cwd=tmp_path)
    one_line(
        done, "rookworld data: error: bad.txt:1: P: fen: ", "'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPX/RNBQKBNR'"
    )
    train_refuses(tmp_path, "--config", str(tmp_path), says=("is a directory; pass a recipe YAML file",))
    done = rookworld("train", "--help", cwd=tmp_path)
    assert done.returncode == 0 and max(map(len, done.stdout.splitlines())) <= 100


# ---- 10. the embedded model is prompted at the FEN width it was trained at ----


def test_the_embedded_model_is_prompted_at_its_trained_width(tmp_path):
    import pyarrow.parquet as pq

    from rookworld_trl.chess.formats import prompt_fen_width
    from rookworld_trl.stages import grpo

    config = json.loads((ROOT / "rookworld_trl/assets/model/config.json").read_text())
    assert config["rookworld_fen_width"] == 90
    table = pq.read_table(ROOT / "rookworld_trl/assets/data/test.parquet", columns=["text", "fen", "task"])
    narrow = [f"P: {r['fen']:<89}" + r["text"][r["text"].index("M:") :]
              for r in table.to_pylist() if r["task"] == "P"][:16]  # fmt: skip
    (tmp_path / "narrow.txt").write_text("\n".join(narrow) + "\n")
    script, args, model_args = grpo.parse(
        [
            "--config",
            str(RECIPE),
            "--dataset_name",
            str(tmp_path / "narrow.txt"),
            "--output_dir",
            str(tmp_path),
        ]
    )
    model, _ = grpo.load_policy(args, model_args)
    rows = grpo.load_run_data(script, args, model).train
    assert script.fen_width == 90 and {prompt_fen_width(p) for p in rows["prompt"]} == {90}


# ---- 11. the entry point older scripts name ----


@pytest.mark.slow  # a stage process (~10 s); scripts/experiments/time_mistakes.py times the same command
def test_python_m_rookworld_trl_grpo_runs_the_stage(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "rookworld_trl.grpo", "--config", str(RECIPE), "--dataset_path", "x"],
        cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    notice, error = [line for line in done.stderr.splitlines() if line.strip()]
    assert "rookworld_trl.stages.grpo" in notice
    assert (
        error
        == "rookworld train: error: unknown flag --dataset_path (did you mean --dataset_name?); see --help_all"
    )


# ---- 12. every page the README links exists ----


def test_every_page_the_readme_links_exists():
    import re

    for link in re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / link).exists(), link


# ---- more mistakes, each one line before accelerate starts ----


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--num_processes", "x"], "--num_processes must be a positive whole number, got 'x'"),
        (["--config", "recipes/grpo_tiny_cpu" + ".yml"], "did you mean recipes/grpo_tiny_cpu.yaml?"),  # a typo
        (["--config"], "--config needs a recipe, e.g. --config recipes/grpo_tiny_cpu.yaml"),
        (["--max_steps", "3", "--output_dir"], "--output_dir needs a value, e.g. --output_dir runs/grpo_tiny_cpu"),
        (["--accelerate_config", "recipes/grpo_tiny_cpu.yaml"], "is no accelerate config (it sets no distributed_type)"),
        (["--config", "accelerate_configs/cpu.yaml"], "is an accelerate config: pass it as --accelerate_config"),
        (["--reward_funcs", "policy_reward", "env_reward", "--reward_weights", "1"], "reward_weights has 1 entries for 2"),
        (["--reward_funcs", "policy_reward", "examples/my_reward.py:b_gives_check", "--reward_weights", "1", "1"],
         "not the file: examples.my_reward.b_gives_check"),
        (["--report_to", "tensorbord"], "unknown integration 'tensorbord' (did you mean tensorboard?)"),
        (["--field_credit", "true", "--reward_funcs", "env_reward", "--reward_weights", "1"], "needs policy_reward"),
    ],
)  # fmt: skip
def test_more_train_mistakes_are_one_line(argv, says, tmp_path):
    done = rookworld("train", *argv, cwd=tmp_path)
    one_line(done, "rookworld train: error: ", says)
    before_launch(done)


def test_a_train_recipe_given_to_sft_says_so(tmp_path):
    done = rookworld("sft", "--config", "recipes/grpo_tiny_cpu.yaml", cwd=tmp_path)
    one_line(done, "rookworld sft: error: ", "unknown field", "it is a `rookworld train` recipe")


def test_num_processes_reaches_the_launcher():
    from rookworld_trl.stages.launch import launcher

    cmd, _ = launcher(str(ROOT / "accelerate_configs/multi_gpu.yaml"), ["-m", "x"], [], "7")
    assert cmd[cmd.index("--num_processes") + 1] == "7"
    cmd, _ = launcher(str(ROOT / "accelerate_configs/multi_gpu.yaml"), ["-m", "x"], [])
    assert "--num_processes" not in cmd  # the config's own count


def test_help_piped_into_head_is_quiet(tmp_path):
    done = subprocess.run(
        f"{' '.join(command())} --help | head -1; {' '.join(command())} train --help | head -1",
        shell=True, cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stderr == "" and done.stdout.count("usage: rookworld") == 2, done.stderr


def test_eval_on_a_cuda_device_that_is_not_there_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    done = rookworld("eval", "rookworld_trl/assets/model", "--device", "cuda", cwd=tmp_path,
                     env=user_env(STOCKFISH_PATH=str(tmp_path / "no_engine")))  # fmt: skip
    one_line(done, "rookworld eval: error: --device cuda: no CUDA device is visible here")


def test_an_output_dir_that_is_a_file_is_refused_before_accelerate(tmp_path):
    (tmp_path / "taken").write_text("not a folder\n")
    done = rookworld("train", "--output_dir", "taken", "--max_steps", "1", cwd=tmp_path)
    one_line(done, "rookworld train: error: ", "taken is a file, not a directory", "--output_dir")
    before_launch(done)


BAD_FEN = "P: rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPX/RNBQKBNR w KQkq - 0 2 M: e7e5 E: 0.1 B: e7e5\n"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["report", "runs/nosuch"], "no metrics file at runs/nosuch/metrics.jsonl"),
        (["push", "runs/nosuch"], "no run folder at runs/nosuch"),
        (["data", "audit", "nosuch.txt"], "no such file or directory: 'nosuch.txt'"),
        (["data", "load", "bad_fen.txt"], "bad_fen.txt:1: P: fen: invalid character in position part of fen"),
        (
            ["eval", "rookworld_trl/assets/model", "--suits", "policy"],
            "unknown flag --suits (did you mean --suites?)",
        ),
    ],
)
def test_a_wrong_path_flag_or_line_is_one_line_before_the_heavy_imports(argv, says, tmp_path):
    """The mistake is said before the command's heavy imports (torch, datasets) and engines, and no progress
    bar: one line in about a second, not after seconds of imports."""
    (tmp_path / "bad_fen.txt").write_text(BAD_FEN)
    probe = (
        "import sys; from rookworld_trl.stages.cli import main; code = main(sys.argv[1:]); "
        "heavy = {'torch', 'datasets'} & set(sys.modules); assert not heavy, heavy; sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], cwd=tmp_path, env=user_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    one_line(done, f"rookworld {argv[0]}: error: ", says)
