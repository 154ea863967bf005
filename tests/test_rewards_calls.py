"""The reward functions as TRL calls them: dataset labels as an engine cache, batches, a killed engine, the
columns and loggers TRL passes, and fuzzed answers; real Stockfish and python-chess (no mocks).

Run: .venv/bin/pytest tests/test_rewards_calls.py   (policy tests are skipped where Stockfish is not installed)
"""

import math
import os
import signal

import chess
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reward_fixtures import (
    E2E4,
    E2E4_TRUE,
    LIMIT,
    MATE_IN_1,
    QUEEN_UP,
    START,
    TWO_MOVES,
    needs_stockfish,
    true_completion,
)

from rookworld_trl.chess.engine import EnginePool, MoveEval
from rookworld_trl.chess.formats import (
    policy_prompt,
)
from rookworld_trl.grpo.rewards import functions as rewards
from rookworld_trl.grpo.rewards.functions import (
    get_reward_funcs,
    make_policy_reward,
    score_env,
)
from rookworld_trl.grpo.rewards.policy import (
    PENALTY,
    POLICY_COMPONENTS,
    SHAPINGS,
    label_analysis,
    score_policy,
)

# --------------------------------------------------------------------------------- labels and caching


@needs_stockfish
def test_label_at_the_pool_limit_is_a_cache():
    with EnginePool(limit=LIMIT) as fresh:
        analysis = fresh.analyse(QUEEN_UP)
        calls = fresh.engine_calls
        reward = make_policy_reward(engine=fresh)
        label = dict(moves=[[m.move for m in analysis]], evals=[[m.cp / 100 for m in analysis]])
        out = reward([policy_prompt(QUEEN_UP)], [true_completion(analysis)], limit=[LIMIT.key()], **label)
        assert out == [1.0] and fresh.engine_calls == calls  # answered from the label, no search
        # field credit grades the same answers again without the labels: from the memo, not the engine
        again = rewards.policy_grader([reward]).score([QUEEN_UP], [true_completion(analysis)])
        assert again[0][0] == 1.0 and fresh.engine_calls == calls


@needs_stockfish
def test_wrong_label_is_never_rewarded_over_the_engine(pool):
    analysis = pool.analyse(QUEEN_UP)
    # The published-data kind of error: the label ranks the second move first.
    wrong = [analysis[1], analysis[0], *analysis[2:]]
    wrong = [
        MoveEval(m.move, c)
        for m, c in zip(wrong, sorted((m.cp for m in analysis), reverse=True), strict=True)
    ]
    label = dict(moves=[[m.move for m in wrong]] * 2, evals=[[m.cp / 100 for m in wrong]] * 2)
    prompts, completions = [policy_prompt(QUEEN_UP)] * 2, [true_completion(wrong), true_completion(analysis)]
    for limit in ("", "depth=99"):  # unknown limit, another limit: ignored
        out = make_policy_reward(engine=pool)(prompts, completions, limit=[limit] * 2, **label)
        assert out[1] == 1.0 and out[0] < 1.0
    # At the pool's limit but the engine already answered (memo): the engine wins.
    reward = make_policy_reward(engine=pool)
    reward(prompts[:1], completions[:1])
    out = reward(prompts, completions, limit=[LIMIT.key()] * 2, **label)
    assert out[1] == 1.0 and out[0] < 1.0


def test_malformed_labels_are_not_analyses():
    moves, evals = ["f3h4", "f1e2", "b1c3"], [6.75, 2.38, 1.51]
    assert label_analysis(TWO_MOVES, ["e1d2", "e1f1"], [0.03, -4.85]) is not None
    assert label_analysis(QUEEN_UP, moves, evals) is None  # 3 moves where 5 are legal
    assert label_analysis(TWO_MOVES, ["e1f1", "e1d2"], [-4.85, 0.03]) is None  # not best first
    assert label_analysis(TWO_MOVES, ["e1d2", "e1e2"], [0.03, -4.85]) is None  # illegal
    assert label_analysis(TWO_MOVES, ["e1d2", "e1f1"], [0.03, math.inf]) is None
    assert label_analysis(TWO_MOVES, ["e1d2", "e1f1"], None) is None


@needs_stockfish
def test_cold_batch_analyses_each_position_once():
    fens, prompts, completions, expected = [START, QUEEN_UP], [], [], {START, QUEEN_UP}
    with EnginePool(workers=2, limit=LIMIT) as fresh:
        for fen, analysis in zip(fens, fresh.analyse_many(fens), strict=True):
            board = chess.Board(fen)
            legal = [m.uci() for m in board.legal_moves]
            for move in legal[:4]:  # 4 completions per prompt, naming moves the root search may not list
                prompts.append(policy_prompt(fen))
                completions.append(f" {move} {legal[-1]} E: 0.1 0.2 B: {move}")
            for move in {*legal[:4], legal[-1]} - {m.move for m in analysis}:
                board.push_uci(move)
                expected.add(board.fen())
                board.pop()
        calls = fresh.engine_calls
        reward = make_policy_reward(engine=fresh)
        first = reward(prompts, completions)
        assert fresh.engine_calls - calls == len(expected) > 2
        assert reward(prompts, completions) == first and fresh.engine_calls - calls == len(expected)


@needs_stockfish
def test_unparseable_answers_cost_no_search():
    with EnginePool(limit=LIMIT) as fresh:
        out = make_policy_reward(engine=fresh)(
            [policy_prompt(QUEEN_UP)] * 2, [" a2a3 b2b3 E: 0 0", " f3g5 B:"]
        )
        assert out == [PENALTY, PENALTY] and fresh.engine_calls == 0


@needs_stockfish
def test_killed_engine_is_restarted_and_the_batch_completes():
    with EnginePool(limit=LIMIT) as fresh:
        reward = make_policy_reward(engine=fresh)
        assert reward([policy_prompt(START)], [" e2e4 E: 0.3 B: e2e4"])[0] is not None
        for pid in fresh.pids():
            os.kill(pid, signal.SIGKILL)  # the real Stockfish process, started by this pool
        fens = [QUEEN_UP, MATE_IN_1, TWO_MOVES]
        out = reward([policy_prompt(f) for f in fens], [" a2a3 E: 0.0 B: a2a3"] * 3)
        assert all(r is not None and -0.3 <= r <= 1.0 for r in out) and fresh.restarts >= 1


# ---------------------------------------------------------------------------------------- TRL calling


@needs_stockfish
def test_trl_style_call_with_columns_and_loggers(pool):
    analysis = pool.analyse(QUEEN_UP)
    funcs = get_reward_funcs(["policy_reward", "env_reward"], engine=pool)
    assert [f.__name__ for f in funcs] == ["policy_reward", "env_reward"]
    prompts = [policy_prompt(QUEEN_UP), E2E4, policy_prompt(QUEEN_UP), E2E4]
    completions = [true_completion(analysis), E2E4_TRUE, " nonsense", "8/8 w+0+0+0"]
    label_moves, label_evals = [m.move for m in analysis], [m.cp / 100 for m in analysis]
    columns = {
        "task": ["P", "A", "P", "A"],
        "fen": [QUEEN_UP, START, QUEEN_UP, START],
        "moves": [label_moves, [], label_moves, []],
        "evals": [label_evals, [], label_evals, []],
        "best": [label_moves[0], "", label_moves[0], ""],
        "limit": [LIMIT.key(), "", LIMIT.key(), ""],
        "move": ["", "e2e4", "", "e2e4"],
        "history": ["", "e2e4", "", "e2e4"],
        "new_fen": ["", E2E4_TRUE.split("+")[0], "", E2E4_TRUE.split("+")[0]],
        "reward": [0.0, 0.001, 0.0, 0.001],
        "terminated": [False] * 4,
        "truncated": [False] * 4,
    }
    metrics, extra = {}, {}
    log_metric = lambda name, value: metrics.setdefault(name, []).append(value)  # noqa: E731
    log_extra = lambda column, values: extra.setdefault(column, []).extend(values)  # noqa: E731
    outs = [
        f(prompts=prompts, completions=completions, completion_ids=[[0]] * 4, trainer_state=None,
          log_metric=log_metric, log_extra=log_extra, **columns)
        for f in funcs
    ]  # fmt: skip
    assert outs == [[1.0, None, PENALTY, None], [None, 1.0, None, PENALTY]]
    assert metrics["policy/parsed"] == [0.5] and metrics["env/parsed"] == [0.5]
    assert metrics["policy/best"] == [0.5] and metrics["env/fen_exact"] == [0.5]
    assert metrics["policy/cp_loss"] == [0.0]  # the unparseable sample has no best move to grade
    assert {k.split("/")[1] for k in metrics if k.startswith("policy/")} == {
        *POLICY_COMPONENTS,
        "invalid_prompts",
    }
    assert {k.split("/")[1] for k in metrics if k.startswith("env/")} == {
        *rewards.ENV_COMPONENTS,
        "invalid_prompts",
    }
    assert all(len(v) == 4 for v in extra.values())
    assert extra["policy/best"] == [1.0, None, 0.0, None] and extra["env/fen_exact"] == [None, 1.0, None, 0.0]


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward_funcs(["env_reward", "nope"])
    with pytest.raises(ValueError, match="shaping"):
        get_reward_funcs(["env_reward"], shaping="steep")
    assert get_reward_funcs(["env_reward"])[0]([E2E4], [E2E4_TRUE]) == [1.0]


@needs_stockfish
def test_other_task_only_batch_logs_columns_but_no_means(pool):
    metrics, extra = {}, {}
    out = make_policy_reward(engine=pool)(
        [E2E4], [E2E4_TRUE], log_metric=lambda n, v: metrics.setdefault(n, v),
        log_extra=lambda c, v: extra.setdefault(c, v),
    )  # fmt: skip
    assert out == [None] and metrics == {} and set(extra) == {f"policy/{k}" for k in POLICY_COMPONENTS}


# ------------------------------------------------------------------------------------------------ fuzz


def mutated(text: str):
    """A strategy of `text` with a few random edits: deletions, insertions, replacements, swaps."""
    alphabet = "abcdefgh12345678qrbnkpKQRBNP/ .-+0:EMB\n"

    def edit(draw_text, ops):
        s = draw_text
        for op, pos, ch in ops:
            i = pos % (len(s) + 1)
            s = {"del": s[:i] + s[i + 1 :], "ins": s[:i] + ch + s[i:], "rep": s[:i] + ch + s[i + 1 :]}[op]
        return s

    ops = st.lists(
        st.tuples(st.sampled_from(["del", "ins", "rep"]), st.integers(0, 200), st.sampled_from(alphabet))
    )
    return ops.map(lambda o: edit(text, o))


def any_text(true: str):
    raw = st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="replace"))
    return st.one_of(st.text(max_size=200), raw, mutated(true))


def in_range(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and PENALTY <= x <= 1.0


@settings(max_examples=300, deadline=None)
@given(completion=any_text(E2E4_TRUE), shaping=st.sampled_from(SHAPINGS))
def test_fuzz_env(completion, shaping):
    reward, parts = score_env(E2E4, completion, shaping)
    assert in_range(reward) and all(math.isfinite(v) for v in parts.values())


FUZZ_ANALYSIS = [
    MoveEval(m, cp) for m, cp in [("f3h4", 675), ("f1e2", 238), ("b1c3", 151), ("d2d4", 140), ("d2d3", 92)]
]
FUZZ_TRUE = true_completion(FUZZ_ANALYSIS)


@settings(max_examples=300, deadline=None)
@given(completion=any_text(FUZZ_TRUE), shaping=st.sampled_from(SHAPINGS))
def test_fuzz_policy_scoring(completion, shaping):
    reward, parts = score_policy(QUEEN_UP, completion, FUZZ_ANALYSIS, shaping=shaping)
    values = [x for v in parts.values() for x in (v if isinstance(v, list) else [v])]  # move_verdicts: a list
    assert in_range(reward) and all(v is None or math.isfinite(v) for v in values)


@needs_stockfish
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(completions=st.lists(any_text(FUZZ_TRUE), min_size=1, max_size=4))
def test_fuzz_policy_reward_with_the_engine(pool, completions):
    out = make_policy_reward(engine=pool)([policy_prompt(QUEEN_UP)] * len(completions), completions)
    assert all(in_range(r) for r in out)
