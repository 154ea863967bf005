"""Self-play positions (rookworld_trl/grpo/selfplay.py): games of the embedded model replayed with python-chess, the
game runner's ends, the buffer, the mix of buffer positions into P: prompts, and GRPO runs that log it all.

    OMP_NUM_THREADS=1 .venv/bin/pytest tests/test_selfplay.py        (add -m slow for the 3-step recipe run)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import chess
import pytest

from rookworld_trl.chess.environment import ENDS, play_games
from rookworld_trl.chess.formats import parse_policy_prompt, policy_prompt, position_key, prompt_fen_width
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.grpo.config import GRPOScriptArguments, RookWorldGRPOConfig
from rookworld_trl.grpo.selfplay import PositionBuffer, SelfPlay, selfplay_for
from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import load_model_and_tokenizer
from rookworld_trl.stages.grpo import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "rookworld_trl" / "assets" / "model")
DATA = str(ROOT / "rookworld_trl" / "assets" / "data")


@pytest.fixture(scope="module")
def policy_rows():
    return load_rookworld_dataset(DATA, split="train", mix_env_ratio=0.0, max_samples=64)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model_and_tokenizer(MODEL)


def config(tmp_path, **overrides) -> RookWorldGRPOConfig:
    kwargs = dict(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=60, use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
        seed=0, learning_rate=1e-4, disable_tqdm=True, temperature=0.6,
    )  # fmt: skip
    kwargs.update(overrides)
    return RookWorldGRPOConfig(**kwargs)


def script(**overrides) -> GRPOScriptArguments:
    """The stage's self-play settings of these tests: a round of 8 games of at most 6 plies every step."""
    kwargs = dict(selfplay_ratio=0.5, selfplay_every=1, selfplay_games=8, selfplay_max_plies=6)
    kwargs.update(overrides)
    return GRPOScriptArguments(**kwargs)


def replay(game) -> chess.Board:
    """Every move of `game` played by python-chess (push_uci raises on an illegal one); checks its positions."""
    board = chess.Board(game.start)
    reached = []
    for move in game.moves:
        board.push_uci(move)
        if not board.is_game_over():
            reached.append(board.fen())
    assert reached == game.positions
    return board


# ---- games ----


def test_games_of_the_real_model_are_legal_move_sequences(model_and_tokenizer, policy_rows):
    model, tokenizer = model_and_tokenizer
    starts = [chess.STARTING_FEN, *policy_rows["fen"][:11]]
    calls = []

    def policy(prompts):
        calls.append(len(prompts))
        return generate_completions(
            model, tokenizer, prompts, max_new_tokens=60, do_sample=True, temperature=0.6, seed=len(calls)
        )

    games = play_games(policy, starts, max_plies=8, fen_width=90)
    assert [g.start for g in games] == starts
    # one call per ply for all live games
    assert calls[0] == len(starts) and calls == sorted(calls, reverse=True)
    for game in games:
        board = replay(game)
        assert game.end in ENDS and len(game.moves) <= 8
        if game.end == "illegal":  # the move that ended it really is illegal there
            try:
                move = chess.Move.from_uci(game.bad_move)
            except ValueError:  # not even a UCI move (e.g. g7g7)
                continue
            assert not board.is_legal(move) or board.uci(move) != game.bad_move
        elif game.end == "max_plies":
            assert len(game.moves) == 8
        elif game.end == "game_over":
            assert board.is_game_over()
    # the tiny model plays a few legal moves before its first illegal one: the replay above checks something
    assert sum(len(g.moves) for g in games) >= 4 and max(len(g.moves) for g in games) >= 2


def test_illegal_and_unparseable_moves_end_games_and_are_counted(tmp_path):
    def fixed(answer):
        return lambda prompts: [answer] * len(prompts)

    # e2e4 is legal for White at the start, then illegal for Black: every game ends after one ply
    games = play_games(fixed(" e2e4 E: 0.3 B: e2e4"), [chess.STARTING_FEN] * 3, max_plies=10)
    assert [(g.end, g.moves, g.bad_move) for g in games] == [("illegal", ["e2e4"], "e2e4")] * 3
    assert all(g.ended_illegal for g in games)
    games = play_games(fixed(" no answer"), [chess.STARTING_FEN], max_plies=10)
    assert (games[0].end, games[0].moves) == ("unparseable", [])
    # max_plies: two knights out and back, forever legal
    shuffle = iter(["g1f3", "g8f6", "f3g1", "f6g8"] * 10)
    games = play_games(
        lambda ps: [f" x E: 0 B: {next(shuffle)}" for _ in ps], [chess.STARTING_FEN], max_plies=6
    )
    assert (games[0].end, len(games[0].moves)) == ("max_plies", 6)
    replay(games[0])
    # a round counts the illegal games; the buffer holds the one new position, once
    selfplay = SelfPlay(script(selfplay_games=3), seed=0)
    figures = selfplay.play(fixed(" e2e4 E: 0.3 B: e2e4"), step=0)
    assert figures == {
        "selfplay/games": 3.0, "selfplay/mean_plies": 1.0, "selfplay/illegal_rate": 1.0, "selfplay/buffer_size": 1.0
    }  # fmt: skip
    board = chess.Board()
    board.push_uci("e2e4")
    assert selfplay.buffer.fens() == [board.fen()]


def test_a_finished_game_is_not_buffered_and_ends_as_game_over():
    fools = iter(["f2f3", "e7e5", "g2g4", "d8h4"])
    games = play_games(
        lambda ps: [f" x E: 0 B: {next(fools)}" for _ in ps], [chess.STARTING_FEN], max_plies=20
    )
    assert (games[0].end, len(games[0].moves), len(games[0].positions)) == ("game_over", 4, 3)


# ---- buffer ----


def test_buffer_is_bounded_fifo_and_deduplicated_by_position():
    fens = []
    board = chess.Board()
    for move in ["e2e4", "e7e5", "g1f3", "b8c6", "f1c4"]:
        board.push_uci(move)
        fens.append(board.fen())
    buffer = PositionBuffer(3)
    buffer.add(fens[:2], step=0)
    buffer.add(fens[2:4], step=1)
    assert len(buffer) == 3 and buffer.fens() == fens[1:4]  # the oldest went first
    assert [buffer[i][1] for i in range(3)] == [0, 1, 1]
    same = fens[1].rsplit(" ", 2)[0] + " 7 9"  # the position of fens[1] with other clocks
    buffer.add([same], step=2)
    assert len(buffer) == 3 and buffer.fens() == [fens[2], fens[3], same] and buffer[2] == (same, 2)
    buffer.add([fens[4]], step=3)
    assert buffer.fens() == [fens[3], same, fens[4]]
    assert len({position_key(f) for f in buffer.fens()}) == 3


# ---- mix ----


def groups(prompts, k=4):
    return [{"prompt": p, "task": "P", "fen": parse_policy_prompt(p), "limit": "depth=8", "moves": ["a"],
             "evals": [0.1], "completion": " a"} for p in prompts for _ in range(k)]  # fmt: skip


@pytest.mark.parametrize("ratio", [0.25, 0.6, 1.0])
def test_mix_ratio_of_p_prompts_matches_selfplay_ratio(tmp_path, ratio):
    selfplay = SelfPlay(script(selfplay_ratio=ratio), seed=0)
    assert selfplay.mix(groups([policy_prompt(chess.STARTING_FEN, 89)]), step=0)[1] == {
        "selfplay/buffer_size": 0.0
    }
    board, produced = chess.Board(), []
    for move in ["e2e4", "e7e5", "g1f3", "b8c6"]:
        board.push_uci(move)
        produced.append(board.fen())
    selfplay.buffer.add(produced[:2], step=3)
    selfplay.buffer.add(produced[2:], step=5)
    # 1500 distinct P: prompts (positions with distinct clocks), 4 copies each, and A: rows between them
    prompts = [policy_prompt(f"8/8/8/8/8/8/8/K6k w - - {i % 50} {i + 1}", 89) for i in range(1500)]
    env = {"prompt": "A: 8/8/8/8/8/8/8/K6k w - - 0 1+a1a2+a1a2+", "task": "A", "fen": "", "limit": "",
           "moves": [], "evals": [], "completion": ""}  # fmt: skip
    rows = groups(prompts) + [env] * 100
    mixed, figures = selfplay.mix(rows, step=7)
    assert mixed[-100:] == [env] * 100
    swapped = [m for m, r in zip(mixed, rows, strict=True) if m["prompt"] != r["prompt"]]
    assert len(swapped) % 4 == 0 and all(len(set(map(str, mixed[i : i + 4]))) == 1 for i in range(0, 6000, 4))
    assert (
        abs(len(swapped) / 6000 - ratio) < 0.04 and figures["selfplay/mixed_fraction"] == len(swapped) / 6000
    )
    assert {m["fen"] for m in swapped} == set(produced)  # every buffer position is drawn
    for m in swapped:  # the same width, the FEN asked for, no label: the engine grades it
        assert prompt_fen_width(m["prompt"]) == 89 and parse_policy_prompt(m["prompt"]) == m["fen"]
        assert (m["limit"], m["moves"], m["evals"], m["completion"], m["task"]) == ("", [], [], "", "P")
    ages = Counter(7 - (3 if produced.index(m["fen"]) < 2 else 5) for m in swapped)
    assert figures["selfplay/position_age"] == pytest.approx(
        sum(a * n for a, n in ages.items()) / len(swapped)
    )
    assert selfplay.mix(rows, step=7)[0] == mixed  # the same draw on every rank and call of the step


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(selfplay_ratio=1.5), "selfplay_ratio must be in"),
        (dict(selfplay_ratio=-0.1), "selfplay_ratio must be in"),
        (dict(selfplay_every=0), "selfplay_every must be >= 1"),
        (dict(selfplay_games=0), "selfplay_games must be >= 1"),
        (dict(selfplay_max_plies=0), "selfplay_max_plies must be >= 1"),
        (dict(selfplay_buffer_size=0), "selfplay_buffer_size must be >= 1"),
    ],
)
def test_script_arguments_reject_bad_selfplay_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        script(**overrides)


def test_off_unless_a_ratio_is_set():
    rows = groups([policy_prompt(chess.STARTING_FEN, 90)])
    assert selfplay_for(GRPOScriptArguments(), seed=0, dataset=rows) is None  # the defaults: no self-play
    on = selfplay_for(script(selfplay_ratio=0.25, selfplay_games=3), seed=7, dataset=rows)
    assert (on.ratio, on.games, on.seed, on.dataset) == (0.25, 3, 7, rows)


# ---- GRPO ----


@pytest.mark.integration  # a GRPO Trainer
def test_grpo_run_mixes_engine_graded_selfplay_positions_and_logs_them(
    model_and_tokenizer, policy_rows, tmp_path
):
    from rookworld_trl.chess.engine import EngineLimit, EnginePool
    from rookworld_trl.grpo.rewards.functions import make_policy_reward

    _, tokenizer = model_and_tokenizer
    model, _ = load_model_and_tokenizer(MODEL)  # a copy to train
    # depth 8: the data's labels (limit depth=8) stand in for the engine; self-play positions have none
    pool = EnginePool(1, EngineLimit(depth=8), multipv=5)
    graded = make_policy_reward(engine=pool, shaping="dense")
    seen = []

    def policy_reward(prompts, completions, **kwargs):
        rewards = graded(prompts, completions, **kwargs)
        seen.extend(zip(prompts, kwargs["limit"], rewards, strict=True))
        return rewards

    trainer = RookWorldGRPOTrainer(
        model=model, reward_funcs=[policy_reward], args=config(tmp_path), train_dataset=policy_rows,
        processing_class=tokenizer, selfplay=selfplay_for(script(), 0, policy_rows),
    )  # fmt: skip
    try:
        trainer.train()
    finally:
        pool.close()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logs) == 2
    for row in logs:  # a round at every step (selfplay_every=1)
        assert row["selfplay/games"] == 8.0 and 0.0 <= row["selfplay/illegal_rate"] <= 1.0
        assert 0.0 <= row["selfplay/mean_plies"] <= 6.0 and row["selfplay/buffer_size"] >= 1
        assert "selfplay/mixed_fraction" in row
    assert any("selfplay/position_age" in row for row in logs)
    dataset_fens = set(policy_rows["fen"])
    ours = [(p, r) for p, limit, r in seen if parse_policy_prompt(p) not in dataset_fens]
    assert ours and all(r is not None for _, r in ours)  # the engine graded the self-play positions
    assert all(limit == "" for p, limit, _ in seen if parse_policy_prompt(p) not in dataset_fens)
    assert set(parse_policy_prompt(p) for p, _ in ours) <= set(trainer.selfplay.buffer.fens())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("selfplay/buffer_size" in r for r in rows if "loss" in r)


@pytest.mark.slow
def test_three_step_recipe_run_with_selfplay(tmp_path):
    out = tmp_path / "run"
    code = main(
        ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--output_dir", str(out), "--max_steps", "3",
         "--selfplay_ratio", "0.5", "--selfplay_every", "2", "--selfplay_games", "8", "--selfplay_max_plies", "6",
         "--eval_every_steps", "0", "--eval_samples", "0", "--disable_tqdm", "true", "--report_to", "none"]
    )  # fmt: skip
    assert code == 0 and (out / "final" / "model.safetensors").is_file()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r.get("selfplay/games") for r in steps] == [8.0, None, 8.0]  # rounds at steps 0 and 2
    assert all("selfplay/buffer_size" in r and "rewards/policy_reward/mean" in r for r in steps)
    # step 2 trains at global step 1 on positions of the round at step 0: one step old; step 3 (global step 2)
    # draws from the whole buffer: positions of the rounds at steps 0 and 2
    assert steps[1]["selfplay/position_age"] == 1.0 and 0.0 <= steps[2]["selfplay/position_age"] <= 2.0


@pytest.mark.slow
def test_two_processes_share_one_buffer_and_give_a_group_one_position(tmp_path):
    """multi_cpu.yaml, 2 prompts x 4 completions over 2 ranks of 4 rows each: every group spans both ranks,
    so both must substitute the same buffer position for it."""
    import os
    import subprocess

    from rookworld_trl.stages.launch import launcher

    argv = ["--config", str(ROOT / "recipes" / "grpo_tiny_cpu.yaml"), "--per_device_train_batch_size", "2",
            "--num_generations", "4", "--eval_every_steps", "0", "--eval_samples", "0", "--log_completions",
            "false", "--report_to", "none", "--save_strategy", "no", "--output_dir", str(tmp_path),
            "--max_steps", "2", "--selfplay_ratio", "1.0", "--selfplay_every", "1", "--selfplay_games", "6",
            "--selfplay_max_plies", "4"]  # fmt: skip
    config = str(ROOT / "accelerate_configs" / "multi_cpu.yaml")
    cmd, extra = launcher(config, [str(ROOT / "tests" / "multi_rank_stage.py")], argv)
    env = {**os.environ, **extra, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["selfplay_buffer"] and ranks[0]["selfplay_buffer"] == ranks[1]["selfplay_buffer"]
    assert ranks[0]["positions"] == ranks[1]["positions"]  # the halves of each group: the same position
    assert set(ranks[0]["positions"]) <= set(ranks[0]["selfplay_buffer"])  # ratio 1: every P: prompt swapped
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["selfplay/games"] for r in steps if "loss" in r] == [12.0, 12.0]  # 6 per rank, gathered
