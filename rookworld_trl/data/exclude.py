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

A position's key (`fen4`) and a compact set of keys (`Positions`) are here too: the eval's "seen in training"
compares them (data/load.py RunData.training_keys).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import chess
import numpy as np

from rookworld_trl.chess.formats import position_key
from rookworld_trl.data.errors import DataSourceError
from rookworld_trl.data.files import position_fens

# --------------------------------------------------------------------------------- a position's key


def fen4(fen: str) -> str:
    """The position of a FEN as python-chess writes it (first four fields). Cheap for FENs python-chess wrote
    (no en-passant square): those are taken as they are; the rest go through python-chess.

    >>> fen4("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1")  # no capture: no square
    'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq -'
    """
    fields = fen.split()
    if len(fields) >= 4 and fields[3] == "-":
        return " ".join(fields[:4])
    return position_key(chess.Board(" ".join(fields[:4])).fen())


class Positions:
    """The positions (fen4 keys) of `fens`, held as sorted 8-byte hashes: a run's millions of training positions
    in tens of MB, not a GB of strings. `fen4(fen) in positions`, `len(positions)`. Read from `fens` when first
    asked (~3 s a million: a run whose eval never asks does not pay it before its first step)."""

    def __init__(self, fens: Iterable[str]):
        self.fens, self._hashes = fens, None

    @property
    def hashes(self) -> np.ndarray:
        if self._hashes is None:
            self._hashes = np.unique(
                np.fromiter((position_hash(fen4(f)) for f in self.fens), dtype=np.uint64)
            )
            self.fens = None
        return self._hashes

    def __contains__(self, key: str) -> bool:
        h = np.uint64(position_hash(key))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    def __len__(self) -> int:
        return len(self.hashes)


def position_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def canonical_fen4(fen: str) -> str:
    """fen4 after python-chess has read the whole position (castling rights cleaned too): the exclude side."""
    return position_key(chess.Board(" ".join(fen.split()[:4])).fen())


# ---------------------------------------------------------------------------------------- --exclude


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
    its own ExcludeReport (`exclude_rows`, `report`)."""

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
    """(`ds` without the rows on an excluded position, its report; None when nothing is excluded): one `filter`,
    the same for a Dataset (counted now; none left: a DataSourceError naming `where`) and an IterableDataset
    (counted as it is read, into `report` when given: two streams of one source count together)."""
    if not exclusion:
        return ds, None
    report = report or exclusion.report()

    def keep(fens: list[str], tasks: list[str]) -> list[bool]:
        return [not report.drops(fen, task) for fen, task in zip(fens, tasks, strict=True)]

    streaming = not hasattr(ds, "__len__")
    # in memory, counted at every load: a cached filter would skip `report.drops`
    again = {} if streaming else {"load_from_cache_file": False}
    from rookworld_trl.data.layout import no_bars  # datasets' tooling: only where a dataset is

    with no_bars():
        kept = ds.filter(keep, batched=True, input_columns=["fen", "task"], **again)
    if not streaming and report.seen and not len(kept):
        raise DataSourceError(
            f"{report.one_line()}: {where} has no row left to train on; exclude fewer positions (--exclude) or "
            "pass a source with other positions"
        )
    return kept, report
