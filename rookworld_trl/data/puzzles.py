"""Puzzles: a Lichess puzzle CSV or an EPD suite read into Puzzles, filtered by rating and theme, and labelled by
Stockfish into P: rows as `rookworld data generate` labels a position (`PuzzleSource`). Also the BIG-bench
`checkmate_in_one` task.json: a benchmark, read for the eval and --exclude, never to train on.

    from rookworld_trl.data.puzzles import PuzzleFilter, PuzzleSource, read_puzzles
    keep = PuzzleFilter.parse(rating="1000-1800", themes="mateIn1,mateIn2")
    puzzles = list(read_puzzles("lichess_db_puzzle.csv", keep))   # or "suite.epd"
    rows, excluded = PuzzleSource(keep).rows("lichess_db_puzzle.csv")   # labelled at depth 8

Lichess CSV (https://database.lichess.org/#puzzles), header optional: FEN is the position BEFORE the opponent's
move, Moves' first; the position to solve is after it, the solution's first move is Moves' second. EPD: one
position per line (`bm`/`am` in SAN, `id`), '#' comments.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import chess

from rookworld_trl.chess.engine import EngineLimit, EnginePool
from rookworld_trl.chess.environment import mating_moves
from rookworld_trl.data.rows import DataSourceError, line_error, open_text
from rookworld_trl.data.samples import policy_row_for

LICHESS_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating", "RatingDeviation", "Popularity", "NbPlays", "Themes",
                   "GameUrl", "OpeningTags")  # fmt: skip
ROW_FIX = "fix or delete that row"


@dataclass(frozen=True)
class Puzzle:
    """A position to solve. `best`: the solution's first move (Lichess) or the `bm` moves (EPD), UCI."""

    fen: str
    best: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()  # EPD `am`
    rating: int | None = None
    themes: tuple[str, ...] = ()
    id: str = ""


def bad_row(path, row: int, problem: str, fix: str = ROW_FIX) -> DataSourceError:
    """line_error with a puzzle row's fix (no --skip_bad_rows here: a puzzle file is read whole)."""
    return line_error(path, row, problem, fix)


def content_lines(path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file's lines that are neither blank nor '#' comments."""
    with open_text(path) as f:
        for row, line in enumerate(f, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield row, line


# ------------------------------------------------------------------------------------------ the filter


@dataclass(frozen=True)
class PuzzleFilter:
    """Which puzzles to keep: a rating range (inclusive) and themes (a puzzle with any of them)."""

    rating: tuple[int, int] | None = None
    themes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, rating: str | None = None, themes: str | Iterable[str] | None = None) -> PuzzleFilter:
        """From the flags' text: `--puzzle_rating 1000-1800`, `--puzzle_themes mateIn1,mateIn2`.

        >>> keep = PuzzleFilter.parse("1000-1800", "mateIn1, mateIn2")
        >>> keep.rating, sorted(keep.themes)
        ((1000, 1800), ['mateIn1', 'mateIn2'])
        """
        span = None
        if rating:
            match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(rating))
            if not match or int(match[1]) > int(match[2]):
                raise ValueError(f"--puzzle_rating wants LOW-HIGH, e.g. 1000-1800; got {rating!r}")
            span = (int(match[1]), int(match[2]))
        if isinstance(themes, str):
            themes = themes.split(",")
        return cls(span, frozenset(t.strip() for t in themes or () if t.strip()))

    def __bool__(self) -> bool:
        return self.rating is not None or bool(self.themes)

    def keeps(self, puzzle: Puzzle) -> bool:
        return self.keeps_values(puzzle.rating, puzzle.themes)

    def keeps_values(self, rating: int | None, themes: Iterable[str]) -> bool:
        in_range = self.rating is None or (rating is not None and self.rating[0] <= rating <= self.rating[1])
        return in_range and (not self.themes or bool(self.themes.intersection(themes)))

    def describe(self) -> str:
        parts = [f"rating {self.rating[0]}-{self.rating[1]}"] if self.rating else []
        return ", ".join(parts + ([f"themes {','.join(sorted(self.themes))}"] if self.themes else []))


# ------------------------------------------------------------------------------------------ the readers


def legal_position(fen: str, path, row: int, fix: str = ROW_FIX) -> chess.Board:
    """The board of a FEN that python-chess reads and that is a legal position; else the one-line error."""
    try:
        board = chess.Board(fen)
    except ValueError as e:
        raise bad_row(path, row, f"FEN {fen!r} does not parse ({e})", fix) from None
    if not board.is_valid():
        raise bad_row(path, row, f"FEN {fen!r} is no legal position ({board.status().name})", fix)
    return board


def played(board: chess.Board, uci: str, what: str, path, row: int) -> chess.Move:
    """`uci` as a legal move of `board`; else the one-line error naming the row and `what` the move was."""
    try:
        move = chess.Move.from_uci(uci)
    except ValueError:
        move = None
    if move is None or move not in board.legal_moves:
        raise bad_row(path, row, f"{what} {uci!r} is not a legal move in {board.fen()}")
    return move


def lichess_rating(fields: dict, path, row: int) -> int | None:
    rating = (fields.get("Rating") or "").strip()
    if rating and not rating.isdigit():
        raise bad_row(path, row, f"Rating {rating!r} is not a whole number")
    return int(rating) if rating else None


def lichess_puzzle(fields: dict, path, row: int) -> Puzzle:
    """One Lichess CSV row (by column name) as the Puzzle to solve: FEN after Moves' first move."""
    for name in ("FEN", "Moves"):
        if not (fields.get(name) or "").strip():
            raise bad_row(path, row, f"the {name} column is empty")
    board = legal_position(fields["FEN"].strip(), path, row)
    moves = fields["Moves"].split()
    if len(moves) < 2:
        problem = f"Moves {fields['Moves']!r} has {len(moves)} move(s); a puzzle has the opponent's move, then the solution"
        raise bad_row(path, row, problem)
    board.push(played(board, moves[0], "the opponent's move (Moves' first)", path, row))
    solution = played(board, moves[1], "the solution's first move (Moves' second)", path, row)
    return Puzzle(
        fen=board.fen(),
        best=(solution.uci(),),
        rating=lichess_rating(fields, path, row),
        themes=tuple((fields.get("Themes") or "").split()),
        id=(fields.get("PuzzleId") or "").strip(),
    )


def read_lichess(
    path: str | os.PathLike, keep: PuzzleFilter | None = None, counts: Counter | None = None
) -> Iterator[Puzzle]:
    """The puzzles of a Lichess puzzle CSV that `keep` keeps, judged before python-chess reads the row (the
    database is millions of rows); `counts["read"]` counts the rows read."""
    keep, counts = keep or PuzzleFilter(), counts if counts is not None else Counter()
    with open_text(path) as f:
        reader = csv.reader(f)
        columns = None
        for cells in reader:
            row = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if columns is None:  # the first row: the header, or already a puzzle (older dumps have none)
                header = [c.strip().lstrip("\ufeff") for c in cells]
                named = "FEN" in header or not any("/" in c for c in cells)  # every FEN has a '/'
                columns = header if named else list(LICHESS_COLUMNS)
                if missing := {"FEN", "Moves"} - set(columns):
                    raise bad_row(path, row, f"the header has no {' or '.join(sorted(missing))} column",
                                  f"use the Lichess columns {','.join(LICHESS_COLUMNS)}")  # fmt: skip
                if named:
                    continue
            if len(cells) < 2:
                expected = ",".join(LICHESS_COLUMNS)
                raise bad_row(path, row, f"{len(cells)} column(s), not a puzzle row (expected {expected})")
            counts["read"] += 1
            fields = dict(zip(columns, cells, strict=False))
            if keep and not keep.keeps_values(
                lichess_rating(fields, path, row), (fields.get("Themes") or "").split()
            ):
                continue
            yield lichess_puzzle(fields, path, row)
    if not counts["read"]:
        raise DataSourceError(
            f"{path}: no puzzle rows; expected the Lichess puzzle CSV columns "
            f"{','.join(LICHESS_COLUMNS)} (docs/FORMATS.md)"
        )


def epd_puzzle(line: str, path, row: int) -> Puzzle:
    """One EPD line as a Puzzle: its position, `bm` and `am` moves (SAN, read by python-chess), `id`."""
    try:
        board, ops = chess.Board.from_epd(line)
    except ValueError as e:  # python-chess names the bad field or the SAN move it could not play
        raise bad_row(
            path, row, f"not an EPD line python-chess reads ({e})", "fix or delete that line"
        ) from None
    legal_position(board.fen(), path, row, "fix or delete that line")
    moves = {
        name: tuple(m.uci() for m in ops.get(name) or () if isinstance(m, chess.Move))
        for name in ("bm", "am")
    }
    return Puzzle(fen=board.fen(), best=moves["bm"], avoid=moves["am"], id=str(ops.get("id") or ""))


def read_epd(
    path: str | os.PathLike, keep: PuzzleFilter | None = None, counts: Counter | None = None
) -> Iterator[Puzzle]:
    """The positions of an EPD file; `counts["read"]` counts them. A filter (`keep`) is refused: no ratings."""
    if keep:
        raise DataSourceError(
            f"{path}: an EPD file has no ratings or themes to filter by ({keep.describe()}); drop "
            "--puzzle_rating/--puzzle_themes, or pass a Lichess puzzle CSV"
        )
    counts = counts if counts is not None else Counter()
    for row, line in content_lines(path):
        counts["read"] += 1
        yield epd_puzzle(line.strip(), path, row)
    if not counts["read"]:
        raise DataSourceError(
            f"{path}: no EPD lines; expected one position per line, e.g. "
            "'6k1/5ppp/8/8/8/8/5PPP/3R2K1 w - - bm Rd8#;' (docs/FORMATS.md)"
        )


def load_bigbench_checkmate(path: str, n: int | None = None) -> list[tuple[str, str]]:
    """(FEN, target UCI) of BIG-bench `checkmate_in_one` examples ("input": SAN moves from the start, "target":
    the mating SAN move); one that does not replay or mate raises."""
    with open(path) as f:
        examples = json.load(f)["examples"]
    out = []
    for k, example in enumerate(examples[:n]):
        board = chess.Board()
        try:
            for token in example["input"].split():
                san = re.sub(r"^\d+\.+", "", token)  # "1." "12..." and "1.e4" all lose the move number
                if san:
                    board.push_san(san)
            target = example["target"]
            target = board.parse_san(target if isinstance(target, str) else target[0])
        except (ValueError, KeyError, IndexError) as e:
            raise ValueError(f"{path}: example {k} does not replay: {e}") from None
        if target not in mating_moves(board):
            raise ValueError(f"{path}: example {k}: target {example['target']} does not mate")
        out.append((board.fen(), target.uci()))
    return out


FEN_LIST_FIX = "an exclude file holds one FEN or EPD position per line: fix or delete that line"


def read_fen_list(path) -> Iterator[str]:
    """The positions of a FEN list (one per line, first four fields; '#' comments), as python-chess writes them."""
    for row, line in content_lines(path):
        fields = line.split()
        if len(fields) < 4:
            raise bad_row(
                path, row, f"{line.strip()[:60]!r} has {len(fields)} field(s), not a FEN", FEN_LIST_FIX
            )
        yield legal_position(" ".join(fields[:4]), path, row, FEN_LIST_FIX).fen()


def read_puzzles(path: str | os.PathLike, keep: PuzzleFilter | None = None, counts: Counter | None = None):
    """The Puzzles of a puzzle file (an .epd suite, else a Lichess puzzle .csv) that `keep` keeps."""
    reader = read_epd if Path(path).suffix == ".epd" else read_lichess
    return reader(Path(path), keep, counts)


# ------------------------------------------------------------------------------------ labelled by Stockfish


@dataclass
class PuzzleReport:
    """What labelling a puzzle file did, and how often the engine's best move is the file's solution (`bm`) or an
    `am` move."""

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


def puzzle_rows(path: str | os.PathLike, pool: EnginePool, keep: PuzzleFilter | None = None, seed: int = 0,
                progress: bool = True, exclude=None, max_puzzles: int | None = None):  # fmt: skip
    """(P: rows, report, ExcludeReport or None) of the puzzles of `path` that `keep` keeps and `exclude` does not
    drop (the first `max_puzzles`), labelled by `pool`. Filtered before labelling: the engine is the slow part."""
    keep = keep or PuzzleFilter()
    report, counts, puzzles = PuzzleReport(str(path), keep, pool.limit.key()), Counter(), []
    excluded = exclude.report() if exclude else None
    for puzzle in read_puzzles(path, keep, counts):
        report.kept += 1
        if excluded is not None and excluded.drops(puzzle.fen):
            report.excluded += 1
            continue
        if len(puzzles) == max_puzzles:
            report.capped = max_puzzles
            break
        puzzles.append(puzzle)
    report.read = counts["read"]
    settings = SimpleNamespace(seed=seed, limit=pool.limit)
    rows = []
    analyses = pool.analyse_many([p.fen for p in puzzles], progress=progress)
    for puzzle, analysis in zip(puzzles, analyses, strict=True):
        if not analysis:  # the game is over: nothing to play (a puzzle file should hold none)
            continue
        rows.append(policy_row_for(puzzle.fen, analysis, settings))
        report.with_solution += bool(puzzle.best)
        report.solved += analysis[0].move in puzzle.best
        report.avoided += analysis[0].move in puzzle.avoid
    report.rows = len(rows)
    return rows, report, excluded


@dataclass
class PuzzleSource:
    """How a puzzle file becomes P: rows: which puzzles (`keep`) and the engine that labels them."""

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
        self, path: str | os.PathLike, exclude=None, max_puzzles: int | None = None
    ) -> tuple[list[dict], object]:
        """(puzzle_rows' rows, what `exclude` dropped); says what it did in one line."""
        if self.cache:  # made here, not before: a run whose data is refused leaves no output_dir behind
            os.makedirs(os.path.dirname(self.cache) or ".", exist_ok=True)
        with EnginePool(self.workers, self.limit, self.multipv, self.cache, self.stockfish) as pool:
            rows, self.report, excluded = puzzle_rows(path, pool, self.keep, self.seed, self.progress, exclude,
                                                      max_puzzles)  # fmt: skip
        print(self.report.one_line())
        if not rows:
            raise DataSourceError(
                f"{path}: no puzzle left to train on ({self.report.one_line()}); widen --puzzle_rating / "
                "--puzzle_themes (Lichess themes such as mateIn1, fork, endgame)"
            )
        return rows, excluded
