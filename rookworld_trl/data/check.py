"""The fast check of a data source, before `accelerate launch` starts (the preflight, rookworld_trl/stages/preflight.py):
what is wrong with it as one DataSourceError naming it and the fix, read the way the loader reads it (data/files.py
decides the kind, data/rows.py parses each line) but without `datasets`, and for `seconds` at most: the stage
checks later lines as it loads them.

    check_source("mine.jsonl", skip_bad_rows=False)       # -> mine.jsonl:3: not valid JSON ...; fix or delete ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from rookworld_trl.data.errors import DataSourceError, empty_error, missing_source
from rookworld_trl.data.files import kind_of, read_lines, read_puzzles
from rookworld_trl.data.folders import check_dir
from rookworld_trl.data.puzzles import PuzzleFilter
from rookworld_trl.data.rows import EMPTY_LINE, LoadReport, rows_from_lines

DATA_SECONDS = 1.5  # a longer file's later lines are checked by the stage as it loads them


def check_source(source: str, skip_bad_rows: bool, seconds: float = DATA_SECONDS, rating: str | None = None,
                 themes: str | None = None) -> None:  # fmt: skip
    """A missing path, an empty directory, a file whose structure its format refuses, a puzzle file's bad
    --puzzle_rating/--puzzle_themes or first bad row, or a file's first bad P:/A: line: one DataSourceError. A hub
    id is the stage's to try."""
    kind = kind_of(source)
    if kind == "missing":
        raise DataSourceError(missing_source(source))
    if kind == "dir":
        check_dir(Path(source))
    if isinstance(kind, str):  # a directory (checked) or a hub id
        return
    clock = Clock(time.monotonic() + seconds)
    if kind.positions is not None:  # a puzzle file: positions the stage labels
        try:
            keep = PuzzleFilter.parse(rating, themes)
        except ValueError as e:
            raise DataSourceError(str(e)) from None
        for _ in clock.until(read_puzzles(source, keep)):
            pass
    elif kind.lines is None:  # a table that datasets reads (Parquet): its structure only
        if kind.check is not None:
            kind.check(Path(source))
    else:
        report = LoadReport(source, skip_bad_rows)
        for _ in rows_from_lines(clock.until(read_lines(source)), report):
            pass
        if not clock.out and report.lines == report.malformed[EMPTY_LINE]:  # no line but blank ones
            raise empty_error(source)


class Clock:
    """Items of an iterable until a deadline; `out` says whether the deadline cut it short."""

    def __init__(self, deadline: float):
        self.deadline, self.out = deadline, False

    def until(self, items: Iterable) -> Iterator:
        for item in items:
            if time.monotonic() > self.deadline:
                self.out = True
                return
            yield item
