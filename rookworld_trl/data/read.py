"""Bytes -> rows: what a user names as data (a file, its format read by data/files.py; a dataset directory; a hub
dataset id) read into rows of FEATURES, as stored (no exclusion, mix, FEN width or cap: those are data/load.py's
steps). `datasets` reads each source with its builder (text, JSON, Parquet, the hub); raw lines are parsed in
parallel and cached (data/parse.py); a puzzle file, decided here only (`read`), is labelled by Stockfish
(data/labels.py), its positions dropped by --exclude and capped before the engine sees them. A source that cannot
be read is one DataSourceError saying what was tried, what was found and what is expected.

    rows = read_rows("data/mine", "train", skip_bad_rows=True)          # a Dataset, memory-mapped
    rows = stream_rows("big.txt", "train", LoadReport("big.txt"))       # an IterableDataset, read as iterated
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import datasets

from rookworld_trl.common.quiet_logs import dropping
from rookworld_trl.data.errors import DATA_SOURCE_FIX, DataSourceError, missing_source
from rookworld_trl.data.exclude import ExcludeReport, Exclusion
from rookworld_trl.data.files import first_error, is_puzzle_file, kind_of, open_file, read_lines, sniff
from rookworld_trl.data.folders import check_dir
from rookworld_trl.data.labels import PuzzleSource
from rookworld_trl.data.layout import COLUMNS, FEATURES
from rookworld_trl.data.parse import no_bars, parse_table
from rookworld_trl.data.rows import LoadReport, rows_from_lines

# ------------------------------------------------------------------------------------------ opening a source


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


def open_source(source: str, split: str, streaming: bool):
    """A `datasets` table of what `source` names (a file's split is the file itself), or None for a file read as
    lines (files.py read_lines). A puzzle file is refused: its positions are labelled (`read`), not read."""
    path, kind = Path(source), kind_of(source)
    if kind == "missing":
        raise DataSourceError(missing_source(source))
    if is_puzzle_file(source):
        raise DataSourceError(
            f"{source}: a puzzle file holds positions to label, not P:/A: rows; read it with "
            f"load(Spec(...)) or `rookworld data load {source} --out DIR`, which label them"
        )
    with no_bars():
        if kind == "hub":
            try:
                return datasets.load_dataset(source, split=split, streaming=streaming)
            # the hub raises many types (offline, not found, gated, ...): one clear message
            except Exception as e:
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
        return open_file(path, streaming)  # a file, or our layout's split


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


def source_lines(source: str, split: str = "train") -> Iterator[str]:
    """The raw P:/A: lines of any source (a dataset dir's or hub dataset's `split`), streamed."""
    opened = open_source(source, split, streaming=True)
    return read_lines(source) if opened is None else table_lines(opened, source)


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


# ------------------------------------------------------------------------------------ a table's P:/A: lines


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


def table_lines(ds, source: str) -> Iterator[str]:
    """The raw lines of a loaded table: its `text` column, or `prompt` + `completion` joined; else one line
    naming the file, what it has and what it expects."""
    with file_errors(source):
        # a streamed JSON file names its columns when read
        names = ds.column_names or list(next(iter(ds), {}))
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


# ----------------------------------------------------------------------------------------------- rows


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


def read_rows(
    source: str | os.PathLike,
    split: str = "train",
    skip_bad_rows: bool = False,
    report: LoadReport | None = None,
    num_proc: int | None = None,
    puzzles: PuzzleSource | None = None,
) -> datasets.Dataset:
    """The rows of a source's split, as stored; malformed lines counted in `report` (without skip_bad_rows the
    first one stops the read, named). Raw lines are parsed in `num_proc` processes (None: this machine's cores)
    into datasets' cache, memory-mapped (data/parse.py). Not for a puzzle file (`read` labels one)."""
    source = os.fspath(source)
    check_no_puzzle_filter(source, puzzles)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    opened = open_source(source, split, streaming=False)
    with file_errors(source):
        raw = text_table(source) if opened is None else opened  # a text file: its lines as a table
        ds = to_rows(raw, source, report, False, num_proc=num_proc)
    return no_rows_check(ds, source, split, report)


def read(source: str, split: str, exclusion: Exclusion, max_samples: int | None, mix_env_ratio: float | None,
         skip_bad_rows: bool = False, report: LoadReport | None = None, num_proc: int | None = None,
         puzzles: PuzzleSource | None = None) -> tuple[datasets.Dataset, ExcludeReport | None, bool]:  # fmt: skip
    """(the rows of `source`'s split, what `exclusion` dropped from them, whether they are a puzzle file's: then
    the P: rows of its puzzles that `puzzles` keeps and `exclusion` does not drop, the first `max_samples`,
    labelled by Stockfish; A: rows asked of one (`mix_env_ratio`) are refused first, since labelling can take
    a while)."""
    if not is_puzzle_file(source):
        return read_rows(source, split, skip_bad_rows, report, num_proc, puzzles), None, False
    if mix_env_ratio:
        raise DataSourceError(
            f"mix_env_ratio={mix_env_ratio}: {source} is a puzzle file, P: rows only; set --mix_env_ratio 0 "
            "to train on its P: rows alone"
        )
    # filtered and capped before labelling; the columns in FEATURES' order, as every source's
    rows, excluded = (puzzles or PuzzleSource()).rows(source, exclusion, max_samples)
    columns = {name: [row[name] for row in rows] for name in FEATURES}
    return datasets.Dataset.from_dict(columns, features=FEATURES), excluded, True


def stream_rows(source: str, split: str, report: LoadReport, task: str | None = None, count: bool = True):
    """The rows of `source`'s split (of `task`: None both) as they are read, malformed lines counted in `report`
    (when `count`); each pass reads the source anew."""
    opened = open_source(source, split, streaming=True)
    if opened is None:  # a file read as lines
        return dataset_from_lines(lambda: read_lines(source), report, task, count)
    with file_errors(source):
        return to_rows(opened, source, report, True, task, count)
