"""Any source -> rows of FEATURES, as stored (the steps after are data/load.py's), in memory or streamed.
`datasets.load_dataset` reads a file, a folder or a hub id with the builder of its format; raw P:/A: lines become
rows in ONE batched `map` (`parse_batch`) over the machine's cores, cached by datasets' fingerprint. A puzzle file
is labelled by Stockfish (`read_puzzles`). A source that cannot be read is one DataSourceError.

    rows = read("data/mine", "train", source_kind("data/mine"), LoadReport("data/mine"))    # memory-mapped
    rows = read("big.txt", "train", source_kind("big.txt"), LoadReport("big.txt"), streaming=True)

Each row carries its error ("" when well-formed), read after the map in line order, so the first malformed line
named is the file's first whatever process read it (docs/PERFORMANCE.md "Loading at scale").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rookworld_trl.common.quiet_logs import dropping
from rookworld_trl.data.files import (
    Exclusion,
    Format,
    check_dir,
    first_error,
    is_puzzle,
    json_array_rows,
    json_objects,
    read_lines,
    sniff,
    source_kind,
    starts_with_bom,
)
from rookworld_trl.data.layout import COLUMNS, FEATURES, no_bars
from rookworld_trl.data.puzzles import PuzzleSource
from rookworld_trl.data.rows import (
    DATA_SOURCE_FIX,
    EMPTY_LINE,
    FORMATS_DOC,
    DataSourceError,
    LoadReport,
    row_or_error,
)

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
# A malformed line's row: its values are never read (counted_rows drops it), one Arrow type per column.
EMPTY_ROW = {name: [] if isinstance(feature, datasets.List) else None for name, feature in FEATURES.items()}
# a streamed row without its line (the other rows have one): the source's columns are wrong
NO_TEXT = "no text"
TEXT_FEATURES = datasets.Features({"text": datasets.Value("string")})  # a text file's lines


def parse_batch(batch: dict) -> dict[str, list]:
    """The rows of a batch of raw lines (`text`, or `prompt` + `completion`), each with its reason and error."""
    if "text" in batch:
        lines = batch["text"]
    else:
        lines = [p + c if isinstance(p, str) and isinstance(c, str) else None
                 for p, c in zip(batch["prompt"], batch["completion"], strict=True)]  # fmt: skip
    out: dict[str, list] = {name: [] for name in PARSED}
    for line in lines:
        row, reason, error = row_or_error(line) if isinstance(line, str) else (None, NO_TEXT, NO_TEXT)
        row = row or EMPTY_ROW
        for name in FEATURES:
            out[name].append(row[name])
        out["reason"].append(reason)
        out["error"].append(error)
    return out


def parse_table(
    raw, source: str, report: LoadReport, num_proc: int | None = None, names: list[str] | None = None
):
    """The rows of the lines of `raw` (a Dataset, or an IterableDataset parsed as it is read); a malformed line
    stops with its one line unless `report.skip_bad_rows`, which counts it."""
    names = names or raw.column_names
    columns = line_columns(names, source)
    if isinstance(raw, datasets.IterableDataset):
        parsed = raw.map(parse_batch, batched=True, remove_columns=names, features=PARSED)
        return counted_stream(parsed, source, names, report)
    raw = line_table(raw, columns, source)
    if not len(raw):  # map gives a table of no columns
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    if len(raw) >= PROGRESS_ROWS and not report.skip_bad_rows:  # a wrong file: said in seconds, not minutes
        head = parse_batch(raw[:FIRST_LINES])
        for line_no, (reason, error) in enumerate(zip(head["reason"], head["error"], strict=True), start=1):
            if reason and reason != EMPTY_LINE:
                report.bad(reason, line_no, error)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    procs = num_proc or min(cores, max(1, len(raw) // ROWS_PER_PROC))
    with contextlib.nullcontext() if len(raw) >= PROGRESS_ROWS else no_bars():
        parsed = raw.map(
            parse_batch,
            batched=True,
            remove_columns=raw.column_names,
            features=PARSED,
            num_proc=procs if procs > 1 and len(raw) > 1 else None,
            desc=f"parsing {Path(source).name}",  # datasets adds "(num_proc=N)"
        )
    return counted_rows(parsed, report)


def counted_rows(parsed: datasets.Dataset, report: LoadReport) -> datasets.Dataset:
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


def counted_stream(parsed: datasets.IterableDataset, source: str, names, report: LoadReport):
    """`parsed` without its malformed lines, each counted once as it is read (the mix reads one stream per task)."""

    def keep(reasons: list[str], errors: list[str], indices: list[int]) -> list[bool]:
        for index, reason, error in zip(indices, reasons, errors, strict=True):
            if reason == NO_TEXT:  # a row without them, in a file whose other rows have them
                raise no_text_error(source, names)
            if index >= report.lines:
                report.lines = index + 1
                if reason:
                    report.bad(reason, index + 1, error)
                else:
                    report.rows += 1
        return [not reason for reason in reasons]

    kept = parsed.filter(keep, batched=True, with_indices=True, input_columns=["reason", "error"])
    return kept.remove_columns(["reason", "error"])


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
    """A `datasets` table (an IterableDataset when `streaming`) of what `source` names (a file's split is the
    file itself). `kind`: `source_kind(source)`, not a puzzle file's."""
    path, fmt = Path(source), kind
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
            fmt = sniff(path)
        table = open_file(path, streaming, fmt)
    if streaming and isinstance(table, datasets.Dataset):
        return table.to_iterable_dataset()
    return guarded(table, source, kind) if streaming else table


def open_file(path: Path, streaming: bool, fmt: Format):
    """A file as a `datasets` table: datasets' builder for its format, or the rows read here where that builder
    fails on a file it should read."""
    if fmt.check is not None:
        fmt.check(path)
    if fmt.name == "json-array":
        return datasets.Dataset.from_list(json_array_rows(path))
    if fmt.name == "json-lines" and starts_with_bom(path):  # datasets' JSON builder reads the mark as data
        return datasets.Dataset.from_list([row for _, row in json_objects(path) if row is not None])
    if fmt.name == "parquet" and pq.ParquetFile(path).metadata.num_rows == 0:  # the builder fails on no rows
        return datasets.Dataset(pq.read_table(path))
    builder = {"json-lines": "json", "parquet": "parquet"}.get(fmt.name, "text")
    # a text file is read as open_text reads it: gzip by suffix, a byte-order mark dropped, bad bytes replaced
    options = {"encoding": "utf-8-sig", "encoding_errors": "replace"} if builder == "text" else {}
    if builder == "text" and streaming:  # the stream names its column before it is read
        options["features"] = TEXT_FEATURES
    # a bad JSON line: ours names it
    errors = file_errors(str(path), fmt) if builder == "json" else contextlib.nullcontext()
    try:
        with errors:
            return datasets.load_dataset(
                builder, data_files=str(path), split="train", streaming=streaming, **options
            )
    except DataSourceError:
        raise
    except datasets.exceptions.DatasetGenerationError:  # a text file of no line (bad bytes are replaced)
        return datasets.Dataset.from_dict({"text": []}, features=TEXT_FEATURES)
    except (ValueError, OSError) as e:
        raise DataSourceError(
            f"could not load {str(path)!r}: {type(e).__name__}: {str(e).rstrip('.')}; {DATA_SOURCE_FIX} ({FORMATS_DOC})"
        ) from None


@contextlib.contextmanager
def file_errors(source: str, kind: Format | str):
    """A file that datasets fails to read (empty, binary, a bad line) becomes the DataSourceError its format's
    lines reader gives (data/files.py)."""
    try:
        with dropping("datasets.packaged_modules.json.json", "Failed to"):  # ours names the line
            yield
    except DataSourceError:
        raise
    except Exception as e:  # StopIteration, pyarrow's ArrowInvalid, DatasetGenerationError, ...
        if not lines_file(kind):
            raise
        raise first_error(Path(source)) or DataSourceError(f"could not read {source!r}: {e}") from None


def lines_file(kind: Format | str) -> bool:
    """Whether a source of this kind is a local file with a lines reader (text, JSON)."""
    return isinstance(kind, Format) and kind.lines is not None


def guarded(ds: datasets.IterableDataset, source: str, kind: Format | str) -> datasets.IterableDataset:
    """A stream of a local file of lines whose read errors are file_errors' one line; any other as it is."""
    if not lines_file(kind):  # file_errors rewords these only
        return ds

    def examples():
        with file_errors(source, kind):
            yield from ds

    return datasets.IterableDataset.from_generator(examples, features=ds.features)


def column_names(ds) -> list[str]:
    """A table's column names; a stream's are read off its first row where its builder names none."""
    return ds.column_names or list(next(iter(ds), {}))


def source_lines(source: str, split: str = "train") -> Iterator[str]:
    """The raw P:/A: lines of any source (a dataset dir's or hub dataset's `split`), streamed."""
    kind = source_kind(source)
    if is_puzzle(kind):
        raise DataSourceError(
            f"{source}: a puzzle file holds positions to label, not P:/A: rows; read it with "
            f"load(Spec(...)) or `rookworld data load {source} --out DIR`, which label them"
        )
    if lines_file(kind):
        return read_lines(source)
    ds = open_source(source, split, True, kind)
    with file_errors(source, kind):
        columns = line_columns(column_names(ds), source)
    return ("".join(row[name] for name in columns) for row in ds)


# ------------------------------------------------------------------------------------ a table's P:/A: lines


def line_columns(names, source: str) -> list[str]:
    """The columns a table's P:/A: lines are in: `text`, or `prompt` + `completion`; else no_text_error."""
    if "text" in names:
        return ["text"]
    if {"prompt", "completion"} <= set(names):
        return ["prompt", "completion"]
    raise no_text_error(source, names)


def line_table(ds: datasets.Dataset, columns: list[str], source: str) -> datasets.Dataset:
    """A loaded table's columns of P:/A: lines, checked whole by Arrow: strings, no row without them."""
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


def no_text_error(source: str, names) -> DataSourceError:
    """A file's own line-reader error when it has one, else what the table's columns are."""
    path = Path(source)
    if path.is_file() and (error := first_error(path)) is not None:
        return error
    return DataSourceError(
        f"{source}: has columns {sorted(names)}; expected a 'text' column of P:/A: lines, 'prompt' and "
        "'completion' columns, or our dataset columns (rookworld data load --out)"
    )


# ----------------------------------------------------------------------------------------------- rows


def to_rows(ds, source: str, report: LoadReport, num_proc: int | None = None):
    """Our columns: as they are when present, else parsed from a `text` column of raw lines (`parse_table`)."""
    names = column_names(ds)
    if set(COLUMNS) <= set(names):
        rows = ds.select_columns(list(COLUMNS))
        rows = rows if rows.features == FEATURES else rows.cast(FEATURES)  # e.g. JSON numbers read as int64
        # read by column, not line by line: its rows are what is counted
        if isinstance(rows, datasets.Dataset):
            report.rows += len(rows)
        return rows
    return parse_table(ds, source, report, num_proc, names)


def prompt_rows(ds, name: str = "train_dataset"):
    """A dataset a RookWorld trainer can sample prompts from: as given when it has a `prompt` column (or is a
    stream), else our columns parsed from its `text` column of P:/A: lines."""
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


def read_rows(source: str | os.PathLike, split: str = "train", skip_bad_rows: bool = False,
              report: LoadReport | None = None, num_proc: int | None = None) -> datasets.Dataset:  # fmt: skip
    """The rows of a source's split, as stored, memory-mapped; malformed lines counted in `report`. Not for a
    puzzle file (`read_puzzles`)."""
    source = os.fspath(source)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    return read(source, split, source_kind(source), report, num_proc=num_proc)


def read(source: str, split: str, kind: Format | str, report: LoadReport, num_proc: int | None = None,
         streaming: bool = False, puzzles: PuzzleSource | None = None):  # fmt: skip
    """The rows of `source`'s split, as stored, each malformed line counted in `report`. `kind`:
    `source_kind(source)`, not a puzzle file's."""
    if puzzles is not None and puzzles.keep:
        raise DataSourceError(
            f"{source}: --puzzle_rating/--puzzle_themes filter puzzle files (a Lichess puzzle .csv, an .epd "
            "suite), which this source is not: drop them"
        )
    raw = open_source(source, split, streaming, kind)
    with file_errors(source, kind):
        rows = to_rows(raw, source, report, num_proc)
    if not streaming:
        report.check_rows(len(rows), split)  # none: one line saying what the source held
    return rows


def read_puzzles(source: str, exclusion: Exclusion | None = None, max_samples: int | None = None,
                 mix_env_ratio: float | None = None, puzzles: PuzzleSource | None = None):  # fmt: skip
    """(a puzzle file's P: rows, kept by `puzzles`' filter, not excluded, capped, then labelled by Stockfish;
    what `exclusion` dropped). A: rows asked of one are refused first: labelling can take a while."""
    if mix_env_ratio:
        raise DataSourceError(
            f"mix_env_ratio={mix_env_ratio}: {source} is a puzzle file, P: rows only; set --mix_env_ratio 0 "
            "to train on its P: rows alone"
        )
    # filtered and capped before labelling; the columns in FEATURES' order, as every source's
    rows, excluded = (puzzles or PuzzleSource()).rows(source, exclusion or Exclusion(), max_samples)
    columns = {name: [row[name] for row in rows] for name in FEATURES}
    return datasets.Dataset.from_dict(columns, features=FEATURES), excluded
