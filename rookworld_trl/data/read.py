"""Bytes -> rows: a source's split read into rows of FEATURES, as stored (no exclusion, mix, FEN width or cap:
those are data/load.py's steps). Raw lines are parsed in parallel and cached (data/parse.py); a puzzle file is
labelled by Stockfish (data/labels.py), its positions dropped by --exclude and capped before the engine sees them.

    rows = read_rows("data/mine", "train", skip_bad_rows=True)          # a Dataset, memory-mapped
    rows = stream_rows("big.txt", "train", LoadReport("big.txt"))       # an IterableDataset, read as iterated
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import datasets
import pyarrow as pa

from rookworld_trl.data.errors import DataSourceError
from rookworld_trl.data.exclude import ExcludeReport, Exclusion
from rookworld_trl.data.labels import PuzzleSource
from rookworld_trl.data.layout import BATCH_ROWS, COLUMNS, FEATURES
from rookworld_trl.data.parse import parse_table
from rookworld_trl.data.rows import LoadReport, rows_from_lines
from rookworld_trl.data.sources import (
    Lines,
    PuzzleFile,
    file_errors,
    line_table,
    open_source,
    table_lines,
    text_table,
)


def table_from_rows(rows: Iterable[dict]) -> pa.Table:
    """An Arrow table of rows, built in batches (compact: no Python objects kept per row)."""
    batches, batch = [], []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH_ROWS:
            batches.append(pa.Table.from_pylist(batch, schema=FEATURES.arrow_schema))
            batch = []
    batches.append(pa.Table.from_pylist(batch, schema=FEATURES.arrow_schema))
    return pa.concat_tables(batches)


def dataset_from_lines(lines_fn, report: LoadReport, task: str | None = None, count: bool = True):
    """A streaming dataset of the rows of `lines_fn()`, an iterable of raw lines read anew on each pass (in
    memory, a source's lines are parsed in parallel and cached: data/parse.py)."""

    def generate():
        yield from rows_from_lines(lines_fn(), report, task, count)

    return datasets.IterableDataset.from_generator(generate, features=FEATURES)


def to_rows(
    ds, source: str, report: LoadReport, streaming: bool, task: str | None = None, count: bool = True,
    num_proc: int | None = None,
):  # fmt: skip
    """Our columns: as they are when present, else parsed from a `text` column of raw lines (in memory: in
    `num_proc` processes, cached, data/parse.py)."""
    names = ds.column_names or list(next(iter(ds), {}))  # a streamed JSON file names its columns when read
    if set(COLUMNS) <= set(names):
        ds = ds.select_columns(list(COLUMNS))
        ds = ds if ds.features == FEATURES else ds.cast(FEATURES)  # e.g. JSON numbers read as int64
        if not streaming:  # read by column, not line by line: its rows are what the report counts
            report.rows += len(ds)
        return ds if task is None else ds.filter(lambda row: row["task"] == task)
    if streaming:
        return dataset_from_lines(lambda: table_lines(ds, source), report, task, count)
    rows = parse_table(line_table(ds, source), source, report, num_proc)
    return rows if task is None else rows.filter(lambda t: t == task, input_columns="task")


def prompt_rows(ds, name: str = "train_dataset"):
    """A dataset a RookWorld trainer can sample prompts from: as given when it has a `prompt` column; our columns
    (prompt, completion, task, labels) parsed from a `text` column of P:/A: lines; else a DataSourceError
    naming its columns and the fix. A streamed dataset is passed on as it is."""
    names = getattr(ds, "column_names", None)
    if names is None or "prompt" in names:
        return ds
    if "text" not in names:
        raise DataSourceError(
            f"{name} has the columns {names} but no `prompt`: give it a `prompt` column (P:/A: prompts, e.g. "
            "from rookworld_trl.chess.formats.policy_prompt) or a `text` column of whole P:/A: lines, or load it "
            "with load_rookworld_dataset"
        )
    return to_rows(ds, name, LoadReport(name), streaming=False)  # a malformed line: DataSourceError naming it


def no_rows_check(ds, source: str, split: str, report: LoadReport):
    """`ds`, unless it is an in-memory dataset without rows: then a DataSourceError that says what the source
    held (an empty file, a binary or CSV file of lines that are not P:/A: lines, ...) and what is expected."""
    if len(ds):
        return ds
    if os.path.isfile(os.path.join(source, f"{split}.parquet")):  # a generated dir may leave a split empty
        raise DataSourceError(
            f"{source}: its {split!r} split has no rows; name another split (--dataset_train_split / "
            f"--dataset_test_split; `rookworld data load {source} --split SPLIT` counts each)"
        )
    raise DataSourceError(
        f"{source} (split {split!r}) holds no P:/A: rows: {report.one_line()}. Expected `P: <FEN> ...` / `A: ...` lines "
        f"(docs/FORMATS.md), a `rookworld data generate` output dir, or a .parquet/.jsonl file with prompt and "
        f"completion columns; `rookworld data load {source}` shows what it holds"
    )


def check_no_puzzle_filter(source: str, puzzles: PuzzleSource | None) -> None:
    if puzzles is not None and puzzles.keep:
        raise DataSourceError(
            f"{source}: --puzzle_rating/--puzzle_themes filter puzzle files (a Lichess puzzle .csv, an .epd "
            "suite), which this source is not: drop them"
        )


def not_puzzles(opened) -> None:
    """A DataSourceError when what open_source gave is a puzzle file: its positions are labelled, not read."""
    if isinstance(opened, PuzzleFile):
        raise DataSourceError(
            f"{opened.path}: a puzzle file holds positions to label, not P:/A: rows; read it with "
            f"load(Spec(...)) or `rookworld data load {opened.path} --out DIR`, which label them"
        )


def read_rows(
    source: str | os.PathLike,
    split: str = "train",
    skip_bad_rows: bool = False,
    report: LoadReport | None = None,
    num_proc: int | None = None,
    puzzles: PuzzleSource | None = None,
    opened=None,
) -> datasets.Dataset:
    """The rows of a source's split, as stored; malformed lines counted in `report` (without skip_bad_rows the
    first one stops the read, named). Raw lines are parsed in `num_proc` processes (None: this machine's cores)
    into datasets' cache, memory-mapped (data/parse.py). `opened`: what open_source gave for it, if asked
    already. Not for a puzzle file (`read_puzzle_rows`)."""
    source = os.fspath(source)
    check_no_puzzle_filter(source, puzzles)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    opened = open_source(source, split, streaming=False) if opened is None else opened
    not_puzzles(opened)
    with file_errors(source):
        raw = text_table(source) if isinstance(opened, Lines) else opened  # a text file: its lines as a table
        ds = to_rows(raw, source, report, False, num_proc=num_proc)
    return no_rows_check(ds, source, split, report)


def read_puzzle_rows(
    source: str, puzzles: PuzzleSource | None, exclusion: Exclusion, max_puzzles: int | None
):
    """(the P: rows of a puzzle file's puzzles that `puzzles` keeps and `exclusion` does not drop, the first
    `max_puzzles`, labelled by Stockfish; what `exclusion` dropped)."""
    rows, excluded = (puzzles or PuzzleSource()).rows(
        source, exclusion, max_puzzles
    )  # filtered before labelling
    return datasets.Dataset(datasets.table.InMemoryTable(table_from_rows(rows))), excluded


def read(source: str, split: str, exclusion: Exclusion, max_samples: int | None, mix_env_ratio: float | None,
         skip_bad_rows: bool = False, report: LoadReport | None = None, num_proc: int | None = None,
         puzzles: PuzzleSource | None = None) -> tuple[datasets.Dataset, ExcludeReport | None, bool]:  # fmt: skip
    """(the rows of `source`'s split, what `exclusion` dropped from them, whether they are a puzzle file's: then
    already excluded and capped to `max_samples`, before labelling; A: rows asked of one (`mix_env_ratio`) are
    refused first, since labelling can take a while)."""
    opened = open_source(source, split, streaming=False)
    if isinstance(opened, PuzzleFile):
        if mix_env_ratio:
            raise DataSourceError(
                f"mix_env_ratio={mix_env_ratio}: {source} is a puzzle file, P: rows only; set --mix_env_ratio 0 "
                "to train on its P: rows alone"
            )
        return *read_puzzle_rows(source, puzzles, exclusion, max_samples), True
    return read_rows(source, split, skip_bad_rows, report, num_proc, puzzles, opened), None, False


def stream_rows(source: str, split: str, report: LoadReport, task: str | None = None, count: bool = True):
    """The rows of `source`'s split (of `task`: None both) as they are read, malformed lines counted in `report`
    (when `count`); each pass reads the source anew."""
    opened = open_source(source, split, streaming=True)
    not_puzzles(opened)
    if isinstance(opened, Lines):  # a file read as lines
        return dataset_from_lines(opened.__iter__, report, task, count)
    with file_errors(source):
        return to_rows(opened, source, report, True, task, count)
