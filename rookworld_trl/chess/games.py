"""Games the policy plays through its P: answers: one batched policy call per ply for every live game, the
answer's `B:` move played by python-chess. GRPO's self-play positions (grpo/selfplay.py) and the eval's
self-play suite (stages/eval/suites.py) both play here.

    >>> games = play_games(lambda prompts: [" e2e4 E: 0.3 B: e2e4"] * len(prompts), [chess.STARTING_FEN], 5)
    >>> games[0].moves, games[0].end, games[0].bad_move
    (['e2e4'], 'illegal', 'e2e4')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import chess

from rookworld_trl.chess.environment import legal_move, parse_board
from rookworld_trl.chess.formats import FEN_WIDTH, parse_policy_completion, policy_prompt

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
