"""Generate RookWorld P:/A: samples from chess games, labelled by Stockfish and python-chess.

    rookworld data generate --out data/rookworld --selfplay 200 --random 50 --depth 8 --workers 2
    rookworld data generate --out data/lichess --pgn lichess_db_standard_rated_2013-01.pgn --pgn_games 5000
    rookworld data generate --out data/mine --selfplay 200 --exclude path/to/checkmate_in_one/task.json   # held out

Games come from engine self-play (a random opening, then the engine's best move or, with --random_move_prob, a
random one), random play and PGN files (data/positions.py). Each sampled ply gives a P: row (Stockfish's top
--multipv moves, written shuffled) and A: rows (the move played, or with --illegal_fraction an illegal one; mined
game endings, en-passant captures, a promotion, a 75-move-rule position: data/samples.py). --tactics makes P: rows
of positions where one move decides instead (data/tactics.py), split by game. A fivefold repetition is invisible
in a 10-ply history: counted as `fivefold_unseen` in stats.json.

Work is done in chunks of --games_per_chunk games, OUT/shards/{source}-{index}.parquet (+ .json stats), each a
function of the settings, its source and index: a re-run skips the chunks present and ends with the same files.
The splits are then assembled from the shards in order (LayoutWriter: dedup, split by position hash).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections import Counter
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
from rookworld_trl.chess.engine import MULTIPV, EngineLimit, EnginePool, MoveEval, find_stockfish
from rookworld_trl.common.locks import holding
from rookworld_trl.data.files import Exclusion
from rookworld_trl.data.layout import FEATURES, LayoutWriter
from rookworld_trl.data.positions import POSITION_SOURCES
from rookworld_trl.data.samples import GameRecord, game_rows
from rookworld_trl.data.tactics import (
    candidate_plies,
    game_split,
    held_out_first,
    kind_counts,
    positions,
    tactic_rows,
)

SOURCES = tuple(POSITION_SOURCES)


# the `rookworld data generate` flag of a GenerateConfig field, where the two names differ
FLAGS = {"selfplay_games": "--selfplay", "random_games": "--random"}


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
    multipv: int = MULTIPV
    seed: int = 0
    opening_plies: int = 8
    random_move_prob: float = 0.05
    max_plies: int = 200
    plies_per_game: int = 10
    illegal_fraction: float = 0.1
    validation_fraction: float = 0.05
    test_fraction: float = 0.05
    tactics: bool = False  # P: rows of tactics only, split by game (data/tactics.py)
    tactics_per_game: int = 2  # at most this many positions of each tactic kind per game
    # How the work runs, not what it makes:
    workers: int = 1
    cache: str | None = None  # analysis cache (sqlite); None: OUT/analysis.sqlite
    stockfish: str | None = None
    progress: bool = True
    # dropped when the splits are assembled, kept in the shards: another --exclude needs no new generation
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        self.pgn = tuple(self.pgn)
        self.exclude = tuple(self.exclude)
        if not (self.selfplay_games or self.random_games or self.pgn):
            raise ValueError("nothing to generate: give --selfplay N, --random N or --pgn FILE")
        for names, bound, ok in (
            (("selfplay_games", "random_games", "opening_plies"), ">= 0", lambda v: v >= 0),
            (("games_per_chunk", "multipv", "max_plies", "plies_per_game", "workers", "tactics_per_game"), ">= 1",
             lambda v: v >= 1),
            (("random_move_prob", "illegal_fraction"), "in [0, 1]", lambda v: 0.0 <= v <= 1.0),
        ):  # fmt: skip
            for name in names:
                if not ok(value := getattr(self, name)):
                    raise ValueError(f"{FLAGS.get(name, f'--{name}')} must be {bound}, got {value}")
        fractions = (self.validation_fraction, self.test_fraction)
        if min(fractions) < 0 or sum(fractions) >= 1:
            raise ValueError("--validation_fraction and --test_fraction must be >= 0 and sum to less than 1")
        for path in self.pgn:
            if not os.path.isfile(path):
                raise ValueError(f"--pgn: no such file: {path}")
        self.limit = EngineLimit(depth=self.depth, nodes=self.nodes)  # checks the limit

    def content(self) -> dict:
        """The settings that decide the samples (stored with the shards: a resume must not mix settings)."""
        skip = {"out", "workers", "cache", "stockfish", "progress", "exclude"}
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        return {**settings, "pgn": list(self.pgn), "limit": self.limit.key()}


def make_chunk(source: str, index: int, games_in, config: GenerateConfig, pool: EnginePool):
    """(rows, stats) of one chunk; `games_in` is a game count (self-play, random) or PGN games."""
    rng = random.Random(f"rookworld:{config.seed}:{source}:{index}")
    stats = Counter()
    analyses: dict[str, list[MoveEval]] = {}
    games = POSITION_SOURCES[source].play(games_in, rng, config, pool, analyses, stats)
    if config.tactics:
        return tactics_chunk(source, games, analyses, rng, config, pool, stats)
    fens = []
    for game in games:  # its sampled plies' positions, in order
        at = positions(game)
        fens += [at[ply] for ply in game.plies]
    todo = [fen for fen in dict.fromkeys(fens) if fen not in analyses]
    analyses.update(zip(todo, pool.analyse_many(todo), strict=True))
    rows = [row for game in games for row in game_rows(game, analyses, rng, config)]
    game_stats(stats, games, len(fens))
    stats["fivefold_unseen"] = sum(
        g.end == "fivefold_repetition" and len(g.moves) - 1 in g.plies for g in games
    )
    return rows, dict(stats)


def game_stats(stats: Counter, games: list[GameRecord], sampled_plies: int) -> None:
    """A chunk's games, plies, sampled plies and games by how they ended, into `stats`."""
    stats.update(games=len(games), plies=sum(len(g.moves) for g in games), sampled_plies=sampled_plies)
    stats.update(f"end_{g.end}" for g in games)


def tactics_chunk(
    source: str, games: list[GameRecord], analyses: dict, rng, config: GenerateConfig, pool, stats
):
    """(rows, stats) of one chunk's tactics; stats["splits"] holds each row's split (its game's)."""
    plan = [
        (g, positions(g), candidate_plies(g, source == "selfplay", config.tactics_per_game, rng))
        for g in games
    ]
    todo = list(dict.fromkeys(fens[p] for _, fens, plies in plan for p in plies if fens[p] not in analyses))
    analyses.update(zip(todo, pool.analyse_many(todo), strict=True))
    rows, splits = [], []
    for game, fens, plies in plan:
        found = tactic_rows(game, fens, plies, analyses, rng, config.tactics_per_game, config)
        rows += found
        splits += [game_split(game, config.validation_fraction, config.test_fraction)] * len(found)
    game_stats(stats, games, len(todo))
    stats.update(kind_counts(rows, splits))
    return rows, {**stats, "splits": splits}


# ------------------------------------------------------------------------------------------ the run


def write_shard(shards: Path, name: str, rows: list[dict], stats: dict) -> None:
    """The chunk's stats, then its rows; each written under a temporary name and renamed when complete."""
    (shards / f"{name}.json.tmp").write_text(json.dumps(stats, sort_keys=True))
    os.replace(shards / f"{name}.json.tmp", shards / f"{name}.json")
    pq.write_table(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema), shards / f"{name}.parquet.tmp")
    os.replace(shards / f"{name}.parquet.tmp", shards / f"{name}.parquet")


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


def shard_names(shards: Path) -> list[str]:
    names = [p.name.removesuffix(".parquet") for p in shards.glob("*-*.parquet")]
    return sorted(names, key=lambda n: (SOURCES.index(n.split("-")[0]), int(n.split("-")[1])))


def run_chunks(config: GenerateConfig, shards: Path, pool: EnginePool) -> None:
    done = set(shard_names(shards))
    planned = config.selfplay_games + config.random_games + (config.pgn_games or 0)
    total = None if config.pgn and config.pgn_games is None else planned
    with tqdm(total=total, unit="game", desc="generate", disable=not config.progress) as bar:
        bar.update(sum(json.loads((shards / f"{n}.json").read_text())["games"] for n in done))
        for source in POSITION_SOURCES.values():  # every chunk not done yet, in order
            skip = {int(name.split("-")[1]) for name in done if name.startswith(f"{source.name}-")}
            for index, games in source.plan(config, skip):
                rows, stats = make_chunk(source.name, index, games, config, pool)
                write_shard(shards, f"{source.name}-{index:05d}", rows, stats)
                bar.update(games if isinstance(games, int) else len(games))


def assemble(config: GenerateConfig, shards: Path, settings: dict, exclude: Exclusion | None = None):
    """(stats.json's content, what `exclude` dropped) of the splits assembled from the shards, in order."""
    excluded = (exclude or Exclusion()).report()
    writer = LayoutWriter(config.out, config.validation_fraction, config.test_fraction)
    sources = {source: Counter() for source in SOURCES}
    by_game = []  # tactics: (rows, their splits) per shard, written once all are read
    for name in shard_names(shards):
        chunk = json.loads((shards / f"{name}.json").read_text())
        splits = chunk.pop("splits", None)
        sources[name.split("-")[0]].update(chunk)
        rows = pq.read_table(shards / f"{name}.parquet").to_pylist()
        if config.tactics:
            by_game.append((rows, splits))
            continue
        for row in rows:
            if not (exclude and excluded.drops(row["fen"], row["task"])):
                writer.add(row)
    for row, split in held_out_first(by_game):  # tactics
        if not (exclude and excluded.drops(row["fen"], row["task"])):
            writer.add(row, split)
    stats = writer.close()
    if exclude:
        stats["excluded"] = excluded.to_dict()
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
    writer.commit(stats)  # the splits and stats.json replace the old ones as a whole
    return stats, excluded


def generate(config: GenerateConfig) -> dict:
    """Generate (or finish generating) the dataset in config.out, holding its lock; returns its stats.json."""
    exclude = Exclusion.of(config.exclude)  # before the lock and any engine work: a bad file fails now
    with holding(config.out, "rookworld data generate", "wait for it to finish or stop it"):
        return _generate(config, exclude)


def _generate(config: GenerateConfig, exclude: Exclusion) -> dict:
    shards = Path(config.out) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    stockfish = find_stockfish(config.stockfish)
    with chess.engine.SimpleEngine.popen_uci(stockfish) as engine:
        settings = {**config.content(), "stockfish": engine.id.get("name", "unknown")}
    check_settings(shards, settings)
    cache = config.cache or os.path.join(config.out, "analysis.sqlite")
    started = time.time()
    with EnginePool(
        config.workers, config.limit, config.multipv, cache=cache, stockfish_path=stockfish
    ) as pool:
        run_chunks(config, shards, pool)
    stats, excluded = assemble(config, shards, settings, exclude)
    print(summary(stats, time.time() - started))
    if exclude:
        print(excluded.one_line())
    return stats


def summary(stats: dict, seconds: float) -> str:
    lines = [f"{stats['settings']['limit']}, {seconds:.1f}s"]
    for split, counts in stats["rows"].items():
        lines.append(f"  {split:<10} P: {counts.get('P', 0):>8}  A: {counts.get('A', 0):>8}")
    lines.append("  kinds: " + ", ".join(f"{k} {v}" for k, v in stats["kinds"].items()))
    lines.append(
        f"  illegal fraction {stats['illegal_fraction']}, fivefold_unseen {stats['fivefold_unseen']}"
    )
    lines.append(
        "  duplicates removed: " + ", ".join(f"{k} {v}" for k, v in stats["duplicates_removed"].items())
    )
    return "\n".join(lines)
