"""Where the games that data/generate.py labels come from: engine self-play, random legal play, PGN files. A source
plans its chunks (`plan`) and plays one (`play`). A new source is one `PositionSource` in POSITION_SOURCES, its
field in generate.GenerateConfig and GameSettings, and its flag in commands.py.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import chess
import chess.pgn

from rookworld_trl.chess.engine import EnginePool
from rookworld_trl.data.rows import open_text
from rookworld_trl.data.samples import GameRecord


class GameSettings(Protocol):
    """What the position sources read of the generate run's settings (data/generate.GenerateConfig)."""

    selfplay_games: int
    random_games: int
    pgn: tuple[str, ...]
    pgn_games: int | None
    games_per_chunk: int
    opening_plies: int
    random_move_prob: float
    max_plies: int
    plies_per_game: int


def game_over(board: chess.Board, config: GameSettings) -> bool:
    return board.is_game_over() or len(board.move_stack) >= config.max_plies


def game_of(board: chess.Board, plies: list[int] | None, rng: random.Random, config: GameSettings,
            unfinished: str) -> GameRecord:  # fmt: skip
    """The GameRecord a finished board played; `plies` None: --plies_per_game random plies; `unfinished`: the end
    of a game that python-chess does not see as over."""
    moves = [m.uci() for m in board.move_stack]
    if plies is None:
        plies = sorted(rng.sample(range(len(moves)), min(config.plies_per_game, len(moves))))
    outcome = board.outcome()
    end = outcome.termination.name.lower() if outcome else unfinished
    return GameRecord(board.root().fen(), moves, end, plies)


def play_selfplay(n: int, rng: random.Random, config: GameSettings, pool: EnginePool, analyses: dict, stats):
    """n engine games played side by side (one parallel analyse_many per ply), their analyses put in `analyses`
    by FEN."""
    boards = []
    for _ in range(n):
        board = chess.Board()
        for _ in range(rng.randint(0, config.opening_plies)):
            if not game_over(board, config):
                board.push(rng.choice(list(board.legal_moves)))
        boards.append(board)
    active = [b for b in boards if not game_over(b, config)]
    while active:
        for board, analysis in zip(active, pool.analyse_many([b.fen() for b in active]), strict=True):
            analyses[board.fen()] = analysis
            explore = rng.random() < config.random_move_prob or not analysis
            move = rng.choice(list(board.legal_moves)) if explore else chess.Move.from_uci(analysis[0].move)
            board.push(move)
        active = [b for b in active if not game_over(b, config)]
    return [game_of(b, list(range(len(b.move_stack))), rng, config, "max_plies") for b in boards]


def play_random(n: int, rng: random.Random, config: GameSettings, pool, analyses, stats) -> list[GameRecord]:
    """n games of random legal moves."""
    games = []
    for _ in range(n):
        board = chess.Board()
        while not game_over(board, config):
            board.push(rng.choice(list(board.legal_moves)))
        games.append(game_of(board, None, rng, config, "max_plies"))
    return games


def pgn_chunks(paths, per_chunk: int, max_games: int | None, done: set[int]) -> Iterator[tuple[int, list]]:
    """(index, games) for each chunk of `per_chunk` games of the PGN files in order; chunks in `done` are
    skipped without parsing (chess.pgn.skip_game), so a resume does not re-read what it has."""
    index, in_chunk, total, games = 0, 0, 0, []
    for path in paths:
        with open_text(path) as handle:
            while max_games is None or total < max_games:
                if index in done:
                    if not chess.pgn.skip_game(handle):
                        break
                else:
                    game = chess.pgn.read_game(handle)
                    if game is None:
                        break
                    games.append(game)
                total, in_chunk = total + 1, in_chunk + 1
                if in_chunk == per_chunk:
                    if index not in done:
                        yield index, games
                    index, in_chunk, games = index + 1, 0, []
    if in_chunk and index not in done:
        yield index, games


def game_from_pgn(game: chess.pgn.Game, rng: random.Random, config: GameSettings) -> GameRecord | str:
    """The GameRecord of a PGN game, or why it is skipped."""
    if game.errors:
        return "pgn_error"
    if game.headers.get("Variant", "Standard").lower() not in ("standard", "chess", "from position"):
        return "variant"
    board = game.board()
    if board.chess960:
        return "variant"
    if not board.is_valid():
        return "invalid_start"
    for move in game.mainline_moves():
        board.push(move)
    if not board.move_stack:
        return "no_moves"
    return game_of(board, None, rng, config, "pgn")  # resigned, timed out, agreed, ...


def counted_chunks(count: int, per_chunk: int, done: set[int]) -> Iterator[tuple[int, int]]:
    """(index, games) of `count` games in chunks of `per_chunk`, skipping the chunks in `done`."""
    for index, start in enumerate(range(0, count, per_chunk)):
        if index not in done:
            yield index, min(per_chunk, count - start)


def play_pgn_chunk(pgn_games: list, rng, config, pool, analyses, stats: Counter) -> list[GameRecord]:
    games = []
    for pgn_game in pgn_games:
        game = game_from_pgn(pgn_game, rng, config)
        if isinstance(game, str):
            stats[f"skipped_{game}"] += 1
        else:
            games.append(game)
    return games


@dataclass(frozen=True)
class PositionSource:
    """One source of games: `plan(config, done)` -> (index, chunk) for each chunk not in `done` (indices), and
    `play(chunk, rng, config, pool, analyses, stats)` -> its Games."""

    name: str
    plan: Callable[[GameSettings, set[int]], Iterator[tuple[int, object]]]
    play: Callable[..., list[GameRecord]]


POSITION_SOURCES = {source.name: source for source in (  # in the order the shards are written and assembled
    PositionSource("selfplay", lambda c, done: counted_chunks(c.selfplay_games, c.games_per_chunk, done),
                   play_selfplay),
    PositionSource("random", lambda c, done: counted_chunks(c.random_games, c.games_per_chunk, done),
                   play_random),
    PositionSource("pgn", lambda c, done: pgn_chunks(c.pgn, c.games_per_chunk, c.pgn_games, done), play_pgn_chunk),
)}  # fmt: skip
