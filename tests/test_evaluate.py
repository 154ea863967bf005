"""Evaluation suites: scripted completions against hand-computed figures, and a tiny random GPT-2 end to end.

Real Stockfish and python-chess throughout; a scripted `generate` stands in for the model only.
"""

import functools
import json
from pathlib import Path

import chess
import pytest
import torch
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from rookworld_trl.chess.engine import EngineLimit, EnginePool
from rookworld_trl.chess.environment import ILLEGAL_KINDS, env_sample, transition
from rookworld_trl.chess.formats import (
    env_prompt,
    policy_completion,
    policy_prompt,
    render_env,
    render_policy,
)
from rookworld_trl.data.puzzles import load_bigbench_checkmate
from rookworld_trl.data.tokenizer import train_tokenizer
from rookworld_trl.grpo.rewards.functions import score_env
from rookworld_trl.grpo.rewards.policy import expected_score_loss, score_policy
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import new_gpt2_model
from rookworld_trl.stages.eval.evaluate import EvalSettings, main, summarize, write_outputs
from rookworld_trl.stages.eval.suites import (
    SuiteDecoding,
    env_suite,
    find_mate_in_one,
    match_suite,
    mate_suite,
    mating_moves,
    policy_suite,
    selfplay_suite,
)
from rookworld_trl.stages.grpo import EvalCallback

START = chess.STARTING_FEN
SAMPLED_8 = SuiteDecoding(("sampled",), max_new_tokens=8)
AFTER_E4 = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
SCHOLAR = "r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - 4 4"  # Qxf7# (h5f7)
KQ_ENDING = "8/8/8/8/8/2k5/8/4K2Q w - - 0 1"


@pytest.fixture(scope="module")
def pool():
    with EnginePool(limit=EngineLimit(depth=6)) as pool:
        yield pool


class Script:
    """A stand-in for the model: answers from a dict prompt -> completion; records each call's settings."""

    def __init__(self, answers, default=""):
        self.answers, self.default, self.calls = answers, default, []

    def __call__(self, prompts, **kwargs):
        self.calls.append(kwargs)
        return [self.answers.get(p, self.default) for p in prompts]


def values(metrics):
    return {name: m.value for name, m in metrics.items()}


# ---------------------------------------------------------------------------------------------- policy


def test_policy_suite_scripted(pool):
    fens = [START, AFTER_E4, SCHOLAR, KQ_ENDING]
    analyses = pool.analyse_many(fens)
    a0, a1 = analyses[0], analyses[1]
    answers = {
        # perfect: the engine's own line
        policy_prompt(START): policy_completion([e.move for e in a0], [e.pawns for e in a0], a0[0].move),
        # second-best move as best, two candidates, each eval off by exactly 1 pawn, proper widths
        policy_prompt(AFTER_E4): policy_completion(
            [a1[1].move, a1[0].move], [a1[1].pawns + 1, a1[0].pawns - 1], a1[1].move
        ),
        # readable but badly spaced, and an illegal best move
        policy_prompt(SCHOLAR): " a1a8 E: 0.5 B: a1a8",
        # KQ_ENDING: garbage (default)
    }
    script = Script(answers, default="hello")
    figures = policy_suite(
        script, fens, analyses, decoding=SuiteDecoding(("greedy", "sampled"), max_new_tokens=50)
    )
    greedy = {k.split("/", 1)[1]: v for k, v in values(figures).items() if k.startswith("greedy/")}
    illegal = {k: greedy.pop(k) for k in list(greedy) if k.startswith("illegal/")}
    # SCHOLAR's a1a8 runs into the a2 pawn; the garbage has no move at all
    assert illegal == {f"illegal/{k}": {"blocked": 0.25, "no_move": 0.25}.get(k, 0.0) for k in ILLEGAL_KINDS}
    assert greedy == {
        "invalid": 0.25,
        "layout": 0.5,
        "legal_best_move": 0.5,
        "best_move_accuracy": 0.25,
        "top5_move_accuracy": 0.5,
        # 0 for the engine's move, the second line's loss, the worst (1.0) for the illegal B: and the garbage
        "best_move_loss": pytest.approx((0 + expected_score_loss(a1[0].cp, a1[1].cp) + 1 + 1) / 4),
        "candidate_overlap": pytest.approx((1 + 2 / len(a1) + 0 + 0) / 4),
        "legal_moves": pytest.approx((1 + 2 / 5 + 0 + 0) / 4),  # out of five; a1a8 is blocked
        "eval_mae": pytest.approx((0 + 1.0) / 2),
        # the watch over the three answers that parse: 5 + 2 legal moves listed, then the blocked a1a8
        "watch/precision": pytest.approx(2 / 3),
        "watch/distinct": pytest.approx(8 / 3),
        "watch/selection": None,  # no list mixes legal and illegal moves
        "watch/b_best_e": 1.0,
        # the training reward: 1.0 for the engine's line, -0.3 for garbage, the graded middle two as
        # rewards.score_policy grades them (tested on its own in test_rewards.py)
        "reward": pytest.approx(
            (
                1.0
                + score_policy(AFTER_E4, answers[policy_prompt(AFTER_E4)], a1)[0]
                + score_policy(SCHOLAR, answers[policy_prompt(SCHOLAR)], analyses[2])[0]
                - 0.3
            )
            / 4
        ),  # fmt: skip
    }
    assert figures["greedy/eval_mae"].n == 2 and figures["greedy/best_move_accuracy"].reference == 0.166
    assert figures["sampled/best_move_accuracy"].reference is None
    assert script.calls[0] == {"seed": 0, "max_new_tokens": 50, "do_sample": False}
    assert script.calls[1] == {
        "seed": 0,
        "max_new_tokens": 50,
        "do_sample": True,
        "temperature": 0.6,
        "top_k": 5,
    }


def test_policy_suite_clips_mate_scores(pool):
    analysis = pool.analyse(SCHOLAR)
    assert analysis[0].cp == 99999  # mate in 1 written as 999.99 pawns
    said = [e.pawns for e in analysis]
    said[0] = 5.0  # far from 999.99, but both sides clip at 10 pawns
    answer = policy_completion([e.move for e in analysis], said, analysis[0].move)
    figures = policy_suite(Script({policy_prompt(SCHOLAR): answer}), [SCHOLAR], [analysis])
    assert figures["greedy/eval_mae"].value == pytest.approx((10 - 5) / len(analysis))
    assert figures["greedy/best_move_accuracy"].value == 1.0


# ---------------------------------------------------------------------------------------------- environment


def test_env_suite_scripted():
    legal = env_prompt(START, "e2e4", ["e2e4"])
    illegal = env_prompt(START, "e2e5", ["e2e5"])
    mate = env_prompt(SCHOLAR, "h5f7", ["h5f7"])
    after_e4 = transition(START, "e2e4")[0]
    wrong_side = START.replace(" w ", " b ")  # one character off the true (unchanged) position
    script = Script({legal: f"{after_e4}+0.001+0+0", illegal: f"{wrong_side}+0.001+0+0", mate: ""})
    figures = env_suite(script, [legal, illegal, mate], ["normal", "illegal", "mate"])
    assert values({k: v for k, v in figures.items() if "=" not in k}) == {
        "invalid": pytest.approx(1 / 3),
        "next_state_accuracy": pytest.approx(1 / 3),
        "next_state_similarity": pytest.approx((1 + (1 - 1 / len(START)) + 0) / 3),
        "reward_accuracy": pytest.approx(1 / 3),
        "reward_mae": pytest.approx((0 + 1.001) / 2),  # the unreadable answer has no reward to compare
        "terminated_accuracy": pytest.approx(2 / 3),  # "" fails; the illegal move's 0 is right
        "truncated_accuracy": pytest.approx(1 / 3),
        # the training reward: exact answer 1.0, unreadable -0.3, the wrong-side answer graded in between
        "reward": pytest.approx((1.0 + score_env(illegal, f"{wrong_side}+0.001+0+0")[0] - 0.3) / 3),
    }
    assert figures["kind=illegal/truncated_accuracy"].value == 0.0
    assert figures["kind=normal/next_state_accuracy"].value == 1.0
    assert figures["kind=mate/invalid"].value == 1.0 and figures["kind=mate/invalid"].n == 1
    assert figures["next_state_accuracy"].reference == 0.9961


# ---------------------------------------------------------------------------------------------- mate in one


def test_find_mate_in_one_is_engine_checked(pool):
    fens = find_mate_in_one(3, seed=0, engine=pool)
    assert len(fens) == 3 and fens == find_mate_in_one(3, seed=0)  # Stockfish agrees on all three
    for fen in fens:
        assert mating_moves(chess.Board(fen)) and pool.analyse(fen)[0].cp == 99999


def test_mate_suite_scripted(pool):
    fens = find_mate_in_one(3, seed=0, engine=pool)
    two_mates = next(f for f in fens if len(mating_moves(chess.Board(f))) == 2)
    one_mate = next(f for f in fens if len(mating_moves(chess.Board(f))) == 1)
    other = next(f for f in fens if f not in (two_mates, one_mate))
    first, second = (m.uci() for m in mating_moves(chess.Board(two_mates)))
    quiet = next(
        m.uci() for m in chess.Board(one_mate).legal_moves if m not in mating_moves(chess.Board(one_mate))
    )
    answers = {
        policy_prompt(two_mates): policy_completion([second], [999.99], second),  # mates, but not the target
        policy_prompt(one_mate): policy_completion([quiet], [0.0], quiet),  # legal, no mate
    }
    figures = mate_suite(Script(answers, default="B:"), [two_mates, one_mate, other], [first, quiet, "a1a2"])
    assert values(figures) == {
        "greedy/mate_accuracy": pytest.approx(1 / 3),
        "greedy/legal_move": pytest.approx(2 / 3),
        "greedy/target_accuracy": pytest.approx(1 / 3),
    }


def test_load_bigbench_checkmate(tmp_path):
    task = {
        "examples": [
            {"input": "1. e4 e5 2. Bc4 Nc6 3. Qh5 Nf6", "target": "Qxf7#"},
            {"input": "1. f3 e5 2. g4", "target": "Qh4#"},
        ]
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task))
    loaded = load_bigbench_checkmate(str(path))
    assert loaded[0] == ("r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - 4 4", "h5f7")
    assert loaded[1][1] == "d8h4" and len(load_bigbench_checkmate(str(path), n=1)) == 1
    task["examples"].append({"input": "1. e4 e5", "target": "Nf3"})
    path.write_text(json.dumps(task))
    with pytest.raises(ValueError, match="does not mate"):
        load_bigbench_checkmate(str(path))


# ---------------------------------------------------------------------------------------------- games


def test_selfplay_suite_scripted():
    """Game 0 plays fool's mate (4 legal half-moves, game over); game 1 plays e4 then an illegal move."""
    boards = {}
    board = chess.Board()
    for uci in ["f2f3", "e7e5", "g2g4", "d8h4"]:
        boards[policy_prompt(board.fen())] = uci
        board.push_uci(uci)

    def script(prompts, **kwargs):
        assert kwargs["do_sample"] and kwargs["temperature"] == 0.6 and kwargs["top_k"] == 5
        if prompts == [policy_prompt(START)] * 2:
            return [" f2f3 E: 0.0 B: f2f3", " e2e4 E: 0.0 B: e2e4"]
        return [" B: " + boards.get(p, "e2e4") for p in prompts]  # e2e4 is illegal for Black after 1. e4

    figures = selfplay_suite(script, games=2)
    assert values(figures) == {
        "legal_half_moves": 2.5,
        "illegal_rate": pytest.approx(1 / 6),  # 1 illegal of 6 moves tried
        "games_ended_illegal": 0.5,
    }
    assert figures["legal_half_moves"].reference == 36.3


def test_match_suite_illegal_moves_lose():
    figures = match_suite(Script({}, default="garbage"), games=2, limit=EngineLimit(depth=1))
    assert values(figures) == {
        "score": 0.0,
        "win_rate": 0.0,
        "draw_rate": 0.0,
        "loss_rate": 1.0,
        "illegal_move_losses": 1.0,
    }


def test_match_suite_legal_play_is_refereed():
    def first_legal(prompts, **kwargs):
        moves = [min(m.uci() for m in chess.Board(p[3:93].strip()).legal_moves) for p in prompts]
        return [f" {m} E: 0.0 B: {m}" for m in moves]

    figures = values(
        match_suite(first_legal, games=2, skill_level=0, limit=EngineLimit(depth=1), max_plies=16)
    )
    assert figures["illegal_move_losses"] == 0.0
    assert figures["win_rate"] + figures["draw_rate"] + figures["loss_rate"] == pytest.approx(1.0)
    assert figures["score"] == pytest.approx(figures["win_rate"] + figures["draw_rate"] / 2)


# ---------------------------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lines = [
        policy_prompt(START) + " e2e4 E: 0.3 B: e2e4",
        env_prompt(START, "e2e4", ["e2e4"]) + "x+0.001+0+0",
    ]
    tokenizer = train_tokenizer(lines * 3, vocab_size=300)
    model = new_gpt2_model(tokenizer, n_layer=2, n_head=2, n_embd=32, n_positions=256)
    return model, tokenizer


def test_suites_on_a_tiny_model(tiny, pool, tmp_path):
    model, tokenizer = tiny
    generate = functools.partial(generate_completions, model, tokenizer, batch_size=2)
    fens = [START, AFTER_E4, SCHOLAR]
    results = {
        "policy": policy_suite(
            generate,
            fens,
            pool.analyse_many(fens),
            decoding=SuiteDecoding(("greedy", "sampled"), max_new_tokens=8),
        ),
        "env": env_suite(generate, [env_prompt(START, "e2e4", ["e2e4"])], ["normal"], max_new_tokens=8),
        "mate": mate_suite(generate, [SCHOLAR], decoding=SuiteDecoding(max_new_tokens=8)),
        "selfplay": selfplay_suite(generate, games=2, max_plies=3, decoding=SAMPLED_8),
        "match": match_suite(generate, games=2, limit=EngineLimit(depth=1), max_plies=4, decoding=SAMPLED_8),
    }
    for metrics in results.values():
        for name, metric in metrics.items():
            low = -0.3 if name.endswith("reward") else 0.0  # the rewards' penalty for unreadable answers
            assert metric.value is None or (
                low <= metric.value <= (3 if name == "legal_half_moves" else 1)
            ), name
    assert results["policy"]["greedy/invalid"].n == 3 and results["env"]["kind=normal/invalid"].n == 1
    # The outputs, with the same results as a stand-in baseline (deltas exactly 0).
    settings = {"model": "tiny", "baseline": "tiny-again"}
    summary = summarize(results, results, seed=0)
    paths = write_outputs(summary, settings, str(tmp_path / "eval"))
    saved = json.loads(Path(paths["json"]).read_text())
    row = saved["suites"]["policy"]["greedy/best_move_accuracy"]
    assert row["delta"] == {"value": 0.0, "ci": [0.0, 0.0]} and row["reference"] == 0.166
    text = Path(paths["md"]).read_text()
    assert (
        "## env by transition kind" in text and "| greedy/top5_move_accuracy |" in text and "39.20%" in text
    )
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_callback_logs_through_the_trainer(tiny, pool, tmp_path):
    from datasets import Dataset

    model, tokenizer = tiny
    prompts = [policy_prompt(START), policy_prompt(AFTER_E4), env_prompt(START, "e2e4", ["e2e4"])]
    dataset = Dataset.from_dict({"prompt": prompts, "task": ["P", "P", "A"]})
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, processing_class=tokenizer)
    callback = EvalCallback(trainer, dataset, pool, 5, EvalSettings(max_new_tokens=8))
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)  # the curve's first point, at step 0
    assert trainer.state.log_history[-1]["step"] == 0
    state.global_step = 3
    callback.on_train_begin(args, state, control)  # a resumed run: no second step-0 point
    callback.on_step_end(args, state, control)
    assert len(trainer.state.log_history) == 1
    trainer.state.global_step = state.global_step = 5
    model.train()
    callback.on_step_end(args, state, control)
    logged = trainer.state.log_history[-1]
    assert logged["step"] == 5 and model.training
    assert 0.0 <= logged["eval/policy/greedy/top5_move_accuracy"] <= 1.0
    assert 0.0 <= logged["eval/policy/greedy/best_move_loss"] <= 1.0  # on the learning curve too
    assert "eval/env/next_state_accuracy" in logged and not any("kind=" in k for k in logged)


def test_command_end_to_end_with_baseline(tiny, pool, tmp_path):
    """`rookworld eval` on a saved tiny model against itself: every suite, data from a raw text file."""
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    lines = []
    for fen in (START, AFTER_E4, SCHOLAR):
        analysis = pool.analyse(fen)
        lines.append(
            render_policy(fen, [e.move for e in analysis], [e.pawns for e in analysis], analysis[0].move)
        )
    lines += [render_env(env_sample(START, "e2e4", [])), render_env(env_sample(START, "e2e5", []))]
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    task = {"examples": [{"input": "1. f3 e5 2. g4", "target": "Qh4#"}]}
    (tmp_path / "task.json").write_text(json.dumps(task))
    out = tmp_path / "out"
    argv = [
        str(tmp_path / "model"),
        "--baseline",
        str(tmp_path / "model"),
        "--data",
        str(tmp_path / "test.txt"),
    ]
    argv += [
        "--suites",
        "policy,env,mate,selfplay,match",
        "--out",
        str(out),
        "--bigbench",
        str(tmp_path / "task.json"),
    ]
    argv += ["--policy_samples", "2", "--env_samples", "5", "--mate_samples", "2", "--selfplay_games", "2"]
    argv += [
        "--match_games",
        "2",
        "--max_plies",
        "4",
        "--max_new_tokens",
        "8",
        "--depth",
        "2",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    saved = json.loads((out / "eval.json").read_text())
    sizes = saved["settings"]["sizes"]
    assert (
        sizes["policy_positions"] == 2 and sizes["env_transitions"] == 2 and sizes["bigbench_positions"] == 1
    )
    assert (
        saved["settings"]["engine_limit"] == "depth=2"
        and "Stockfish" in saved["settings"]["versions"]["stockfish"]
    )
    assert set(saved["suites"]) == {"policy", "env", "mate", "mate_bigbench", "selfplay", "match"}
    kinds = {k for k in saved["suites"]["env"] if k.startswith("kind=")}
    assert {k.split("/")[0] for k in kinds} == {"kind=normal", "kind=illegal"}
    # Same model, same items, greedy: the paired difference is exactly zero.
    assert saved["suites"]["env"]["next_state_accuracy"]["delta"] == {"value": 0.0, "ci": [0.0, 0.0]}
    assert saved["suites"]["mate_bigbench"]["greedy/mate_accuracy"]["reference"] == 0.137
    assert (out / "eval.md").is_file() and (out / "eval.png").is_file()


@pytest.mark.integration  # a GRPO Trainer
def test_eval_callback_in_grpo_keeps_training_metrics(tiny, pool, tmp_path):
    """With TRL's GRPOTrainer, eval rows before training and at every step leave the training averages in
    the regular rows."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = tiny
    prompts = [policy_prompt(START), env_prompt(START, "e2e4", ["e2e4"])] * 4
    dataset = Dataset.from_dict({"prompt": prompts, "task": ["P", "A"] * 4})
    config = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=4, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
        disable_tqdm=True,
    )  # fmt: skip
    length = lambda completions, **kw: [float(len(c)) for c in completions]  # noqa: E731
    trainer = GRPOTrainer(
        model=model, reward_funcs=[length], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.add_callback(
        EvalCallback(
            trainer,
            dataset,
            pool,
            1,
            EvalSettings(policy_samples=1, env_samples=1, max_new_tokens=4),
        )
    )
    trainer.train()
    evals = [row for row in trainer.state.log_history if "eval/env/invalid" in row]
    train = [row for row in trainer.state.log_history if "loss" in row]
    assert [row["step"] for row in evals] == [0, 1, 2] and [row["step"] for row in train] == [1, 2]
    assert all("reward" in row and "completions/mean_length" in row for row in train)
    assert not any("reward" in row for row in evals)
