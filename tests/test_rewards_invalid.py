"""Rewards never raise on a dataset row or a completion (docs/FORMATS.md, "Invalid positions"): a prompt with
no position to judge gets None and is counted, a predicted next state that is no position is capped.
Hypothesis draws invalid board text and arbitrary prompts; the P: reward uses the real Stockfish.

Run: .venv/bin/python -m pytest tests/test_rewards_invalid.py
"""

import chess
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rookworld_trl.chess.engine import EngineLimit, EnginePool
from rookworld_trl.chess.formats import env_prompt, policy_prompt
from rookworld_trl.grpo.rewards import functions as rewards
from rookworld_trl.grpo.rewards.functions import env_reward, make_policy_reward, score_env
from rookworld_trl.grpo.rewards.policy import SHAPINGS

E2E4 = env_prompt(chess.STARTING_FEN, "e2e4", ["e2e4"])
E2E4_TRUE = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0"
PLACEMENT = st.text("pnbrqkPNBRQK123456789/x", min_size=1, max_size=70)
FINISHED = {  # valid positions with no move to judge: the engine has no analysis of them
    "mate": "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3",
    "stalemate": "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1",
    "bare kings": "8/8/8/4k3/8/8/8/4K3 w - - 0 1",
}


@pytest.fixture(scope="module")
def pool():
    with EnginePool(workers=1, limit=EngineLimit(depth=2)) as engines:
        yield engines


def invalid(placement: str) -> bool:
    try:
        return not chess.Board(f"{placement} w - - 0 1").is_valid()
    except ValueError:
        return True


def recorder():
    metrics = {}
    return metrics, lambda name, value: metrics.__setitem__(name, value)


@settings(max_examples=150, deadline=None)
@given(PLACEMENT)
def test_a_next_state_that_is_no_position_scores_at_most_some_fields(placement):
    fen = f"{placement} b KQkq - 0 1"
    reward, parts = score_env(E2E4, f"{fen}+0.001+0+0")
    if invalid(placement):
        assert reward <= rewards.INVALID_STATE_CAP and parts["fen_valid"] == 0.0
    for shaping in SHAPINGS:
        assert score_env(E2E4, f"{fen}+0.001+0+0", shaping)[0] <= 1.0


def test_near_miss_that_is_no_position_is_capped():
    # one square off the truth (a near miss, 0.8) but with a second white king: no legal position
    two_kings = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBKKBNR b KQkq - 0 1+0.001+0+0"
    assert score_env(E2E4, two_kings)[0] == rewards.INVALID_STATE_CAP
    assert score_env(E2E4, "rnbqkbnr/pppppppp/8/8/3P4/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0")[0] == 0.8


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PLACEMENT.filter(invalid))
def test_rewards_never_raise_on_prompts_that_are_no_position(pool, placement):
    fen = f"{placement} w - - 0 1"
    env_prompt_text, policy_prompt_text = f"A: {fen}+e2e4+e2e4+", policy_prompt(fen)
    metrics, log = recorder()
    assert env_reward([env_prompt_text, E2E4], ["x", E2E4_TRUE], log_metric=log) == [None, 1.0]
    assert metrics["env/invalid_prompts"] == 1.0
    out = make_policy_reward(engine=pool)([policy_prompt_text], [" e2e4"], log_metric=log)
    assert out == [None] and metrics["policy/invalid_prompts"] == 1.0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=100), completion=st.text(max_size=60), task=st.sampled_from(["P", "A", None]))
def test_rewards_never_raise_on_any_prompt_text(pool, prompt, completion, task):
    """Whatever a dataset row holds, and whatever its `task` column says: a reward or None, never an error."""
    policy_reward = make_policy_reward(engine=pool)
    columns = {} if task is None else {"task": [task]}
    for text in (prompt, "A: " + prompt, f"A: {chess.STARTING_FEN}+{prompt}", policy_prompt(prompt)):
        for reward_func in (env_reward, policy_reward):
            out = reward_func([text], [completion], **columns)
            assert len(out) == 1 and (out[0] is None or -0.3 <= out[0] <= 1.0)


@pytest.mark.parametrize("name", FINISHED)
def test_a_finished_game_is_no_p_prompt_to_judge(pool, name):
    metrics, log = recorder()
    out = make_policy_reward(engine=pool)(
        [policy_prompt(FINISHED[name])], [" e2e4 E: 0.1 B: e2e4"], log_metric=log
    )
    assert out == [None] and metrics["policy/invalid_prompts"] == 1.0


def test_kingless_published_prompt_warns_once(caplog):
    kingless = "A: 8/8/8/8/8/8/4P3/8 w - - 0 1+e2e4+e2e4+"
    rewards._WARNED.discard("env")
    with caplog.at_level("WARNING", logger="rookworld_trl.grpo.rewards.functions"):
        for _ in range(3):
            assert env_reward([kingless], ["8/8/8/8/4P3/8/8/8 b - - 0 1+0.001+0+0"]) == [None]
    assert len([r for r in caplog.records if "no valid chess position" in r.getMessage()]) == 1
