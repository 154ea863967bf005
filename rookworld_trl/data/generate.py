"""Generate RookWorld P:/A: samples from chess games, labelled by Stockfish and python-chess.

    rookworld data generate --out data/rookworld --selfplay 200 --random 50 --depth 8 --workers 2
    rookworld data generate --out data/lichess --pgn lichess_db_standard_rated_2013-01.pgn --pgn_games 5000

Games come from engine self-play (a random opening of 0..--opening_plies moves, then the engine's best
move, or a random legal move with probability --random_move_prob), random legal play, and PGN files
(plain or .gz). Each game gives samples at some of its plies (self-play: every ply, since the engine
analysed it anyway; random and PGN games: --plies_per_game random plies):
- P: the position with Stockfish's top --multipv moves at a fixed depth (or node) limit, written shuffled;
- A: the move played, replaced by an illegal move with probability --illegal_fraction (a pseudo-legal
  move that leaves the king in check, or random from-to squares); plus, mined from the same position,
  every other legal move that ends the game (mate, stalemate, insufficient material), every en-passant
  capture and one promotion; plus, once per game, the position with its half-move clock set to 149 and a
  random move (half the time a quiet piece move, which then ends the game by the 75-move rule).
A fivefold repetition that ends a game is not visible in a 10-ply history (environment.py), so its A:
sample is labelled from the FEN alone (the game goes on) and counted as `fivefold_unseen` in stats.json.

Work is done in chunks of --games_per_chunk games, each written as OUT/shards/{source}-{index}.parquet
(+ .json stats). A chunk depends only on the settings, its source and index, so a re-run with the same
settings skips the chunks present and an interrupted run ends with the same files as an uninterrupted
one. The splits are then assembled from the shards in order (data/layout.py LayoutWriter: dedup, split by
position hash).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.engine
import chess.pgn
import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rookworld_trl import __version__
from rookworld_trl.chess.engine import EngineLimit, EnginePool, MoveEval, find_stockfish
from rookworld_trl.data.layout import FEATURES, LayoutWriter, write_stats
from rookworld_trl.data.load import open_text
from rookworld_trl.data.samples import Game, game_rows

SOURCES = ("selfplay", "random", "pgn")


@dataclass
class GenerateConfig:
    out: str
    selfplay_games: int = 0
    random_games: int = 0
    pgn: tuple[str, ...] = ()
    pgn_games: int | None = None  # None: every game of the PGN files
    games_per_chunk: int = 16
    depth: int | None = 8
    nodes: int | None = None
    multipv: int = 5
    seed: int = 0
    opening_plies: int = 8
    random_move_prob: float = 0.05
    max_plies: int = 200
    plies_per_game: int = 10
    illegal_fraction: float = 0.1
    validation_fraction: float = 0.05
    test_fraction: float = 0.05
    # How the work runs, not what it makes:
    workers: int = 1
    cache: str | None = None  # analysis cache (sqlite); None: OUT/analysis.sqlite
    stockfish: str | None = None
    progress: bool = True

    def __post_init__(self):
        self.pgn = tuple(self.pgn)
        if not (self.selfplay_games or self.random_games or self.pgn):
            raise ValueError("nothing to generate: give --selfplay N, --random N or --pgn FILE")
        for name in ("selfplay_games", "random_games", "opening_plies"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("games_per_chunk", "multipv", "max_plies", "plies_per_game", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("random_move_prob", "illegal_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if (
            min(self.validation_fraction, self.test_fraction) < 0
            or self.validation_fraction + self.test_fraction >= 1
        ):
            raise ValueError("--validation_fraction and --test_fraction must be >= 0 and sum to less than 1")
        for path in self.pgn:
            if not os.path.isfile(path):
                raise ValueError(f"--pgn: no such file: {path}")
        self.limit = EngineLimit(depth=self.depth, nodes=self.nodes)  # checks the limit

    def content(self) -> dict:
        """The settings that decide the samples (stored with the shards: a resume must not mix settings)."""
        skip = {"out", "workers", "cache", "stockfish", "progress"}
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        return {**settings, "pgn": list(self.pgn), "limit": self.limit.key()}


# --------------------------------------------------------------------------------------------- sources


def game_over(board: chess.Board, config: GenerateConfig) -> bool:
    return board.is_game_over() or len(board.move_stack) >= config.max_plies


def game_of(
    board: chess.Board, plies: list[int] | None, rng: random.Random, config: GenerateConfig, unfinished: str
) -> Game:
    """The Game a finished board played; `plies` None: --plies_per_game random plies; `unfinished`: the end
    of a game that python-chess does not see as over."""
    moves = [m.uci() for m in board.move_stack]
    if plies is None:
        plies = sorted(rng.sample(range(len(moves)), min(config.plies_per_game, len(moves))))
    outcome = board.outcome()
    end = outcome.termination.name.lower() if outcome else unfinished
    return Game(board.root().fen(), moves, end, plies)


def play_selfplay(n: int, rng: random.Random, config: GenerateConfig, pool: EnginePool):
    """n engine games played side by side (one parallel analyse_many per ply); (games, analyses by FEN)."""
    boards = []
    for _ in range(n):
        board = chess.Board()
        for _ in range(rng.randint(0, config.opening_plies)):
            if not game_over(board, config):
                board.push(rng.choice(list(board.legal_moves)))
        boards.append(board)
    analyses: dict[str, list[MoveEval]] = {}
    active = [b for b in boards if not game_over(b, config)]
    while active:
        for board, analysis in zip(active, pool.analyse_many([b.fen() for b in active]), strict=True):
            analyses[board.fen()] = analysis
            explore = rng.random() < config.random_move_prob or not analysis
            move = rng.choice(list(board.legal_moves)) if explore else chess.Move.from_uci(analysis[0].move)
            board.push(move)
        active = [b for b in active if not game_over(b, config)]
    games = [game_of(b, list(range(len(b.move_stack))), rng, config, "max_plies") for b in boards]
    return games, analyses


def play_random(rng: random.Random, config: GenerateConfig) -> Game:
    board = chess.Board()
    while not game_over(board, config):
        board.push(rng.choice(list(board.legal_moves)))
    return game_of(board, None, rng, config, "max_plies")


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


def game_from_pgn(game: chess.pgn.Game, rng: random.Random, config: GenerateConfig) -> Game | str:
    """The Game of a PGN game, or why it is skipped."""
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


def make_chunk(source: str, index: int, games_in, config: GenerateConfig, pool: EnginePool):
    """(rows, stats) of one chunk; `games_in` is a game count (self-play, random) or PGN games."""
    rng = random.Random(f"rookworld:{config.seed}:{source}:{index}")
    stats = Counter()
    analyses: dict[str, list[MoveEval]] = {}
    if source == "selfplay":
        games, analyses = play_selfplay(games_in, rng, config, pool)
    elif source == "random":
        games = [play_random(rng, config) for _ in range(games_in)]
    else:
        games = []
        for pgn_game in games_in:
            game = game_from_pgn(pgn_game, rng, config)
            if isinstance(game, str):
                stats[f"skipped_{game}"] += 1
            else:
                games.append(game)
    fens = []
    for game in games:
        board, wanted = chess.Board(game.start), set(game.plies)
        for ply, move in enumerate(game.moves):
            if ply in wanted:
                fens.append(board.fen())
            board.push_uci(move)
    todo = [fen for fen in dict.fromkeys(fens) if fen not in analyses]
    analyses.update(zip(todo, pool.analyse_many(todo), strict=True))
    rows = [row for game in games for row in game_rows(game, analyses, rng, config)]
    stats.update(games=len(games), plies=sum(len(g.moves) for g in games), sampled_plies=len(fens))
    stats.update(f"end_{g.end}" for g in games)
    stats["fivefold_unseen"] = sum(
        g.end == "fivefold_repetition" and len(g.moves) - 1 in g.plies for g in games
    )
    return rows, dict(stats)


# ------------------------------------------------------------------------------------------ the run


def write_shard(shards: Path, name: str, rows: list[dict], stats: dict) -> None:
    """The chunk's stats, then its rows; each written under a temporary name and renamed when complete."""
    (shards / f"{name}.json.tmp").write_text(json.dumps(stats, sort_keys=True))
    os.replace(shards / f"{name}.json.tmp", shards / f"{name}.json")
    pq.write_table(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema), shards / f"{name}.parquet.tmp")
    os.replace(shards / f"{name}.parquet.tmp", shards / f"{name}.parquet")


def engine_name(path: str) -> str:
    with chess.engine.SimpleEngine.popen_uci(path) as engine:
        return engine.id.get("name", "unknown")


def check_settings(shards: Path, settings: dict) -> None:
    """Store the settings with the shards; refuse to resume shards made with other settings."""
    path = shards / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            changed = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
            raise ValueError(
                f"{shards} holds shards made with other settings (changed: {', '.join(changed)}). "
                f"Use another --out, or delete {shards} to start over."
            )
    else:
        path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def chunk_plan(config: GenerateConfig, done: set[str]) -> Iterator[tuple[str, int, object]]:
    """(source, index, games) for every chunk not done yet, in order."""
    for source, count in (("selfplay", config.selfplay_games), ("random", config.random_games)):
        for index, start in enumerate(range(0, count, config.games_per_chunk)):
            if f"{source}-{index:05d}" not in done:
                yield source, index, min(config.games_per_chunk, count - start)
    if config.pgn:
        skip = {int(name.split("-")[1]) for name in done if name.startswith("pgn-")}
        for index, games in pgn_chunks(config.pgn, config.games_per_chunk, config.pgn_games, skip):
            yield "pgn", index, games


def shard_names(shards: Path) -> list[str]:
    names = [p.name.removesuffix(".parquet") for p in shards.glob("*-*.parquet")]
    return sorted(names, key=lambda n: (SOURCES.index(n.split("-")[0]), int(n.split("-")[1])))


def run_chunks(config: GenerateConfig, shards: Path, pool: EnginePool) -> None:
    done = set(shard_names(shards))
    planned = config.selfplay_games + config.random_games + (config.pgn_games or 0)
    total = None if config.pgn and config.pgn_games is None else planned
    with tqdm(total=total, unit="game", desc="generate", disable=not config.progress) as bar:
        bar.update(sum(json.loads((shards / f"{n}.json").read_text())["games"] for n in done))
        for source, index, games in chunk_plan(config, done):
            rows, stats = make_chunk(source, index, games, config, pool)
            write_shard(shards, f"{source}-{index:05d}", rows, stats)
            bar.update(games if isinstance(games, int) else len(games))


def assemble(config: GenerateConfig, shards: Path, settings: dict) -> dict:
    """The splits from the shards, in order, and stats.json."""
    writer = LayoutWriter(config.out, config.validation_fraction, config.test_fraction)
    sources = {source: Counter() for source in SOURCES}
    for name in shard_names(shards):
        sources[name.split("-")[0]].update(json.loads((shards / f"{name}.json").read_text()))
        for batch in pq.ParquetFile(shards / f"{name}.parquet").iter_batches():
            for row in batch.to_pylist():
                writer.add(row)
    stats = writer.close()
    env_rows = sum(split.get("A", 0) for split in stats["rows"].values())
    stats.update(
        settings=settings,
        sources={k: dict(sorted(v.items())) for k, v in sources.items() if v},
        fivefold_unseen=sum(v["fivefold_unseen"] for v in sources.values()),
        illegal_fraction=round(stats["kinds"].get("illegal", 0) / max(env_rows, 1), 4),
        versions={
            "rookworld_trl": __version__,
            "python-chess": chess.__version__,
            "datasets": datasets.__version__,
        },
    )
    write_stats(config.out, stats)
    return stats


def generate(config: GenerateConfig) -> dict:
    """Generate (or finish generating) the dataset in config.out; returns the stats written to stats.json."""
    shards = Path(config.out) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    stockfish = find_stockfish(config.stockfish)
    settings = {**config.content(), "stockfish": engine_name(stockfish)}
    check_settings(shards, settings)
    cache = config.cache or os.path.join(config.out, "analysis.sqlite")
    started = time.time()
    with EnginePool(
        config.workers, config.limit, config.multipv, cache=cache, stockfish_path=stockfish
    ) as pool:
        run_chunks(config, shards, pool)
    stats = assemble(config, shards, settings)
    print(summary(stats, time.time() - started))
    return stats


def summary(stats: dict, seconds: float) -> str:
    lines = [f"{stats['settings']['limit']}, {seconds:.1f}s"]
    for split, counts in stats["rows"].items():
        lines.append(f"  {split:<10} P: {counts.get('P', 0):>8}  A: {counts.get('A', 0):>8}")
    lines.append("  A: kinds: " + ", ".join(f"{k} {v}" for k, v in stats["kinds"].items()))
    lines.append(
        f"  illegal fraction {stats['illegal_fraction']}, fivefold_unseen {stats['fivefold_unseen']}"
    )
    lines.append(
        "  duplicates removed: " + ", ".join(f"{k} {v}" for k, v in stats["duplicates_removed"].items())
    )
    return "\n".join(lines)
