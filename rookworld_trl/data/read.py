"""Any source -> rows of FEATURES, as stored (no exclusion, mix, FEN width or cap: those are data/load.py's steps).
What the source is, is decided once (data/files.py kind_of): a file (its format sniffed), a dataset folder (our
layout: a split is one Parquet file; else whatever `datasets` reads), a hub dataset id. `datasets.load_dataset`
reads it with the builder of its format (text, json, parquet, a folder, the hub) into its cache; raw P:/A: lines
become rows in ONE batched `Dataset.map` (`parse_table`) over the machine's cores, cached by datasets' own
fingerprint of the map; a puzzle file's positions are labelled by Stockfish (data/puzzles.py) after --exclude and
the cap. A source that cannot be read is one DataSourceError: what was tried, what was found, the fix.

    rows = read_rows("data/mine", "train", skip_bad_rows=True)          # a Dataset, memory-mapped
    rows = stream_rows("big.txt", "train", LoadReport("big.txt"))       # an IterableDataset, read as iterated

The parse, at scale: each line goes through rows.py `row_from_line` (python-chess builds one board per line, the
load's cost: docs/PERFORMANCE.md "Loading at scale"), each row with its error ("" when well-formed); the cache
key holds PARSER (the parsing code's hash: datasets keys a map by the function's name, not by the code it
calls), so a changed file or parser is parsed again. The errors are read after the map, in line order: the first
malformed line is the file's first, whatever the batch or process that read it, and `skip_bad_rows` counts them
by reason as rows.py's `rows_from_lines` does. A big source's first lines are checked before the map, so a wrong
file stops at once (`check_first_lines`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import chess
import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rookworld_trl.chess import environment, formats
from rookworld_trl.chess.formats import FormatError
from rookworld_trl.common.quiet_logs import dropping
from rookworld_trl.data import rows as rows_module
from rookworld_trl.data.errors import DATA_SOURCE_FIX, FORMATS_DOC, DataSourceError
from rookworld_trl.data.exclude import ExcludeReport, Exclusion
from rookworld_trl.data.files import (
    Format,
    check_dir,
    check_parquet,
    first_error,
    json_array_rows,
    json_objects,
    read_lines,
    sniff,
    source_kind,
    starts_with_bom,
)
from rookworld_trl.data.layout import COLUMNS, FEATURES, no_bars
from rookworld_trl.data.puzzles import PuzzleSource
from rookworld_trl.data.rows import EMPTY_LINE, LoadReport, row_from_line, rows_from_lines

# ---------------------------------------------------------------------------- raw lines -> rows, at scale

# Each row's `reason` (the count key: "" when well-formed) and `error` (the whole message of a bad line).
PARSED = datasets.Features(
    {**FEATURES, "reason": datasets.Value("string"), "error": datasets.Value("string")}
)
# Rows a process gets at least: below this, starting processes costs more than it saves.
ROWS_PER_PROC = 20_000
# Sources of this many lines show the parse's progress bar (lines/s); a smaller one's error stays one line.
PROGRESS_ROWS = 100_000
# A source that large has its first lines parsed before the map: a file that is not P:/A: lines stops at once.
FIRST_LINES = 1_000
# A malformed line's row: its values are never read (checked_rows drops it), one Arrow type per column.
EMPTY_ROW = {name: [] if isinstance(feature, datasets.List) else None for name, feature in FEATURES.items()}


def parser_version() -> str:
    """A hash of the code that turns a line into a row (and python-chess's version): datasets names a map's
    cache by the function's name, not its code, so a changed parser is told apart by this argument."""
    code = (Path(module.__file__).read_bytes() for module in (formats, environment, rows_module))
    text = chess.__version__ + "".join(map(repr, code)) + Path(__file__).read_text()
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


PARSER = parser_version()


def default_num_proc() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_batch(batch: dict, parser: str = PARSER) -> dict[str, list]:
    """The rows of a batch of raw lines (`text`, or `prompt` + `completion`), each with its reason and error.
    `parser`: PARSER, read by datasets' cache key only."""
    lines = (
        batch["text"]
        if "text" in batch
        else [p + c for p, c in zip(batch["prompt"], batch["completion"], strict=True)]
    )
    out: dict[str, list] = {name: [] for name in PARSED}
    for line in lines:
        if not line.strip():
            row, reason, error = None, EMPTY_LINE, EMPTY_LINE
        else:
            try:
                row, reason, error = row_from_line(line), "", ""
            except FormatError as e:
                row, reason, error = None, e.reason, str(e)
        row = row or EMPTY_ROW
        for name in FEATURES:
            out[name].append(row[name])
        out["reason"].append(reason)
        out["error"].append(error)
    return out


def parse_table(raw: datasets.Dataset, source: str, report: LoadReport, num_proc: int | None = None):
    """The rows of the lines of `raw` (see the module docstring); a malformed line stops with its one line
    (file:line, the fix) unless `report.skip_bad_rows`, which counts it."""
    if not len(raw):  # map gives a table of no columns
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    if len(raw) >= PROGRESS_ROWS and not report.skip_bad_rows:
        check_first_lines(raw, report)
    procs = num_proc or min(default_num_proc(), max(1, len(raw) // ROWS_PER_PROC))
    with contextlib.nullcontext() if len(raw) >= PROGRESS_ROWS else no_bars():
        parsed = raw.map(
            parse_batch,
            batched=True,
            remove_columns=raw.column_names,
            features=PARSED,
            num_proc=procs if procs > 1 and len(raw) > 1 else None,
            fn_kwargs={"parser": PARSER},  # in datasets' cache key, beside the source's fingerprint
            desc=f"parsing {Path(source).name}",  # datasets adds "(num_proc=N)"
        )
    return checked_rows(parsed, report)


def check_first_lines(raw: datasets.Dataset, report: LoadReport) -> None:
    """Stop at the first malformed line among `raw`'s first FIRST_LINES (its file:line, the fix) before the
    parse of the whole source: a wrong file or format is said in a second, not after minutes of parsing."""
    head = parse_batch(raw[:FIRST_LINES])
    for line_no, (reason, error) in enumerate(zip(head["reason"], head["error"], strict=True), start=1):
        if reason and reason != EMPTY_LINE:
            report.bad(reason, line_no, error)


def checked_rows(parsed: datasets.Dataset, report: LoadReport) -> datasets.Dataset:
    """`parsed` without its malformed lines, counted in `report` in line order (the first one raised unless
    skip_bad_rows)."""
    report.lines += len(parsed)
    reasons = parsed.data.column("reason")
    bad = pc.indices_nonzero(pc.not_equal(reasons, "")).to_numpy()
    if len(bad):
        picked = parsed.data.table.select(["reason", "error"]).take(pa.array(bad))
        reasons_and_errors = (picked.column(name).to_pylist() for name in ("reason", "error"))
        for index, reason, error in zip(bad.tolist(), *reasons_and_errors, strict=True):
            report.bad(reason, index + 1, error)  # a line's number: its row's index + 1
    rows = parsed.remove_columns(["reason", "error"])
    if len(bad):  # an index over the rows kept (no copy of them)
        rows = rows.select(pc.indices_nonzero(pc.equal(reasons, "")).to_numpy().astype("int64"))
    report.rows += len(rows)
    return rows


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


def open_source(source: str, split: str, streaming: bool, kind: Format | str):
    """A `datasets` table of what `source` names (a file's split is the file itself), or None for a file read as
    lines (files.py read_lines). `kind`: `source_kind(source)`. A puzzle file is refused: its positions are
    labelled (`read`), not read."""
    path = Path(source)
    if isinstance(kind, Format) and kind.positions is not None:
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


# ------------------------------------------------------------------------- files datasets reads as tables


def json_array_table(path: Path, streaming: bool):
    return datasets.Dataset.from_list(json_array_rows(path))


def json_lines_table(path: Path, streaming: bool):
    """datasets' JSON builder (it keeps our columns when a file has them); its failures become our line."""
    try:
        if starts_with_bom(path):  # datasets 4.7's JSON builder reads the mark as data: the rows read here
            table = datasets.Dataset.from_list([row for _, row in json_objects(path) if row is not None])
            return table.to_iterable_dataset() if streaming else table
        with dropping("datasets.packaged_modules.json.json", "Failed to read"):  # ours names the line
            return datasets.load_dataset("json", data_files=str(path), split="train", streaming=streaming)
    except Exception as e:  # datasets' json builder: StopIteration (empty), ArrowInvalid, ...
        raise first_error(path) or DataSourceError(f"could not load {str(path)!r}: {e}") from None


def parquet_table(path: Path, streaming: bool):
    check_parquet(path)
    if pq.ParquetFile(path).metadata.num_rows == 0:  # datasets' builder fails on a file of no rows
        table = datasets.Dataset(pq.read_table(path))
        return table.to_iterable_dataset() if streaming else table
    try:
        return datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=streaming)
    except (ValueError, OSError) as e:
        raise DataSourceError(
            f"could not load {str(path)!r}: {type(e).__name__}: {str(e).rstrip('.')}; {DATA_SOURCE_FIX} ({FORMATS_DOC})"
        ) from None


TABLES = {"json-array": json_array_table, "json-lines": json_lines_table, "parquet": parquet_table}


def open_file(path: str | os.PathLike, streaming: bool = False):
    """A `datasets` table of a file whose format has one (Parquet, JSON), checked first; None for a format that
    is read as lines (`read_lines`)."""
    path = Path(path)
    fmt = sniff(path)
    if fmt.check is not None:
        fmt.check(path)
    table = TABLES.get(fmt.name)
    return None if table is None else table(path, streaming)


def text_table(path: str | os.PathLike) -> datasets.Dataset:
    """A text file's lines as a `text` column, read by datasets' text builder into its cache, memory-mapped (as
    files.py open_text reads them: gzip by suffix, a byte-order mark dropped, undecodable bytes replaced)."""
    try:
        with no_bars():
            return datasets.load_dataset(
                "text", data_files=str(path), split="train", encoding="utf-8-sig", encoding_errors="replace"
            )
    except datasets.exceptions.DatasetGenerationError:  # no line to read: lines decode, bad bytes replaced
        return datasets.Dataset.from_dict(
            {"text": []}, features=datasets.Features({"text": datasets.Value("string")})
        )


def source_lines(source: str, split: str = "train") -> Iterator[str]:
    """The raw P:/A: lines of any source (a dataset dir's or hub dataset's `split`), streamed."""
    opened = open_source(source, split, streaming=True, kind=source_kind(source))
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
    memory, a source's lines are parsed in parallel and cached: this module)."""

    def generate():
        yield from rows_from_lines(lines_fn(), report, task, count)

    return datasets.IterableDataset.from_generator(generate, features=FEATURES)


def our_columns(ds, names):
    """`ds` in FEATURES, when it holds our columns (None: it does not)."""
    if not set(COLUMNS) <= set(names):
        return None
    ds = ds.select_columns(list(COLUMNS))
    return ds if ds.features == FEATURES else ds.cast(FEATURES)  # e.g. JSON numbers read as int64


def to_rows(ds, source: str, report: LoadReport, num_proc: int | None = None) -> datasets.Dataset:
    """Our columns: as they are when present, else parsed from a `text` column of raw lines in `num_proc`
    processes, cached (`parse_table`)."""
    if (rows := our_columns(ds, ds.column_names)) is not None:
        report.rows += len(rows)  # read by column, not line by line: its rows are what the report counts
        return rows
    lines = line_table(ds, source)
    return parse_table(lines, source, report, num_proc)


def stream_to_rows(ds, source: str, report: LoadReport, task: str | None = None, count: bool = True):
    """to_rows of a streamed table, as it is read (of `task`: None both); malformed lines counted in `report`
    when `count`."""
    names = ds.column_names or list(next(iter(ds), {}))  # a streamed JSON file names its columns when read
    if (rows := our_columns(ds, names)) is not None:
        return rows if task is None else rows.filter(lambda row: row["task"] == task)
    return dataset_from_lines(lambda: table_lines(ds, source), report, task, count)


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
    return to_rows(ds, name, LoadReport(name))  # a malformed line: DataSourceError naming it


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
) -> datasets.Dataset:
    """The rows of a source's split, as stored; malformed lines counted in `report` (without skip_bad_rows the
    first one stops the read, named). Raw lines are parsed in `num_proc` processes (None: this machine's cores)
    into datasets' cache, memory-mapped. Not for a puzzle file (`read` labels one)."""
    source = os.fspath(source)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    return stored_rows(source, split, source_kind(source), report, num_proc)


def stored_rows(source: str, split: str, kind: Format | str, report: LoadReport, num_proc: int | None):
    """read_rows of a source whose kind (files.py kind_of) is known."""
    opened = open_source(source, split, streaming=False, kind=kind)
    with file_errors(source):
        raw = text_table(source) if opened is None else opened  # a text file: its lines as a table
        ds = to_rows(raw, source, report, num_proc)
    report.check_rows(len(ds), split)  # none: one line saying what the source held
    return ds


def read(source: str, split: str, kind: Format | str, exclusion: Exclusion, max_samples: int | None, mix_env_ratio: float | None,
         skip_bad_rows: bool = False, report: LoadReport | None = None, num_proc: int | None = None,
         puzzles: PuzzleSource | None = None) -> tuple[datasets.Dataset, ExcludeReport | None, bool]:  # fmt: skip
    """(the rows of `source`'s split, what `exclusion` dropped from them, whether they are a puzzle file's: then
    the P: rows of its puzzles that `puzzles` keeps and `exclusion` does not drop, the first `max_samples`,
    labelled by Stockfish; A: rows asked of one (`mix_env_ratio`) are refused first, since labelling can take
    a while). `kind`: `source_kind(source)`, decided once."""
    if not (isinstance(kind, Format) and kind.positions is not None):
        check_no_puzzle_filter(source, puzzles)
        report = report if report is not None else LoadReport(source, skip_bad_rows)
        return stored_rows(source, split, kind, report, num_proc), None, False
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
    opened = open_source(source, split, streaming=True, kind=source_kind(source))
    if opened is None:  # a file read as lines
        return dataset_from_lines(lambda: read_lines(source), report, task, count)
    with file_errors(source):
        return stream_to_rows(opened, source, report, task, count)
