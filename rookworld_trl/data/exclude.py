"""Decontamination: the positions of exclude files, and the filter that drops every data row on one of them.

    rookworld data generate --out data/mine --selfplay 100 --exclude path/to/checkmate_in_one/task.json
    rookworld train --dataset_name data/mine --exclude puzzles.csv bench.epd

A position is its first four FEN fields (chess/formats.py position_key: placement, side to move, castling, en passant),
so the same position with other clocks is the same position. An exclude file is one of:
- a BIG-bench `checkmate_in_one` task.json (a JSON object with "examples": each game replayed to its position);
- a Lichess puzzle CSV (.csv: each puzzle's position to solve, after Moves' first move);
- a data file of P:/A: lines (.parquet, .jsonl: e.g. a shipped test split): each line's position (the prompt's FEN);
- an EPD file (.epd) or a FEN list (any other file): one position per line, its first four fields read;
  blank lines and lines starting with '#' are skipped.
Positions are compared as python-chess writes them (an en-passant square only where a capture is legal, castling
rights only where king and rook stand), so a FEN written by another tool still matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import chess
import numpy as np

from rookworld_trl.chess.formats import (
    parse_env_prompt,
    parse_policy_prompt,
    position_key,
    split_prompt_completion,
)
from rookworld_trl.data.errors import DataSourceError, open_text
from rookworld_trl.data.files import read_lines, read_puzzles, sniff
from rookworld_trl.data.puzzles import bad_row, legal_position, load_bigbench_checkmate

LINE_FIX = "an exclude file holds one FEN or EPD position per line: fix or delete that line"


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


def bigbench_like(path: Path) -> bool:
    """A .json file holding one object with "examples" (BIG-bench's task.json), not a JSON array of rows."""
    if path.suffix != ".json":
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        if not f.read(64).lstrip().startswith("{"):
            return False
    try:
        with open(path, encoding="utf-8") as f:
            return isinstance(json.load(f).get("examples"), list)
    except (ValueError, AttributeError):
        return False


def exclude_kind(path: str | os.PathLike) -> str:
    """Which kind of exclude file `path` is: 'bigbench', 'lichess', 'epd', 'data' (P:/A: lines) or 'fens'."""
    path = Path(path)
    if bigbench_like(path):
        return "bigbench"
    kinds = {"lichess-puzzles": "lichess", "epd": "epd", "parquet": "data", "json-lines": "data"}
    return kinds.get(sniff(path).name, "fens")


def line_fens(path: Path) -> Iterator[str]:
    """The positions of a data file (each P:/A: line's FEN); a Parquet file of our layout: its `fen` column."""
    if sniff(path).name == "parquet" and "fen" in parquet_columns(path):
        import pyarrow.parquet as pq

        yield from pq.read_table(path, columns=["fen"]).column("fen").to_pylist()
        return
    for line in read_lines(path):
        if line:
            prompt, _ = split_prompt_completion(line)
            yield parse_policy_prompt(prompt) if prompt.startswith("P:") else parse_env_prompt(prompt)[0]


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow.names


def fen_lines(path: Path) -> Iterator[str]:
    """The positions of a FEN list or EPD file, as canonical FENs; the first bad line is one clear error."""
    with open_text(path) as f:
        for row, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            if len(fields) < 4:
                raise bad_row(
                    path, row, f"{line.strip()[:60]!r} has {len(fields)} field(s), not a FEN", LINE_FIX
                )
            yield legal_position(" ".join(fields[:4]), path, row, LINE_FIX).fen()


def exclude_fens(path: str | os.PathLike) -> Iterator[str]:
    """The FENs of the positions an exclude file names (see the module docstring for the kinds)."""
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(
            f"--exclude {path}: no such file; pass a FEN list, an .epd file, a Lichess puzzle .csv, a "
            "BIG-bench checkmate_in_one task.json or a data file (.parquet, .jsonl)"
        )
    kind = exclude_kind(path)
    if kind == "bigbench":
        yield from (fen for fen, _ in load_bigbench_checkmate(str(path)))
    elif kind in ("lichess", "epd"):
        yield from (puzzle.fen for puzzle in read_puzzles(path))
    elif kind == "data":
        yield from line_fens(path)
    else:
        yield from fen_lines(path)


@dataclasses.dataclass
class Exclusion:
    """The positions of some exclude files, and what dropping them from data dropped (rows by task)."""

    files: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()
    seen: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)

    @classmethod
    def of(cls, files: Iterable[str | os.PathLike] | str | None) -> Exclusion:
        """The positions of `files` (a path, several, or None: nothing excluded)."""
        files = (files,) if isinstance(files, str | os.PathLike) else tuple(files or ())
        keys = {canonical_fen4(fen) for path in files for fen in exclude_fens(path)}
        return cls(tuple(map(str, files)), frozenset(keys))

    def __bool__(self) -> bool:
        return bool(self.files)

    def drops(self, fen: str, task: str = "P") -> bool:
        """Whether a row of this position and task goes (counted)."""
        self.seen += 1
        if fen4(fen) in self.keys:
            self.dropped[task] += 1
            return True
        return False

    def keep_indices(self, fens: Sequence[str], tasks: Sequence[str]) -> list[int]:
        """The indices of the rows to keep, counting the others."""
        return [i for i, (fen, task) in enumerate(zip(fens, tasks, strict=True)) if not self.drops(fen, task)]

    def filter(self, ds):
        """`ds` (a datasets Dataset or IterableDataset with fen and task columns) without the excluded rows;
        a Dataset is counted now, an IterableDataset as it is read."""
        if not self:
            return ds
        if hasattr(ds, "__len__"):
            from rookworld_trl.data.layout import column_batches  # datasets' tooling: only where a dataset is

            keep = [start + i for start, (fens, tasks) in column_batches(ds, "fen", "task")
                    for i in self.keep_indices(fens, tasks)]  # fmt: skip
            return ds.select(np.array(keep, dtype=np.int64))  # an array: hashed at once, not item by item
        return ds.filter(lambda row: not self.drops(row["fen"], row["task"]))

    def one_line(self) -> str:
        total = sum(self.dropped.values())
        by_task = ", ".join(f"{task}: {n}" for task, n in sorted(self.dropped.items()))
        return (
            f"--exclude {' '.join(self.files)}: {len(self.keys)} position{'' if len(self.keys) == 1 else 's'}; dropped {total} of {self.seen} rows"
            f"{f' ({by_task})' if by_task else ''} on one of them"
        )

    def to_dict(self) -> dict:
        return {"files": list(self.files), "positions": len(self.keys), "rows_seen": self.seen,
                "rows_dropped": dict(sorted(self.dropped.items()))}  # fmt: skip
