"""How reading data fails, in one wording: `DataSourceError` (problem, file, fix), the line a bad record gets
(`line_error`), what a missing source or an empty file is told, and `open_text`, which never fails on a byte.
Every data module, the preflight and the stages word a data problem through here.
"""

from __future__ import annotations

import gzip
import os

from rookworld_trl.common.errors import UserError

FORMATS_DOC = "docs/FORMATS.md"
# the fix a malformed data line's one-line error ends with (data loading, the stages, the preflight)
BAD_LINE_FIX = "fix or delete that line, or pass --skip_bad_rows to skip malformed lines (they are counted)"
# what a data source's one-line error ends with when the source cannot be read at all (the preflight, data loading)
DATA_SOURCE_FIX = "pass a `rookworld data generate` output dir or a .parquet/.jsonl/.txt file of P:/A: rows"


class DataSourceError(UserError, ValueError):
    """A source that cannot be loaded; the message says what was tried and how to fix it."""


def line_error(path, line_no: int, problem: str, fix: str = BAD_LINE_FIX) -> DataSourceError:
    """The one wording of a bad record: `file:line: problem; fix`."""
    return DataSourceError(f"{path}:{line_no}: {problem}; {fix}")


def empty_error(path) -> DataSourceError:
    return DataSourceError(
        f"{path}: the file is empty; pass a file with one P:/A: row per line ({FORMATS_DOC})"
    )


def open_text(path: str | os.PathLike):
    """A text file for reading, gzip if it ends in .gz; undecodable bytes become U+FFFD, never an error. A
    UTF-8 byte-order mark (Windows editors write one) is dropped: line 1 reads as the user sees it."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", errors="replace")
