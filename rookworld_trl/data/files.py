"""The files a user names as data, read without `datasets` (the preflight runs before it is imported), so the
reader (data/read.py), --exclude and the audit accept or refuse a file alike, with the same line.

    from rookworld_trl.data.files import check_source, read_lines, sniff
    sniff("lines.json").name            # 'json-array': a JSON array of lines or of objects
    for line in read_lines("mine.jsonl"): ...   # the P:/A: line of each row ('' for a blank line)
    check_source("mine.jsonl", skip_bad_rows=False)   # mine.jsonl:3: not valid JSON ...; fix or delete ...

A new format is one `Format` in FORMATS. --exclude (`Exclusion`) reads the positions of a BIG-bench
checkmate_in_one task.json, a Lichess puzzle CSV, a data file (.parquet `fen` column, .jsonl P:/A: lines) or any
other file as a FEN/EPD list. A position is its first four FEN fields as python-chess writes them (`fen4`), so
the same position with other clocks, or written by another tool, still matches.

    rookworld train --dataset_name data/mine --exclude puzzles.csv bench.epd
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import chess
import numpy as np

from rookworld_trl.chess.formats import (
    parse_env_prompt,
    parse_policy_prompt,
    position_key,
    split_prompt_completion,
)
from rookworld_trl.data.puzzles import (
    PuzzleFilter,
    load_bigbench_checkmate,
    read_epd,
    read_fen_list,
    read_lichess,
    read_puzzles,
)
from rookworld_trl.data.rows import (
    DATA_SOURCE_FIX,
    EMPTY_LINE,
    FORMATS_DOC,
    DataSourceError,
    LoadReport,
    empty_error,
    line_error,
    open_text,
    rows_from_lines,
)

JSON_ROW_FIX = 'fix or delete that line (each line one JSON object, e.g. {"text": "P: ..."})'


# ---------------------------------------------------------------------------------------- the formats


def text_lines(path: Path) -> Iterator[str]:
    """Lines of a text file (gzip if it ends in .gz), without their line ends."""
    with open_text(path) as f:
        for line in f:
            yield line.rstrip("\r\n")


def row_text(row, path, line_no: int) -> str:
    """The P:/A: line a JSON object holds: `text`, or `prompt` + `completion`; else the one-line error."""
    if not isinstance(row, dict):
        raise line_error(path, line_no, f"a JSON {type(row).__name__}, not an object", JSON_ROW_FIX)
    if isinstance(row.get("text"), str):
        return row["text"]
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return row["prompt"] + row["completion"]
    problem = f"a row with keys {sorted(row)}, no 'text' (or 'prompt' and 'completion') string"
    raise line_error(path, line_no, problem, JSON_ROW_FIX)


def json_objects(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, the line's JSON value; None for a blank line), naming the first bad line."""
    seen = False
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                yield line_no, None
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig"))  # a byte-order mark, as open_text drops it
            except UnicodeDecodeError:
                raise line_error(path, line_no, "not UTF-8 text (a binary file?)",
                                 "pass a JSON Lines file of P:/A: rows") from None  # fmt: skip
            except json.JSONDecodeError as e:
                problem = f"not valid JSON ({e.msg} at column {e.colno})"
                raise line_error(path, line_no, problem, JSON_ROW_FIX) from None
            except RecursionError:  # a value nested thousands deep: no row of ours is deeper than 2
                raise line_error(path, line_no, "JSON nested too deep to be a row", JSON_ROW_FIX) from None
            seen = True
            yield line_no, row
    if not seen:
        raise empty_error(path)


def json_lines(path: Path) -> Iterator[str]:
    for line_no, row in json_objects(path):
        yield "" if row is None else row_text(row, path, line_no)


def json_array_rows(path: Path) -> list[dict]:
    """The rows of a JSON array file: strings become {"text": line}, objects stay as they are."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataSourceError(f"{path}: not a valid JSON array ({e}); fix the file ({FORMATS_DOC})") from None
    if not isinstance(items, list) or not all(isinstance(x, str | dict) for x in items):
        found = sorted({type(x).__name__ for x in items}) if isinstance(items, list) else type(items).__name__
        raise DataSourceError(
            f"{path}: a JSON array of {found}; expected one of P:/A: lines (strings) or of objects with a 'text' "
            "column or 'prompt' and 'completion'"
        )
    if not items:
        raise empty_error(path)
    return [{"text": x} if isinstance(x, str) else x for x in items]


def json_array_lines(path: Path) -> Iterator[str]:
    for item_no, row in enumerate(json_array_rows(path), start=1):
        yield row_text(row, path, item_no)


def starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == b"\xef\xbb\xbf"


def starts_with_bracket(path: Path, bracket: str = "[") -> bool:
    """Whether a text file starts with `bracket`, whitespace aside: a JSON array, or object ("{")."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(64).lstrip().startswith(bracket)


def check_parquet(path: Path) -> None:
    """A Parquet file starts and ends with the bytes PAR1; a truncated or mislabelled one does not."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise DataSourceError(
            f"{path}: not a Parquet file (no PAR1 marker: truncated, or another format named .parquet); "
            f"write it again, or pass the rows as a .jsonl/.txt file ({FORMATS_DOC})"
        )


@dataclass(frozen=True)
class Format:
    """How one file format is read: `looks_like` tells it by its first bytes where a suffix is shared; `lines`
    gives each record's P:/A: line ('' for a blank one); `check` its structure; a puzzle file has `positions`."""

    name: str
    suffixes: tuple[str, ...]
    lines: Callable[[Path], Iterator[str]] | None
    looks_like: Callable[[Path], bool] | None = None
    check: Callable[[Path], None] | None = None
    positions: Callable[..., Iterator] | None = None  # a puzzle file: (path, keep, counts) -> its Puzzles


def puzzle_csv_like(path: Path) -> bool:
    """A CSV of puzzles, not P:/A: lines: a first line of 3+ cells, among them a FEN header or a board."""
    with open_text(path) as f:
        head = next((line for line in f if line.strip()), "")
    cells = [c.strip().lstrip("\ufeff") for c in head.split(",")]
    return len(cells) >= 3 and ("FEN" in cells or any(c.split(" ")[0].count("/") == 7 for c in cells[:2]))


TEXT = Format("text", (), text_lines)  # any suffix no other format claims: lines of text (.gz: gzip)
FORMATS = (  # the first whose suffix (and `looks_like`) fits; else TEXT
    Format("json-array", (".json", ".jsonl"), json_array_lines, looks_like=starts_with_bracket),
    Format("json-lines", (".jsonl", ".json"), json_lines),
    Format("parquet", (".parquet",), None, check=check_parquet),
    # positions to solve, which the loader labels with Stockfish into P: rows (data/puzzles.py)
    Format("lichess-puzzles", (".csv",), None, looks_like=puzzle_csv_like, positions=read_lichess),
    Format("epd", (".epd",), None, positions=read_epd),
)


def sniff(path: str | os.PathLike) -> Format:
    """The format of an existing file: by its suffix, then by its first bytes where a suffix is shared."""
    path = Path(path)
    for fmt in FORMATS:
        if path.suffix in fmt.suffixes and (fmt.looks_like is None or fmt.looks_like(path)):
            return fmt
    return TEXT


def kind_of(source: str | os.PathLike) -> Format | str:
    """What a data source names, decided here only: a file's Format, "dir", "hub" ('owner/name') or "missing"."""
    path, source = Path(source), str(source)
    if path.is_file():
        return sniff(path)
    if path.is_dir():
        return "dir"
    return "hub" if source.count("/") == 1 and not source.startswith((".", "/")) else "missing"


def source_kind(source: str) -> Format | str:
    """kind_of(source), a missing one refused in one line."""
    kind = kind_of(source)
    if kind == "missing":
        raise DataSourceError(
            f"no such file or directory: {source!r} (nor a hub dataset id like 'owner/name'); {DATA_SOURCE_FIX}"
        )
    return kind


def is_puzzle(kind: Format | str) -> bool:
    """Whether a source of this kind (`kind_of`) is a file of positions to label (.csv puzzles, .epd)."""
    return isinstance(kind, Format) and kind.positions is not None


# --------------------------------------------------------------------------- files of positions (--exclude)


def bigbench_like(path: Path) -> bool:
    """A .json file holding one object with "examples" (BIG-bench's task.json), not a JSON array of rows."""
    if path.suffix != ".json" or not starts_with_bracket(path, "{"):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return isinstance(json.load(f).get("examples"), list)
    except (ValueError, AttributeError):
        return False


def positions_kind(path: str | os.PathLike) -> str:
    """Which kind of --exclude file `path` is: 'bigbench', 'lichess', 'epd', 'data' or 'fens' (any other)."""
    path = Path(path)
    if bigbench_like(path):
        return "bigbench"
    kinds = {"lichess-puzzles": "lichess", "epd": "epd", "parquet": "data", "json-lines": "data"}
    return kinds.get(sniff(path).name, "fens")


def position_fens(path: str | os.PathLike) -> Iterator[str]:
    """The FENs of the positions an --exclude file names, by its `positions_kind`."""
    path = Path(path)
    kind = positions_kind(path)
    if kind == "bigbench":
        yield from (fen for fen, _ in load_bigbench_checkmate(str(path)))
    elif kind in ("lichess", "epd"):
        yield from (puzzle.fen for puzzle in read_puzzles(path))
    elif kind == "data" and sniff(path).name == "parquet":
        import pyarrow.parquet as pq

        check_parquet(path)
        if "fen" not in (names := pq.ParquetFile(path).schema_arrow.names):
            raise DataSourceError(
                f"{path}: a Parquet file of positions needs a `fen` column (it has {names}); write it in our "
                "layout (`rookworld data load FILE --out DIR`, then DIR/test.parquet) or as a FEN list"
            )
        yield from pq.read_table(path, columns=["fen"]).column("fen").to_pylist()
    elif kind == "data":  # JSON Lines: each P:/A: line's FEN
        for line in read_lines(path):
            if line:
                prompt, _ = split_prompt_completion(line)
                yield parse_policy_prompt(prompt) if prompt.startswith("P:") else parse_env_prompt(prompt)[0]
    else:
        yield from read_fen_list(path)


# ---------------------------------------------------------------------- --exclude: a position's key, the keys


def fen4(fen: str) -> str:
    """The position of a FEN as python-chess writes it (first four fields); without an en-passant square it is
    taken as it is (cheap), else python-chess reads it.

    >>> fen4("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1")  # no capture: no square
    'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq -'
    """
    fields = fen.split()
    if len(fields) >= 4 and fields[3] == "-":
        return " ".join(fields[:4])
    return canonical_fen4(fen)


class Positions:
    """The positions (fen4 keys) of `fens` as sorted 8-byte hashes: millions in tens of MB, not a GB of strings.
    `fen4(fen) in positions`. Read when first asked (~3 s a million): a run whose eval never asks never pays."""

    def __init__(self, fens: Iterable[str]):
        self.fens = fens

    @functools.cached_property
    def hashes(self) -> np.ndarray:
        hashes = np.unique(np.fromiter((position_hash(fen4(f)) for f in self.fens), dtype=np.uint64))
        self.fens = None
        return hashes

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


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """The positions of some exclude files, never changed; each use counts its drops in its own `report()`."""

    files: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, files: Iterable[str | os.PathLike] | str | None) -> Exclusion:
        """The positions of `files` (a path, several, or None: nothing excluded)."""
        files = (files,) if isinstance(files, str | os.PathLike) else tuple(files or ())
        for path in files:
            if not Path(path).is_file():
                raise DataSourceError(
                    f"--exclude {path}: no such file; pass a FEN list, an .epd file, a Lichess puzzle .csv, a "
                    "BIG-bench checkmate_in_one task.json or a data file (.parquet, .jsonl)"
                )
        keys = {canonical_fen4(fen) for path in files for fen in position_fens(path)}
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


# ----------------------------------------------------------------------------------------- reading


def read_lines(path: str | os.PathLike) -> Iterator[str]:
    """The P:/A: lines of a file in order ('' for a blank record), whatever its format; a record without one is
    a DataSourceError naming the file, the record and the fix."""
    path = Path(path)
    fmt = sniff(path)
    if fmt.check is not None:
        fmt.check(path)
    if is_puzzle(fmt):
        raise DataSourceError(
            f"{path}: a {fmt.name} file holds positions to label, not P:/A: lines; `rookworld data load {path} "
            "--out DIR` labels them (docs/FORMATS.md)"
        )
    if fmt.lines is None:
        raise DataSourceError(
            f"{path}: a {fmt.name} file is read as a table, not as lines; {DATA_SOURCE_FIX}"
        )
    return fmt.lines(path)


def first_error(path: str | os.PathLike) -> DataSourceError | None:
    """The error its lines reader gives a file (None when every record holds a line, or it has no reader)."""
    fmt = sniff(path)
    try:
        deque(fmt.lines(Path(path)) if fmt.lines else (), maxlen=0)  # read every record
    except DataSourceError as e:
        return e
    return None


# ------------------------------------------------------------------------------------ a data folder

INCOMPLETE = (
    ".rookworld_incomplete"  # a layout's files are being replaced (data/layout.py LayoutWriter.commit)
)
LAYOUT_SPLITS = ("train", "validation", "test")


def layout_problem(folder: str | os.PathLike) -> str | None:
    """Why a layout folder cannot be read as one dataset (half-written, or its Parquet row counts disagree with
    its stats.json), or None. Reads Parquet footers only: milliseconds."""
    folder = Path(folder)
    if (folder / INCOMPLETE).exists():
        return (
            f"{folder} is half-written: a `rookworld data load --out` or `data generate` into it was stopped while "
            f"replacing its files ({INCOMPLETE} is there); run that command again, or remove the folder"
        )
    try:
        rows = json.loads((folder / "stats.json").read_text())["rows"]
        expected = {
            split: sum(int(n) for n in rows[split].values()) for split in LAYOUT_SPLITS if split in rows
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no stats.json of ours: nothing to compare with
    import pyarrow as pa  # here: the preflight imports this module, mostly for folders without stats.json
    import pyarrow.parquet as pq

    for split, n in expected.items():
        path = folder / f"{split}.parquet"
        if not path.exists():
            continue
        try:
            found = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException):
            return f"{path} is not a readable Parquet file; run the command that wrote {folder} again"
        if found != n:
            return (
                f"{folder} mixes files of two writes: {split}.parquet holds {found} rows, its stats.json says {n} "
                "(a write into it was stopped halfway, or two wrote at once); run the command that wrote it again, "
                "or remove the folder"
            )
    return None


FOLDER_FORMATS = {".txt": "text", ".text": "text", ".json": "JSON", ".jsonl": "JSON", ".parquet": "Parquet",
                  ".csv": "CSV", ".tsv": "CSV", ".arrow": "Arrow"}  # fmt: skip
NOT_DATA = {"stats.json", "dataset_info.json", "state.json", "dataset_dict.json"}  # metadata beside the data


def check_dir(path: Path) -> None:
    """A DataSourceError for a folder with no data files, a bad layout folder (layout_problem), or one holding
    data files of several formats (datasets would read one format and drop the rest without a word)."""
    if (problem := layout_problem(path)) is not None:
        raise DataSourceError(problem)
    if not any(p.is_file() for p in path.rglob("*")):
        raise DataSourceError(f"{path}: the directory holds no data files; {DATA_SOURCE_FIX}")
    if (path / "train.parquet").exists() or (path / "stats.json").exists():
        return  # our layout: Parquet read, the .txt beside it is the same rows
    counts = Counter(
        kind for file in path.rglob("*")
        if (kind := FOLDER_FORMATS.get(file.suffix.lower())) and file.is_file() and file.name not in NOT_DATA
        and not any(part.startswith(".") for part in file.relative_to(path).parts)  # hidden
    )  # fmt: skip
    if len(counts) > 1:
        held = ", ".join(f"{n} {kind} file{'s' * (n != 1)}" for kind, n in sorted(counts.items()))
        raise DataSourceError(
            f"{path} holds data files of several formats ({held}); a folder is read as one format, so the others "
            "would be dropped: keep one format per folder, or name each file as its own source"
        )


# ------------------------------------------------------------------- the preflight's check of a source

DATA_SECONDS = 1.5  # a longer file's later lines are checked by the stage as it loads them


def check_source(source: str, skip_bad_rows: bool, seconds: float = DATA_SECONDS, rating: str | None = None,
                 themes: str | None = None) -> None:  # fmt: skip
    """The preflight's check: a missing path, an empty directory, a bad file structure, a puzzle file's bad
    filter or row, or a file's first bad P:/A: line within `seconds` is one DataSourceError. A hub id is not tried."""
    kind = source_kind(source)
    if kind == "dir":
        check_dir(Path(source))
    if isinstance(kind, str):  # a directory (checked) or a hub id
        return
    clock = Clock(time.monotonic() + seconds)
    if is_puzzle(kind):  # a puzzle file: positions the stage labels
        try:
            keep = PuzzleFilter.parse(rating, themes)
        except ValueError as e:
            raise DataSourceError(str(e)) from None
        deque(clock.until(read_puzzles(source, keep)), maxlen=0)
    elif kind.lines is None:  # a table that datasets reads (Parquet): its structure only
        if kind.check is not None:
            kind.check(Path(source))
    else:
        report = LoadReport(source, skip_bad_rows)
        deque(rows_from_lines(clock.until(read_lines(source)), report), maxlen=0)
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
