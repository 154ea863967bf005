"""The P:/A: text formats: exact rendering (docs/FORMATS.md), round trips, tolerant parsing, the token split.

.venv/bin/pytest tests/test_formats.py -q
"""

import contextlib
import random

import chess
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rookworld_trl.chess.environment import env_sample
from rookworld_trl.chess.formats import (
    EOS,
    EnvSample,
    FormatError,
    PolicySample,
    parse_env_completion,
    parse_line,
    parse_policy_completion,
    policy_completion,
    render,
    render_env,
    render_policy,
    split_prompt_completion,
    task_of,
)

START = chess.STARTING_FEN
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_board(rng: random.Random, plies: int) -> chess.Board:
    board = chess.Board()
    for _ in range(plies):
        moves = list(board.legal_moves)
        if not moves:
            break
        board.push(rng.choice(moves))
    return board


def random_policy(rng: random.Random) -> PolicySample:
    board = random_board(rng, rng.randrange(0, 80))
    while board.is_game_over():
        board.pop()
    moves = rng.sample([m.uci() for m in board.legal_moves], k=min(5, board.legal_moves.count()))
    evals = [
        rng.choice([rng.randint(-3000, 3000), 100000 - rng.randint(1, 20), rng.randint(1, 20) - 100000]) / 100
        for _ in moves
    ]
    return PolicySample(board.fen(), tuple(moves), tuple(evals), rng.choice(moves))


def random_env(rng: random.Random) -> EnvSample:
    board = random_board(rng, rng.randrange(0, 80))
    legal = [m.uci() for m in board.legal_moves]
    if legal and rng.random() < 0.8:
        move = rng.choice(legal)
    else:
        move = chess.square_name(rng.randrange(64)) + chess.square_name(rng.randrange(64))
    previous = [m.uci() for m in board.move_stack]
    return env_sample(board.fen(), move, previous)


def sample_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [render(random_policy(rng) if i % 2 else random_env(rng)) for i in range(n)]


# ------------------------------------------------------------------------------------------- rendering


def test_policy_line_is_exact():
    line = render_policy(START, ["e2e4", "d2d4", "g1f3"], [0.3, -1.25, 0], "e2e4")
    assert line[:3] == "P: "
    assert line[3:93] == START.ljust(90)
    assert line[93:96] == "M: "
    assert line[96:126] == "e2e4 d2d4 g1f3".ljust(30)
    assert line[126:129] == "E: "
    assert line[129:169] == "0.3 -1.25 0.0".ljust(40)
    assert line[169:] == "B: e2e4"


def test_policy_mate_scores_and_shuffle():
    rng = random.Random(1)
    moves, evals = ["a2a3", "b2b3", "c2c3", "d2d3", "e2e3"], [999.97, -999.99, 0.01, 1.0, -0.5]
    line = render_policy(START, moves, evals, "a2a3", rng=rng)
    parsed = parse_line(line)
    assert "999.97" in line and "-999.99" in line
    # shuffled together: every move keeps its own evaluation
    assert dict(zip(parsed.moves, parsed.evals, strict=True)) == dict(zip(moves, evals, strict=True))
    assert list(parsed.moves) != moves  # seed 1 does move them
    assert parsed.best == "a2a3"


def test_policy_render_rejects_inconsistent_labels():
    with pytest.raises(FormatError, match="2 moves but 1 evals"):
        render_policy(START, ["e2e4", "d2d4"], [0.3], "e2e4")
    with pytest.raises(FormatError, match="best move g1f3 is not among"):
        render_policy(START, ["e2e4"], [0.3], "g1f3")


def test_env_line_is_exact():
    line = render_env(env_sample(START, "e2e4", []))
    assert line == (
        "A: rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1+e2e4+e2e4+"
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0"
    )
    illegal = render_env(env_sample(START, "e2e5", ["d2d4"]))
    assert illegal.endswith(f"+d2d4 e2e5+{START}+-1.0+0+1")
    mate = render_env(EnvSample(START, "a1a2", ("a1a2",), START, 1.0, True, False))
    assert mate.endswith("+1.0+1+0")
    draw = render_env(EnvSample(START, "a1a2", ("a1a2",), START, 0.5, True, False))
    assert draw.endswith("+0.5+1+0")


# ------------------------------------------------------------------------------------- split and parse


def test_split_points():
    line = render_policy(START, ["e2e4"], [0.3], "e2e4")
    prompt, completion = split_prompt_completion(line)
    assert prompt == "P: " + START.ljust(90) + "M:"
    assert completion.startswith(" e2e4")
    line = render_env(env_sample(START, "e2e4", []))
    prompt, completion = split_prompt_completion(line)
    assert prompt == f"A: {START}+e2e4+e2e4+"
    assert completion == "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1+0.001+0+0"


def test_env_prefix_is_optional_on_input():
    line = render_env(env_sample(START, "e2e4", []))
    bare = line.removeprefix("A: ")
    assert task_of(bare) == "A"
    assert parse_line(bare) == parse_line(line)
    assert split_prompt_completion(bare) == split_prompt_completion(line)
    assert parse_line(line + EOS + "junk after the end") == parse_line(line)


@pytest.mark.parametrize(
    "line,match",
    [
        ("hello", "neither 'P:' nor 'A:'"),
        ("P: " + START.ljust(90) + "E: 0.3 B: e2e4", "no 'M:'"),
        ("P: 8/8 w - - 0 1" + " " * 80 + "M: e2e4 E: 0.3 B: e2e4", "fen"),
        ("P: " + START.ljust(90) + "M: e2e4 E: x B: e2e4", "evals"),
        ("P: " + START.ljust(90) + "M: e2e4 d2d4 E: 0.3 B: e2e4", "2 moves but 1 evals"),
        ("P: " + START.ljust(90) + "M: e2e4 E: 0.3", "best"),
        ("A: " + START + "+e2e4+e2e4+" + START + "+0.001+0", "fields"),
        ("A: " + START + "+e2e4+e2e4+" + START + "+0.001+0+2", "truncated"),
        ("A: " + START + "+e2e4+e2e4+" + START + "+win+0+0", "reward"),
        ("A: " + START + "++e2e4+" + START + "+0.001+0+0", "move"),
    ],
)
def test_strict_parse_names_the_field(line, match):
    with pytest.raises(FormatError, match=match):
        parse_line(line)


def test_format_error_field_is_a_short_reason():
    with pytest.raises(FormatError) as error:
        parse_line("P: " + START.ljust(90) + "M: e2e4 E: x B: e2e4")
    assert error.value.field == "P: evals"
    with pytest.raises(FormatError) as error:
        parse_line("hello")
    assert error.value.field == "line"


@FAST
@given(st.randoms(use_true_random=False))
def test_round_trip_policy(rng):
    sample = random_policy(rng)
    line = render(sample)
    assert parse_line(line) == sample
    prompt, completion = split_prompt_completion(line)
    assert prompt + completion == line
    parsed = parse_policy_completion(completion + EOS)
    assert parsed.ok
    assert (tuple(parsed.moves), tuple(parsed.evals), parsed.best) == (
        sample.moves,
        sample.evals,
        sample.best,
    )


@FAST
@given(st.randoms(use_true_random=False))
def test_round_trip_env(rng):
    sample = random_env(rng)
    line = render(sample)
    assert parse_line(line) == sample
    prompt, completion = split_prompt_completion(line)
    assert prompt + completion == line
    parsed = parse_env_completion(completion)
    assert parsed.ok
    assert (parsed.new_fen, parsed.reward, parsed.terminated, parsed.truncated) == (
        sample.new_fen,
        sample.reward,
        sample.terminated,
        sample.truncated,
    )


# ----------------------------------------------------------------------------------- tolerant parsing


def test_tolerant_policy_parse_reports_fields():
    parsed = parse_policy_completion(" e2e4   d2d4 E: 0.3 0.2   B: e2e4 trailing words")
    assert parsed.ok and parsed.best == "e2e4"
    parsed = parse_policy_completion(" e2e4 zz E: 0.3 nan B:")
    assert set(parsed.errors) == {"moves", "evals", "best"}
    assert parsed.moves == [] and parsed.evals == [] and parsed.best is None
    assert parse_policy_completion("").errors.keys() == {"moves", "evals", "best"}


def test_tolerant_env_parse_reports_fields():
    parsed = parse_env_completion(START + "+0.001+0")  # truncated generation
    assert parsed.new_fen == START and parsed.reward == 0.001 and parsed.terminated is False
    assert set(parsed.errors) == {"fields", "truncated"}
    parsed = parse_env_completion("garbage")
    assert set(parsed.errors) == {"fields", "new_fen", "reward", "terminated", "truncated"}


def mutate(line: str, rng: random.Random) -> str:
    chars = list(line)
    alphabet = "+ :.-0123456789abcdefghkqrnbpKQRNBP/\n\t" + EOS
    for _ in range(rng.randint(1, 6)):
        op, i = rng.randrange(3), rng.randrange(len(chars) + 1)
        if op == 0 and i < len(chars):
            del chars[i]
        elif op == 1:
            chars.insert(i, rng.choice(alphabet))
        elif i < len(chars):
            chars[i] = rng.choice(alphabet)
    return "".join(chars)


def check_never_raises(text: str) -> None:
    parse_policy_completion(text)
    parse_env_completion(text)
    with contextlib.suppress(FormatError):  # the strict parser fails only with FormatError
        parse_line(text)


@FAST
@given(st.text(max_size=300))
def test_parse_never_raises_on_random_text(text):
    check_never_raises(text)


@FAST
@given(st.randoms(use_true_random=False), st.sampled_from(sample_lines(20)))
def test_parse_never_raises_on_mutated_lines(rng, line):
    check_never_raises(mutate(line, rng))
    prompt, completion = split_prompt_completion(line)
    check_never_raises(mutate(completion, rng))


# -------------------------------------------------------------------------- token boundary invariant


@pytest.fixture(scope="module")
def gpt2_style_tokenizer() -> Tokenizer:
    """A tiny byte-level BPE with GPT-2's pre-tokenizer regex, trained on rendered lines."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[EOS]
    )
    tokenizer.train_from_iterator(sample_lines(300, seed=1), trainer)
    return tokenizer


def test_split_keeps_tokens(gpt2_style_tokenizer):
    def ids(text):
        return gpt2_style_tokenizer.encode(text).ids

    lines = sample_lines(200, seed=2)
    for line in lines:
        prompt, completion = split_prompt_completion(line)
        assert ids(prompt) + ids(completion) == ids(line), line
    # the check has teeth: a split inside the P: padding (before "M:") changes the tokens
    policy = [line for line in lines if line.startswith("P:")]
    naive = [(line[:93], line[93:]) for line in policy]
    assert any(ids(p) + ids(c) != ids(p + c) for p, c in naive)


def test_exact_means_the_renderer_would_write_it():
    completion = policy_completion(["e2e4", "d2d4"], [0.3, 0.25], "e2e4")
    assert parse_policy_completion(completion).exact
    assert parse_policy_completion(completion + EOS).exact  # the end-of-text token is not part of it
    loose = parse_policy_completion(" e2e4 d2d4 E: 0.3 0.25 B: e2e4")
    assert loose.ok and not loose.exact
    assert parse_policy_completion(completion.replace("B: e2e4", "B: g1f3")).exact  # layout only, not chess
    assert not parse_policy_completion(completion.replace("0.3", "0.30")).exact  # numbers as str(float)
