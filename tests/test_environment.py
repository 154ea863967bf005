"""The A: ground truth against hand-checked chess positions: real python-chess, no mocks.

.venv/bin/pytest tests/test_environment.py -q
"""

import chess
import pytest

from rookworld_trl.chess.environment import (
    env_sample,
    env_truth,
    illegal_kind,
    legal_move,
    parse_board,
    transition,
)
from rookworld_trl.chess.formats import render_env, split_prompt_completion

START = chess.STARTING_FEN


def test_legal_move_goes_on():
    assert transition(START, "e2e4") == (
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
        0.001,
        False,
        False,
    )
    # black's move advances the full-move number
    fen = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"
    assert transition(fen, "g8f6")[0] == "rnbqkb1r/pppppppp/5n2/8/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 1 2"


@pytest.mark.parametrize(
    "fen,move",
    [
        (START, "e2e5"),  # not a pawn move
        (START, "e7e5"),  # the opponent's piece
        (START, "g1g3"),  # not a knight move
        ("4k3/8/8/8/8/8/3r4/4K3 w - - 0 1", "e1e2"),  # king into check
        ("4k3/4r3/8/8/8/8/4B3/4K3 w - - 0 1", "e2d3"),  # pinned bishop
        ("r3kr2/8/8/8/8/8/8/R3K2R w KQq - 0 1", "e1g1"),  # castling through an attacked square
        ("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", "e1h1"),  # king-takes-rook castling is not canonical UCI
        ("8/4P3/8/8/8/8/k7/4K3 w - - 0 1", "e7e8"),  # promotion without a piece
        (START, "e2e4q"),  # promotion piece on a non-promotion
        (START, "0000"),  # null move
        (START, "E2E4"),
        (START, "e9e4"),
        (START, "hello"),
        (START, ""),
    ],
)
def test_illegal_move_keeps_position(fen, move):
    assert transition(fen, move) == (chess.Board(fen).fen(), -1.0, False, True)


def test_mate_wins_for_the_mover():
    # fool's mate: black mates, the reward is the mover's
    board = chess.Board()
    for m in ["f2f3", "e7e5", "g2g4"]:
        board.push_uci(m)
    new_fen, reward, terminated, truncated = transition(board.fen(), "d8h4")
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert new_fen == "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"


def test_check_is_not_the_end():
    assert transition("4k3/8/8/8/8/8/8/R3K3 w Q - 0 1", "a1a8") == (
        "R3k3/8/8/8/8/8/8/4K3 b - - 1 1",
        0.001,
        False,
        False,
    )


def test_stalemate_is_a_draw():
    new_fen, reward, terminated, truncated = transition("7k/8/6K1/8/8/8/8/5Q2 w - - 0 1", "f1f7")
    assert (new_fen, reward, terminated, truncated) == ("7k/5Q2/6K1/8/8/8/8/8 b - - 1 1", 0.5, True, False)


def test_insufficient_material_is_a_draw():
    # the king takes the last knight: king against king
    assert transition("7k/8/8/8/8/1n6/K7/8 w - - 0 1", "a2b3") == (
        "7k/8/8/8/8/1K6/8/8 b - - 0 1",
        0.5,
        True,
        False,
    )
    # a rook is enough material: the game goes on
    assert transition("7k/8/8/8/8/1n6/K7/6R1 w - - 0 1", "a2b3")[1:] == (0.001, False, False)


def test_seventy_five_move_rule():
    # the 150th half-move without capture or pawn move ends the game
    fen = "7k/8/8/8/8/8/R7/K7 w - - 149 100"
    assert transition(fen, "a2b2") == ("7k/8/8/8/8/8/1R6/K7 b - - 150 100", 0.5, True, False)
    # one half-move earlier the game goes on
    assert transition("7k/8/8/8/8/8/R7/K7 w - - 148 100", "a2b2")[1:] == (0.001, False, False)
    # a capture resets the clock
    assert transition("7k/8/8/8/8/8/Rn6/K7 w - - 149 100", "a2b2") == (
        "7k/8/8/8/8/8/1R6/K7 b - - 0 100",
        0.001,
        False,
        False,
    )


def test_castling_both_sides_updates_rights():
    fen = "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1"
    assert transition(fen, "e1g1")[0] == "r3k2r/8/8/8/8/8/8/R4RK1 b kq - 1 1"
    assert transition(fen, "e1c1")[0] == "r3k2r/8/8/8/8/8/8/2KR3R b kq - 1 1"
    black = "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1"
    assert transition(black, "e8c8")[0] == "2kr3r/8/8/8/8/8/8/R3K2R w KQ - 1 2"


def test_en_passant():
    # a double step next to an enemy pawn writes the en-passant square (only when a capture is legal)
    before = "rnbqkbnr/ppp1pppp/8/3pP3/8/8/PPPP1PPP/RNBQKBNR b KQkq - 0 2"
    after = "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3"
    assert transition(before, "f7f5")[0] == after
    # the capture removes the pawn that passed
    assert transition(after, "e5f6") == (
        "rnbqkbnr/ppp1p1pp/5P2/3p4/8/8/PPPP1PPP/RNBQKBNR b KQkq - 0 3",
        0.001,
        False,
        False,
    )
    # no capture available: no en-passant square
    assert transition(START, "e2e4")[0].split()[3] == "-"


def test_promotion_and_underpromotion():
    fen = "8/4P3/8/8/8/8/k7/4K3 w - - 0 1"
    assert transition(fen, "e7e8q")[0] == "4Q3/8/8/8/8/8/k7/4K3 b - - 0 1"
    assert transition(fen, "e7e8n")[0] == "4N3/8/8/8/8/8/k7/4K3 b - - 0 1"


def test_history_keeps_last_ten_including_the_move():
    board = chess.Board()
    moves = ["g1f3", "g8f6", "f3g1", "f6g8"] * 3
    for m in moves:
        board.push_uci(m)
    sample = env_sample(board.fen(), "e2e4", moves)
    assert sample.history == (*moves[-9:], "e2e4")
    assert env_sample(START, "e2e4", []).history == ("e2e4",)
    # an illegal move is in the history too (the history is what was tried)
    assert env_sample(START, "e2e5", ["a", "b"]).history == ("a", "b", "e2e5")


def test_env_truth_from_prompt_alone_with_or_without_prefix():
    sample = env_sample(START, "e2e4", [])
    line = render_env(sample)
    prompt, _ = split_prompt_completion(line)
    assert env_truth(prompt) == sample
    assert env_truth(prompt.removeprefix("A: ")) == sample


def test_bad_fen_is_a_clear_error():
    with pytest.raises(ValueError, match="invalid FEN 'not a fen'"):
        transition("not a fen", "e2e4")
    with pytest.raises(ValueError, match="invalid position"):
        parse_board("8/8/8/8/8/8/8/8 w - - 0 1")  # no kings


def test_legal_move_returns_the_move():
    assert legal_move(chess.Board(), "e2e4") == chess.Move.from_uci("e2e4")
    assert legal_move(chess.Board(), "e2e5") is None


def test_illegal_kind_names_why_a_move_is_illegal():
    pinned = chess.Board("4k3/4r3/8/8/8/8/4B3/4K3 w - - 0 1")  # the e2 bishop shields its king
    assert illegal_kind(pinned, "e2d3") == "king_in_check" and illegal_kind(pinned, "e1d1") is None
    castle = chess.Board("4k3/8/8/8/8/8/3P4/4K2R w K - 0 1")
    assert illegal_kind(castle, "e1g1") is None and illegal_kind(castle, "e1h1") == "noncanonical"
    assert illegal_kind(castle, "d2c3") == "geometry"  # a pawn's capture of an empty square
    assert (
        illegal_kind(castle, "d2d5") == "geometry" and illegal_kind(castle, "h1h1") == "no_move"
    )  # not a move
