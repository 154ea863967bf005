"""The A: environment task's ground truth, from python-chess.

A transition: a FEN and a UCI move (possibly illegal) -> the next position, the reward, `terminated` (the game
is over after it) and `truncated` (the move was illegal; the position stays). The truth follows from the prompt
alone (`env_truth`), so repetition endings are not judged (10 plies of history cannot show one); the 75-move rule
is. A move is legal only in canonical UCI: `e1h1` (king takes rook) is illegal, since the data writes `e1g1`.

    python -c "from rookworld_trl.chess.environment import env_sample; print(env_sample(
        'rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1', 'e2e4', []))"

Games the policy plays through its P: answers (`play_games`): one batched policy call per ply, its `B:` moves
played by python-chess (GRPO's self-play positions and the eval's self-play suite).

    >>> games = play_games(lambda prompts: [" e2e4 E: 0.3 B: e2e4"] * len(prompts), [chess.STARTING_FEN], 5)
    >>> games[0].moves, games[0].end, games[0].bad_move
    (['e2e4'], 'illegal', 'e2e4')
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import chess

from rookworld_trl.chess.formats import (
    FEN_WIDTH,
    HISTORY_PLIES,
    REWARD_DRAW,
    REWARD_ILLEGAL,
    REWARD_LEGAL,
    REWARD_WIN,
    EnvSample,
    FormatError,
    PolicySample,
    normalize_line,
    parse_env_prompt,
    parse_line,
    parse_policy_completion,
    parse_policy_prompt,
    policy_prompt,
)


def parse_board(fen: str) -> chess.Board:
    """A board from a FEN, or ValueError naming the FEN (python-chess accepts some invalid positions)."""
    try:
        board = chess.Board(fen)
    except ValueError as e:
        raise ValueError(f"invalid FEN {fen!r}: {e}") from None
    if not board.is_valid():  # no king, side not to move in check, ...: move generation is not meaningful
        # python-chess's position problems in words: "no black king, too many white pawns"
        words = ", ".join(f.name.lower().replace("_", " ") for f in chess.Status if f and f in board.status())
        raise ValueError(f"invalid position {fen!r}: {words}")
    return board


def playable_position(prompt: str, fen: str | None = None) -> str | None:
    """The position of a P: prompt (or its `fen` column) when it has a move to judge: None for no valid position
    or a finished game (never raises).

    >>> playable_position("P: 7k/8/8/8/8/8/8/K7 w - - 0 1 M:"), playable_position("P: not a fen M:")
    (None, None)
    """
    try:
        board = parse_board(fen or parse_policy_prompt(prompt))
    except ValueError:  # FormatError included
        return None
    return None if board.is_game_over() else board.fen()


def legal_move(board: chess.Board, move: str) -> chess.Move | None:
    """The move if `move` is a legal move on `board` written in canonical UCI, else None (garbage included)."""
    try:
        parsed = chess.Move.from_uci(move)
    except ValueError:  # chess.InvalidMoveError is a ValueError
        return None
    if not parsed or not board.is_legal(parsed) or board.uci(parsed) != move:
        return None
    return parsed


def sample_and_board(line: str) -> tuple[str, PolicySample | EnvSample, chess.Board]:
    """(the normalised line, its sample, the board of its FEN) of one raw P:/A: line whose FEN is a legal
    position; FormatError naming the failing field otherwise."""
    text = normalize_line(line).strip()
    sample = parse_line(text)
    try:  # a FEN that reads but is no legal position: nothing to analyse or simulate
        board = parse_board(sample.fen)
    except ValueError as e:
        raise FormatError(f"{text[0]}: fen: {e}") from None
    return text, sample, board


def legal_best_move(board: chess.Board, completion: str) -> chess.Move | None:
    """The B: move of a P: completion if it is legal on `board` (the figure SFT checks and eval reports)."""
    best = parse_policy_completion(completion).best
    return legal_move(board, best) if best else None


# Why a written move is illegal (illegal_kind); with legal, the kinds partition every answer.
ILLEGAL_KINDS = (
    "no_move", "empty_square", "opponent_piece", "king_in_check", "blocked", "geometry", "noncanonical",
)  # fmt: skip


def illegal_kind(board: chess.Board, best: str | None) -> str | None:
    """Why the written move `best` is illegal on `board` (one of ILLEGAL_KINDS), None if it is legal.

    king_in_check: its king would be in check after; blocked: a piece is in the way (the move is one on an empty
    board); geometry: not even there (a pawn's capture of nothing too); noncanonical: not canonical UCI (e1h1).

    >>> board = chess.Board()
    >>> [illegal_kind(board, m) for m in ("e2e4", "e3e4", "e7e5", "f1c4", "g1g3", "e2", None)]
    [None, 'empty_square', 'opponent_piece', 'blocked', 'geometry', 'no_move', 'no_move']
    """
    if best and legal_move(board, best) is not None:
        return None
    try:
        move = chess.Move.from_uci(best or "")
    except ValueError:
        return "no_move"
    piece = board.piece_at(move.from_square) if move else None
    if piece is None:
        return "no_move" if not move else "empty_square"
    if piece.color != board.turn:
        return "opponent_piece"
    if board.is_legal(move):
        return "noncanonical"
    if board.is_pseudo_legal(move):
        return "king_in_check"
    alone = chess.Board(None)
    alone.set_piece_at(move.from_square, piece)
    alone.turn = piece.color
    return "blocked" if alone.is_pseudo_legal(move) else "geometry"


def transition(fen: str, move: str) -> tuple[str, float, bool, bool]:
    """(new_fen, reward, terminated, truncated) for playing `move` on `fen`; ValueError for a bad FEN."""
    board = parse_board(fen)
    parsed = legal_move(board, move)
    if parsed is None:
        return board.fen(), REWARD_ILLEGAL, False, True
    board.push(parsed)
    outcome = board.outcome()  # claim_draw=False: only automatic endings (mate, stalemate, 75-move, ...)
    if outcome is None:
        return board.fen(), REWARD_LEGAL, False, False
    return board.fen(), REWARD_WIN if outcome.winner is not None else REWARD_DRAW, True, False


def env_sample(fen: str, move: str, previous: Sequence[str]) -> EnvSample:
    """The A: sample for `move` on `fen`, where `previous` are the half-moves played before it."""
    history = (*previous, move)[-HISTORY_PLIES:]
    new_fen, reward, terminated, truncated = transition(fen, move)
    return EnvSample(parse_board(fen).fen(), move, tuple(history), new_fen, reward, terminated, truncated)


def env_truth(prompt: str) -> EnvSample:
    """The ground truth of an A: prompt (`A: FEN+move+history+`), from the prompt alone."""
    fen, move, history = parse_env_prompt(prompt)
    new_fen, reward, terminated, truncated = transition(fen, move)
    return EnvSample(fen, move, history, new_fen, reward, terminated, truncated)


# Transition kinds, to count and balance the A: data. Endings first: they matter most and are rarest.
ENDINGS = {
    chess.Termination.CHECKMATE: "mate",
    chess.Termination.STALEMATE: "stalemate",
    chess.Termination.INSUFFICIENT_MATERIAL: "insufficient",
    chess.Termination.SEVENTYFIVE_MOVES: "75_move",
}
KINDS = ("illegal", *ENDINGS.values(), "promotion", "en_passant", "castling", "check", "capture", "normal")


def transition_kind(fen: str, move: str) -> str:
    """The one kind (of KINDS) that best describes `move` on `fen`, judged like `transition` (FEN alone)."""
    return kind_on(parse_board(fen), move)


def kind_on(board: chess.Board, move: str) -> str:
    """transition_kind on a board already read (it plays the move on it)."""
    parsed = legal_move(board, move)
    if parsed is None:
        return "illegal"
    if parsed.promotion:
        kind = "promotion"
    elif board.is_en_passant(parsed):
        kind = "en_passant"
    elif board.is_castling(parsed):
        kind = "castling"
    elif board.gives_check(parsed):
        kind = "check"
    elif board.is_capture(parsed):
        kind = "capture"
    else:
        kind = "normal"
    board.push(parsed)
    outcome = board.outcome()
    return kind if outcome is None else ENDINGS.get(outcome.termination, outcome.termination.name.lower())


def mating_moves(board: chess.Board) -> list[chess.Move]:
    """The legal moves of `board` that mate."""
    out = []
    for move in board.legal_moves:
        board.push(move)
        if board.is_checkmate():
            out.append(move)
        board.pop()
    return out


def random_boards(n: int, seed: int, max_plies: int = 80) -> list[chess.Board]:
    """n distinct unfinished positions, each after 1..max_plies random half-moves (its move stack kept)."""
    rng, boards = random.Random(seed), {}
    while len(boards) < n:
        board = chess.Board()
        for _ in range(rng.randint(1, max_plies)):
            if board.is_game_over():
                break
            board.push(rng.choice(list(board.legal_moves)))
        if not board.is_game_over():
            boards.setdefault(board.fen(), board)
    return list(boards.values())


# ----------------------------------------------------------------------------- games

ENDS = ("game_over", "max_plies", "illegal", "unparseable")  # why a game ended
Policy = Callable[[list[str]], list[str]]  # P: prompts -> completions, one each


@dataclass
class Game:
    """One game: its start, the legal moves played, the positions they reached and why it ended."""

    start: str
    moves: list[str] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)  # FEN after each move that did not end the game
    end: str = ""
    bad_move: str | None = None  # the illegal B: move, or the unparseable completion (cut to 40 chars)

    @property
    def ended_illegal(self) -> bool:
        return self.end in ("illegal", "unparseable")


def play_games(
    policy: Policy, starts: Sequence[str], max_plies: int, fen_width: int = FEN_WIDTH
) -> list[Game]:
    """Play one game from each start FEN, one `policy` call per ply for all live games. A game ends at its
    first unparseable or illegal B: move, when python-chess ends it, or after `max_plies` legal moves."""
    games = [Game(start) for start in starts]
    boards = [parse_board(fen) for fen in starts]
    live = [i for i, board in enumerate(boards) if not _ended(games[i], board, max_plies)]
    while live:
        completions = policy([policy_prompt(boards[i].fen(), fen_width) for i in live])
        for i, completion in zip(live, completions, strict=True):
            _move(games[i], boards[i], completion)
        live = [i for i in live if not games[i].end and not _ended(games[i], boards[i], max_plies)]
    return games


def _move(game: Game, board: chess.Board, completion: str) -> None:
    """Play the completion's B: move on `board`, or end the game when it is unparseable or illegal."""
    best = parse_policy_completion(completion).best
    if best is None:
        game.end, game.bad_move = "unparseable", completion[:40]
        return
    move = legal_move(board, best)
    if move is None:
        game.end, game.bad_move = "illegal", best
        return
    board.push(move)
    game.moves.append(best)
    if not board.is_game_over():  # the policy reward has nothing to judge in a finished game
        game.positions.append(board.fen())


def _ended(game: Game, board: chess.Board, max_plies: int) -> bool:
    if board.is_game_over():  # python-chess's rules: mate, stalemate, too little material, 75 moves, fivefold
        game.end = "game_over"
    elif len(game.moves) >= max_plies:
        game.end = "max_plies"
    return bool(game.end)
