"""Decontamination: the positions of exclude files, and the filter that drops every data row on one of them.

    rookworld data generate --out data/mine --selfplay 100 --exclude path/to/checkmate_in_one/task.json
    rookworld train --dataset_name data/mine --exclude puzzles.csv bench.epd

A position is its first four FEN fields (chess/formats.py position_key: placement, side to move, castling, en passant),
so the same position with other clocks is the same position. An exclude file is one of:
- a BIG-bench `checkmate_in_one` task.json (a JSON object with "examples": each game replayed to its position);
- a Lichess puzzle CSV (.csv: each puzzle's position to solve, after Moves' first move);
- a data file (.parquet of our layout: its `fen` column; .jsonl of P:/A: lines: each line's position);
- an EPD file (.epd) or a FEN list (any other file): one position per line, its first four fields read;
  blank lines and lines starting with '#' are skipped.
data/files.py decides a file's kind and reads its positions (`positions_kind`, `position_fens`). Positions are
compared as python-chess writes them (an en-passant square only where a capture is legal, castling rights only
where king and rook stand), so a FEN written by another tool still matches.

The keys (`Exclusion`) never change; each use counts what it dropped in its own ExcludeReport:

    exclusion = Exclusion.of(["bench.epd"])
    rows, report = exclude_rows(rows, exclusion, "data/mine")     # print(report.one_line())
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rookworld_trl.data.errors import DataSourceError
from rookworld_trl.data.files import position_fens
from rookworld_trl.data.keys import canonical_fen4, fen4


def exclude_fens(path: str | os.PathLike) -> Iterator[str]:
    """The FENs of the positions an exclude file names (its kind decided by data/files.py: see the module
    docstring)."""
    if not Path(path).is_file():
        raise DataSourceError(
            f"--exclude {path}: no such file; pass a FEN list, an .epd file, a Lichess puzzle .csv, a "
            "BIG-bench checkmate_in_one task.json or a data file (.parquet, .jsonl)"
        )
    return position_fens(path)


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """The positions of some exclude files: what to drop, never changed. Each use of it counts what it dropped in
    its own ExcludeReport (`exclude_rows`, `exclude_items`, `report`)."""

    files: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, files: Iterable[str | os.PathLike] | str | None) -> Exclusion:
        """The positions of `files` (a path, several, or None: nothing excluded)."""
        files = (files,) if isinstance(files, str | os.PathLike) else tuple(files or ())
        keys = {canonical_fen4(fen) for path in files for fen in exclude_fens(path)}
        return cls(tuple(map(str, files)), frozenset(keys))

    def __bool__(self) -> bool:
        return bool(self.files)

    def holds(self, fen: str) -> bool:
        """Whether the position of `fen` is one of the excluded ones."""
        return fen4(fen) in self.keys

    def report(self) -> ExcludeReport:
        """A new report of what a use of these positions drops."""
        return ExcludeReport(self)


@dataclasses.dataclass
class ExcludeReport:
    """What one use of an Exclusion dropped: the rows it saw, and those it dropped by task."""

    exclusion: Exclusion
    seen: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)

    def drops(self, fen: str, task: str = "P") -> bool:
        """Whether a row of this position and task goes (counted)."""
        self.seen += 1
        if self.exclusion.holds(fen):
            self.dropped[task] += 1
            return True
        return False

    def one_line(self) -> str:
        files, n = self.exclusion.files, len(self.exclusion.keys)
        total = sum(self.dropped.values())
        by_task = ", ".join(f"{task}: {n}" for task, n in sorted(self.dropped.items()))
        return (
            f"--exclude {' '.join(files)}: {n} position{'' if n == 1 else 's'}; dropped {total} of {self.seen} rows"
            f"{f' ({by_task})' if by_task else ''} on one of them"
        )

    def to_dict(self) -> dict:
        return {"files": list(self.exclusion.files), "positions": len(self.exclusion.keys), "rows_seen": self.seen,
                "rows_dropped": dict(sorted(self.dropped.items()))}  # fmt: skip


def exclude_rows(ds, exclusion: Exclusion, where: str = "the data", report: ExcludeReport | None = None):
    """(`ds` without the rows on an excluded position, its report; None when nothing is excluded). `ds`: a
    datasets Dataset (counted now; none left: a DataSourceError naming `where`) or IterableDataset (counted as
    it is read, into `report` when given: two streams of one source count together)."""
    if not exclusion:
        return ds, None
    report = report or exclusion.report()
    if not hasattr(ds, "__len__"):
        return ds.filter(lambda row: not report.drops(row["fen"], row["task"])), report
    from rookworld_trl.data.layout import column_batches  # datasets' tooling: only where a dataset is

    keep = [start + i for start, (fens, tasks) in column_batches(ds, "fen", "task")
            for i, (fen, task) in enumerate(zip(fens, tasks, strict=True)) if not report.drops(fen, task)]  # fmt: skip
    if report.seen and not keep:
        raise DataSourceError(
            f"{report.one_line()}: {where} has no row left to train on; exclude fewer positions (--exclude) or "
            "pass a source with other positions"
        )
    return ds.select(np.array(keep, dtype=np.int64)), report  # an array: hashed at once, not item by item


def exclude_items(items: Iterable, exclusion: Exclusion, fen_of) -> tuple[Iterator, ExcludeReport]:
    """(the `items` whose position (`fen_of(item)`) is not excluded, read lazily; the report counting them):
    a puzzle file's puzzles are dropped before the engine labels them."""
    report = exclusion.report()
    return (item for item in items if not report.drops(fen_of(item))), report
