"""Puzzles labelled: the positions of a puzzle file (data/puzzles.py reads them) that a filter keeps and --exclude
does not drop, labelled by Stockfish into P: rows the way `rookworld data generate` labels a position
(data/samples.py policy_row_for); the reader (data/read.py) reads a puzzle file through `PuzzleSource`.

    from rookworld_trl.data.labels import PuzzleSource
    from rookworld_trl.data.puzzles import PuzzleFilter
    rows = PuzzleSource(PuzzleFilter.parse(themes="mateIn1")).rows("lichess_db_puzzle.csv")  # depth 8
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

from rookworld_trl.chess.engine import EngineLimit, EnginePool
from rookworld_trl.data.errors import DataSourceError
from rookworld_trl.data.exclude import ExcludeReport, Exclusion, exclude_items
from rookworld_trl.data.files import read_puzzles
from rookworld_trl.data.puzzles import PuzzleFilter
from rookworld_trl.data.samples import policy_row_for


@dataclass
class PuzzleReport:
    """What labelling a puzzle file did: puzzles read, kept by the filter, P: rows made, and how often the
    engine's best move is the file's solution (or one of its `bm` moves) or one of its `am` moves."""

    source: str
    keep: PuzzleFilter = field(default_factory=PuzzleFilter)
    limit: str = ""
    read: int = 0
    kept: int = 0
    excluded: int = 0
    capped: int | None = None  # reading stopped at this many puzzles (max_samples)
    rows: int = 0
    with_solution: int = 0
    solved: int = 0
    avoided: int = 0

    def one_line(self) -> str:
        kept = f", {self.kept} kept ({self.keep.describe()})" if self.keep else ""
        kept += f", {self.excluded} excluded (--exclude)" if self.excluded else ""
        kept += f", the first {self.capped} taken (max_samples)" if self.capped else ""
        text = f"{self.source}: {self.read} puzzles{kept}, {self.rows} P: rows labelled by Stockfish {self.limit}"
        if self.with_solution:
            text += f"; its best move is the file's solution in {self.solved} of {self.with_solution}"
        if self.avoided:
            text += f", an `am` move in {self.avoided}"
        return text

    def to_dict(self) -> dict:
        keep = {
            "rating": list(self.keep.rating) if self.keep.rating else None,
            "themes": sorted(self.keep.themes),
        }
        return {**dataclasses.asdict(self), "keep": keep}


def puzzle_rows(
    path: str | os.PathLike,
    pool: EnginePool,
    keep: PuzzleFilter | None = None,
    seed: int = 0,
    progress: bool = True,
    exclude: Exclusion | None = None,
    max_puzzles: int | None = None,
) -> tuple[list[dict], PuzzleReport, ExcludeReport | None]:
    """(P: rows, report, what `exclude` dropped: None when nothing is excluded) of the puzzles of `path` that
    `keep` keeps and `exclude` does not drop (the first `max_puzzles`), labelled by `pool` as `rookworld data
    generate` labels a position (top moves at the pool's limit, written in a per-position shuffled order).
    Filtered and excluded before labelling (data/exclude.py exclude_items): the engine is the slow part."""
    keep = keep or PuzzleFilter()
    report, counts, puzzles = PuzzleReport(str(path), keep, pool.limit.key()), Counter(), []
    kept, excluded = exclude_items(read_puzzles(path, keep, counts), exclude or Exclusion(), lambda p: p.fen)
    for puzzle in kept:
        if len(puzzles) == max_puzzles:
            report.capped = max_puzzles
            break
        puzzles.append(puzzle)
    report.read, report.kept, report.excluded = counts["read"], excluded.seen, sum(excluded.dropped.values())
    settings = SimpleNamespace(seed=seed, limit=pool.limit)
    rows = []
    for puzzle, analysis in zip(
        puzzles, pool.analyse_many([p.fen for p in puzzles], progress=progress), strict=True
    ):
        if not analysis:  # the game is over: nothing to play (a puzzle file should hold none)
            continue
        rows.append(policy_row_for(puzzle.fen, analysis, settings))
        report.with_solution += bool(puzzle.best)
        report.solved += analysis[0].move in puzzle.best
        report.avoided += analysis[0].move in puzzle.avoid
    report.rows = len(rows)
    return rows, report, excluded if exclude else None


@dataclass
class PuzzleSource:
    """How a puzzle file becomes P: rows: which puzzles (`keep`) and the engine that labels them; `report`
    holds what the last labelling did."""

    keep: PuzzleFilter = field(default_factory=PuzzleFilter)
    limit: EngineLimit = field(default_factory=lambda: EngineLimit(depth=8))
    multipv: int = 5
    workers: int = 1
    cache: str | None = None  # sqlite analysis cache: a training run's engine cache serves its reward too
    stockfish: str | None = None
    seed: int = 0
    progress: bool = True
    report: PuzzleReport | None = None

    def rows(
        self, path: str | os.PathLike, exclude: Exclusion | None = None, max_puzzles: int | None = None
    ) -> tuple[list[dict], ExcludeReport | None]:
        """(the P: rows of the puzzles of `path` that `keep` keeps and `exclude` does not drop (the first
        `max_puzzles`), what `exclude` dropped); says what it did in one line."""
        if self.cache:  # made here, not before: a run whose data is refused leaves no output_dir behind
            os.makedirs(os.path.dirname(self.cache) or ".", exist_ok=True)
        with EnginePool(self.workers, self.limit, self.multipv, self.cache, self.stockfish) as pool:
            rows, self.report, excluded = puzzle_rows(
                path, pool, self.keep, self.seed, self.progress, exclude, max_puzzles
            )
        print(self.report.one_line())
        if not rows:
            raise DataSourceError(
                f"{path}: no puzzle left to train on ({self.report.one_line()}); widen --puzzle_rating / "
                "--puzzle_themes (Lichess themes such as mateIn1, fork, endgame)"
            )
        return rows, excluded
