"""Opening what a user names as data: a file (its format read by data/files.py), a dataset directory, or a hub
dataset id. `open_source` gives a `datasets` table or, for a file read as lines, the `Lines` to read anew on
each pass; `table_lines` reads a table's P:/A: lines. A source that cannot be read is one DataSourceError
saying what was tried, what was found and what is expected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from rookworld_trl.common.quiet_logs import dropping
from rookworld_trl.data.errors import DATA_SOURCE_FIX, DataSourceError, missing_source
from rookworld_trl.data.files import (
    Format,
    first_error,
    kind_of,
    open_file,
    read_lines,
    sniff,
)
from rookworld_trl.data.folders import check_dir


def hub_error(source: str, error: Exception) -> DataSourceError:
    offline = datasets.config.HF_HUB_OFFLINE
    return DataSourceError(
        f"could not load {source!r}: it is not a local file or directory, so it was tried as a Hugging Face hub "
        f"dataset id, which failed{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
        f"{type(error).__name__}: {error}\n"
        f"Fix: if {source!r} is meant to be a local path, make it (`rookworld data generate --out {source}`) or "
        f"pass an existing local source (a `rookworld data generate` output dir, a .parquet/.jsonl/.txt file); "
        f"for a hub dataset, on a machine with internet run `hf download {source} --repo-type dataset "
        f"--local-dir DIR` and pass DIR."
    )


@dataclass(frozen=True)
class Lines:
    """A file read as P:/A: lines: each iteration reads it anew (data/files.py read_lines)."""

    path: str

    def __iter__(self) -> Iterator[str]:
        return read_lines(self.path)


@dataclass(frozen=True)
class PuzzleFile:
    """A file of positions to label (a Lichess puzzle .csv, an .epd suite): read by data/labels.py, not as rows."""

    path: str


@contextlib.contextmanager
def no_bars():
    """datasets' progress bars off within the block: a source's Arrow copy is written in seconds, and a bad
    file's error stays the one line on stderr (the parse's bar, data/parse.py, shows lines/s)."""
    was_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.utils.enable_progress_bars()


def text_table(path: str | os.PathLike) -> datasets.Dataset:
    """A text file's lines as a `text` column, read by datasets' text builder into its cache, memory-mapped (as
    files.py open_text reads them: gzip by suffix, a byte-order mark dropped, undecodable bytes replaced)."""
    try:
        with no_bars():
            return datasets.load_dataset(
                "text", data_files=str(path), split="train", encoding="utf-8-sig", encoding_errors="replace"
            )
    except datasets.exceptions.DatasetGenerationError:
        if next(iter(read_lines(path)), None) is not None:
            raise
        return datasets.Dataset.from_dict(
            {"text": []}, features=datasets.Features({"text": datasets.Value("string")})
        )


def open_source(source: str, split: str, streaming: bool):
    """A `datasets` table of what `source` names (a file's split is the file), or `Lines` for a file read as
    lines."""
    with no_bars():
        return _open_source(source, split, streaming)


def _open_source(source: str, split: str, streaming: bool):
    path, kind = Path(source), kind_of(source)
    if kind == "missing":
        raise DataSourceError(missing_source(source))
    if kind == "hub":
        try:
            return datasets.load_dataset(source, split=split, streaming=streaming)
        except (
            Exception
        ) as e:  # the hub raises many types (offline, not found, gated, ...): one clear message
            raise hub_error(source, e) from None
    if kind == "dir":
        check_dir(path)
        path = path / f"{split}.parquet"  # our layout: a split is one Parquet file
        if not path.exists():
            try:
                return datasets.load_dataset(source, split=split, streaming=streaming)
            except (ValueError, OSError) as e:
                raise DataSourceError(
                    f"could not load {source!r} (split {split!r}): {type(e).__name__}: {str(e).rstrip('.')}; "
                    f"{DATA_SOURCE_FIX} (docs/FORMATS.md)"
                ) from None
    if isinstance(kind, Format) and kind.positions is not None:
        return PuzzleFile(source)
    opened = open_file(path, streaming)  # a file, or our layout's split
    return Lines(source) if opened is None else opened


def source_lines(source: str, split: str = "train") -> Iterator[str]:
    """The raw P:/A: lines of any source (a dataset dir's or hub dataset's `split`), streamed."""
    opened = open_source(source, split, streaming=True)
    return iter(opened) if isinstance(opened, Lines) else table_lines(opened, source)


@contextlib.contextmanager
def file_errors(source: str):
    """A file that datasets fails to read lazily (an empty file, a binary one, a bad line) becomes the one
    DataSourceError its format's lines reader gives (data/files.py)."""
    try:
        with dropping("datasets.packaged_modules.json.json", "Failed to load JSON"):  # ours names the line
            yield
    except DataSourceError:
        raise
    except Exception as e:  # StopIteration, pyarrow's ArrowInvalid, DatasetGenerationError, ...
        path = Path(source)
        if not (path.is_file() and sniff(path).lines is not None):
            raise
        raise first_error(path) or DataSourceError(f"could not read {source!r}: {e}") from None


def table_lines(ds, source: str) -> Iterator[str]:
    """The raw lines of a loaded table: its `text` column, or `prompt` + `completion` joined; else one line
    naming the file, what it has and what it expects."""
    with file_errors(source):
        yield from _table_lines(ds, source)


def line_columns(names, source: str) -> list[str]:
    """The columns a table's P:/A: lines are in: `text`, or `prompt` + `completion`; else no_text_error."""
    if "text" in names:
        return ["text"]
    if {"prompt", "completion"} <= set(names):
        return ["prompt", "completion"]
    raise no_text_error(source, names)


def line_table(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    """A loaded table's columns of P:/A: lines (line_columns), checked whole by Arrow: strings, no row
    without them; else the error `table_lines` gives."""
    columns = line_columns(ds.column_names, source)
    for name in columns:
        if ds.features[name] not in (datasets.Value("string"), datasets.Value("large_string")):
            kind = getattr(ds.features[name], "dtype", None) or type(ds.features[name]).__name__
            raise DataSourceError(
                f"{source}: its {name!r} column holds {kind} values, not text; expected strings of P:/A: lines "
                f"(docs/FORMATS.md): write the column as strings"
            )
        if ds.data.column(name).null_count:  # a row without them, in a file whose other rows have them
            raise no_text_error(source, ds.column_names)
    return ds.select_columns(columns)


def _table_lines(ds, source: str) -> Iterator[str]:
    names = ds.column_names or list(next(iter(ds), {}))  # a streamed JSON file names its columns when read
    columns = line_columns(names, source)
    for example in ds.select_columns(columns):
        if any(not isinstance(example[c], str) for c in columns):
            raise no_text_error(source, names)  # a row without them, in a file whose other rows have them
        yield "".join(example[c] for c in columns)


def no_text_error(source: str, names) -> DataSourceError:
    """A file's own line-reader wording when it has one (the preflight's), else what the table's columns are."""
    path = Path(source)
    if path.is_file() and (error := first_error(path)) is not None:
        return error
    return DataSourceError(
        f"{source}: has columns {sorted(names)}; expected a 'text' column of P:/A: lines, 'prompt' and "
        "'completion' columns, or our dataset columns (rookworld data load --out)"
    )
