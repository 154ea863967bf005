"""A GRPO run's data, read once from one set of options (rookworld_trl/data/load.py `RunData`): what the trainer, the
tactics mix, the learning curve and the final eval are handed keeps the run's --skip_bad_rows, --exclude, puzzle
filter and cap, whichever of them reads it.

    .venv/bin/pytest tests/test_data_run.py
"""

from __future__ import annotations

import json

import chess
import pytest
from test_data_puzzles import HEADER, PUZZLES, write
from tiny_grpo import ROOT, env_lines, tiny_recipe_argv

from rookworld_trl.chess.environment import env_sample
from rookworld_trl.data.files import DataSourceError, Exclusion, fen4
from rookworld_trl.data.layout import column
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.stages.grpo import build, main
from rookworld_trl.training import checkpoints

TACTICS = ROOT / "rookworld_trl" / "assets" / "tactics"


def game_fens(n_moves: int = 16) -> list[str]:
    """The positions of env_lines()'s game, in order (each A: line's position before its move)."""
    board, history, fens = chess.Board(), [], []
    for _ in range(n_moves):
        move = sorted(m.uci() for m in board.legal_moves)[len(history) % board.legal_moves.count()]
        fens.append(env_sample(board.fen(), move, history[-9:]).fen)
        board.push_uci(move)
        history.append(move)
    return fens


def built(argv):
    trainer, engine, script, *_ = build(argv)
    engine.close()
    return trainer, script


def test_a_skip_bad_rows_run_finishes_with_its_eval(model_dir, tmp_path):
    """The flag reaches the eval's reads too: a text file's test split is the file itself, bad line and all."""
    data = tmp_path / "bad.txt"
    data.write_text("\n".join([*env_lines()[:8], "A: this is no transition", *env_lines()[8:]]) + "\n")
    argv = tiny_recipe_argv(model_dir, tmp_path, "--max_steps", "1", "--eval_samples", "4",
                            "--dataset_test_split", "train", "--skip_bad_rows", "true")  # fmt: skip
    argv[argv.index("--dataset_name") + 1] = str(data)
    assert main(argv) == 0
    out = tmp_path / "run"
    assert (out / "eval" / "eval.json").is_file() and (out / "final" / "model.safetensors").is_file()
    assert checkpoints.is_finished(str(out))


def test_the_eval_counts_what_the_run_trained_on_after_exclude(model_dir, tmp_path):
    fens = game_fens()
    held_out = write(tmp_path / "held_out.txt", fens[:8])  # half the game's positions never trained on
    argv = tiny_recipe_argv(model_dir, tmp_path, "--max_steps", "1", "--eval_samples", "16",
                            "--dataset_test_split", "train", "--exclude", str(held_out))  # fmt: skip
    assert main(argv) == 0
    found = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())["settings"]["in_training_data"]
    assert found["positions"] == 8 and found["items"]["env"] == {"in": 8, "of": 16}


def test_tactics_rows_keep_the_runs_exclude(model_dir, tmp_path):
    tactics = load_rookworld_dataset(TACTICS, split="train")
    policy = [
        fen for fen, task in zip(column(tactics, "fen"), column(tactics, "task"), strict=True) if task == "P"
    ]
    dropped = {fen4(fen) for fen in policy[:40]}
    excluded = write(tmp_path / "bench.txt", policy[:40])
    trainer, _ = built(tiny_recipe_argv(model_dir, tmp_path, "--tactics_dataset", str(TACTICS),
                                        "--tactics_ratio", "0.5", "--exclude", str(excluded)))  # fmt: skip
    mixed = {fen4(row["fen"]) for row in trainer.tactics.rows}
    assert mixed and not mixed & dropped
    assert len(mixed) == len({fen4(fen) for fen in policy} - dropped)


def test_replay_and_held_out_keep_the_puzzle_cap_and_filter(model_dir, tmp_path):
    """A puzzle file is labelled once, filtered and capped: replay and the learning curve read those rows."""
    puzzles = write(tmp_path / "puzzles.csv", [HEADER, *PUZZLES])
    argv = tiny_recipe_argv(model_dir, tmp_path, "--mix_env_ratio", "0", "--dataset_max_samples", "1",
                            "--puzzle_themes", "mateIn1", "--replay_coef", "0.1", "--replay_task", "P", "--eval_every_steps", "1",
                            "--max_steps", "2", "--engine_depth", "4")  # fmt: skip
    argv[argv.index("--dataset_name") + 1] = str(puzzles)
    trainer, _ = built(argv)
    replay = trainer.replay
    assert len(trainer.train_dataset) == 1 and len(replay.rows) == 1  # the cap, before the engine labels
    curve = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "EvalCallback")
    mate_in_two = fen4(chess.Board(PUZZLES[2].split(",")[1]).fen())
    assert mate_in_two not in {fen4(fen) for fen in curve.fens}  # the theme filter holds there too


def test_an_exclude_that_drops_every_row_is_named(tmp_path):
    data = write(tmp_path / "env.txt", env_lines())
    every = write(tmp_path / "all.txt", game_fens())
    with pytest.raises(DataSourceError, match="--exclude") as error:
        load_rookworld_dataset(data, exclude=Exclusion.of(every))
    assert "name another split" not in str(error.value) and "dropped" in str(error.value)
