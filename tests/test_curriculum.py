"""The curriculum of wrongly answered positions (rookworld_trl/grpo/curriculum.py): what the buffer keeps and drops,
graded by the real policy grader (Stockfish), the mix into P: prompts, and a GRPO run that trains on it.

    .venv/bin/pytest tests/test_curriculum.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rookworld_trl.chess.engine import EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.formats import policy_completion, policy_prompt
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.grpo.config import RookWorldGRPOConfig
from rookworld_trl.grpo.curriculum import Curriculum, curriculum_for
from rookworld_trl.grpo.rewards.policy import PolicyGrader

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "rookworld_trl" / "assets" / "model")
DATA = str(ROOT / "rookworld_trl" / "assets" / "data")
QUEEN_UP = "rnb1kbnr/pppp1ppp/8/4p3/4P2q/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"
START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
needs_stockfish = pytest.mark.skipif(find_stockfish() is None, reason="needs Stockfish")


def answers(pool: EnginePool, fen: str, legal: int, n: int = 4) -> list[str]:
    """n answers to `fen` listing the engine's top 5, `legal` of them with a legal B: (the rest: B: a1a8)."""
    analysis = pool.analyse(fen)
    top, evals = [m.move for m in analysis[:5]], [m.cp / 100 for m in analysis[:5]]
    return [policy_completion(top, evals, top[0] if i < legal else "a1a8") for i in range(n)]


@needs_stockfish
def test_a_group_below_the_threshold_is_kept_until_a_group_gets_it_right():
    rows = [{"prompt": policy_prompt(QUEEN_UP), "fen": QUEEN_UP}] * 4 + [{"prompt": policy_prompt(START)}] * 4
    curriculum = Curriculum(ratio=0.5, size=10, threshold=0.5, seed=0)
    with EnginePool(1, EngineLimit(depth=8), multipv=5) as pool:
        grader = PolicyGrader(pool, "dense")
        fens = [QUEEN_UP] * 4 + [START] * 4

        def components(queen_legal: int, start_legal: int) -> list[dict]:
            texts = answers(pool, QUEEN_UP, queen_legal) + answers(pool, START, start_legal)
            return [parts for _, parts in grader.score(fens, texts)]

        figures = curriculum.observe(rows, components(1, 3), 4)  # 1/4 legal B: is wrong, 3/4 is not
        assert list(curriculum.buffer) == [policy_prompt(QUEEN_UP)]
        assert figures == {"curriculum/buffer_size": 1.0, "curriculum/wrong": 0.5}
        curriculum.observe(rows, components(2, 0), 4)  # 2/4 is right at threshold 0.5: it leaves
        assert list(curriculum.buffer) == [policy_prompt(START)]
        assert curriculum.buffer[policy_prompt(START)] == rows[4]


def test_the_buffer_is_bounded_oldest_first():
    curriculum = Curriculum(ratio=1.0, size=2, threshold=0.5, seed=0)
    wrong = {"best_legal": 0.0}
    for fen in (QUEEN_UP, START, QUEEN_UP.replace("2 3", "2 4")):
        curriculum.observe([{"prompt": policy_prompt(fen)}], [wrong], 1)
    assert list(curriculum.buffer) == [policy_prompt(START), policy_prompt(QUEEN_UP.replace("2 3", "2 4"))]


@pytest.mark.parametrize("ratio", [0.25, pytest.param(1.0, marks=pytest.mark.slow)])  # each a Trainer (~6 s)
def test_mix_replaces_p_prompts_at_the_ratio_and_gives_a_group_one_row(ratio):
    rows = load_rookworld_dataset(DATA, split="train", mix_env_ratio=0.0, max_samples=200).to_list()
    curriculum = Curriculum(ratio=ratio, size=100, threshold=0.5, seed=3)
    curriculum.observe(rows[:20], [{"best_legal": 0.0}] * 20, 1)
    batch = [row for row in rows[100:200] for _ in range(2)] + [{"prompt": "A: " + START + "+e2e4++"}]
    mixed, figures = curriculum.mix(batch, step=7)
    assert mixed[-1] == batch[-1]  # A: rows are never replaced
    replaced = [new for new, old in zip(mixed[:-1], batch[:-1], strict=True) if new is not old]
    assert all(new in rows[:20] for new in replaced)
    assert all(mixed[i] == mixed[i + 1] for i in range(0, 200, 2))  # a group's copies: one row
    assert figures["curriculum/mixed_fraction"] == pytest.approx(len(replaced) / 200)
    assert figures["curriculum/mixed_fraction"] == pytest.approx(ratio, abs=0.12)
    assert curriculum.mix(batch, step=7)[0] == mixed  # the same draw on every process


def test_off_by_default_and_bad_values_are_one_line(tmp_path):
    assert curriculum_for(RookWorldGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])) is None
    with pytest.raises(ValueError, match="curriculum_ratio in"):
        RookWorldGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], curriculum_ratio=1.5)


@needs_stockfish
@pytest.mark.slow  # a GRPO run (~10 s); the mix and the buffer are the default tier's
def test_grpo_run_trains_on_the_positions_it_got_wrong(tmp_path):
    from rookworld_trl.grpo.rewards.functions import make_policy_reward
    from rookworld_trl.grpo.trainer import RookWorldGRPOTrainer
    from rookworld_trl.model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    rows = load_rookworld_dataset(DATA, split="train", mix_env_ratio=0.0, max_samples=64)
    pool = EnginePool(1, EngineLimit(depth=8), multipv=5)
    graded = make_policy_reward(engine=pool, shaping="dense")
    prompts_by_step: list[list[str]] = []

    def policy_reward(prompts, completions, **kwargs):
        prompts_by_step.append(list(prompts))
        return graded(prompts, completions, **kwargs)

    policy_reward.grader = graded.grader  # the curriculum grades answers with it, as the trainer finds it
    args = RookWorldGRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=16, num_generations=4,
        max_completion_length=60, use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
        seed=0, learning_rate=1e-4, disable_tqdm=True, temperature=0.6, curriculum_ratio=1.0,
        curriculum_threshold=1.0,
    )  # fmt: skip
    trainer = RookWorldGRPOTrainer(
        model=model, reward_funcs=[policy_reward], args=args, train_dataset=rows, processing_class=tokenizer
    )
    kept = []
    curriculum = trainer.curriculum
    observe = curriculum.observe
    curriculum.observe = lambda *a: (kept.append(set(curriculum.buffer)), observe(*a))[1]
    try:
        trainer.train()
    finally:
        pool.close()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs[0]["curriculum/buffer_size"] >= 1 and 0.0 < logs[0]["curriculum/wrong"] <= 1.0
    assert logs[1]["curriculum/mixed_fraction"] == 1.0  # ratio 1: every P: prompt of step 2 from the buffer
    assert set(prompts_by_step[1]) <= kept[1]  # ... the positions step 1 got wrong
