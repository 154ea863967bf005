"""Loading the RookWorld dataset from anywhere: our output dir, Parquet, JSONL, raw text (malformed lines
counted by reason), the hub; the P:/A: mix and the FEN width. The layout itself is rookworld_trl/data/layout.py.

    from rookworld_trl.data.load import load_rookworld_dataset
    ds = load_rookworld_dataset("data/rookworld", split="train", mix_env_ratio=0.3, seed=0)
    ds = load_rookworld_dataset("rookworld.txt", streaming=True, skip_bad_rows=True)  # malformed lines counted
    ds = load_rookworld_dataset("jrahn/rookworld_7m", split="train")      # through datasets.load_dataset
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterable

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rookworld_trl.chess.formats import (
    FEN_WIDTH,
    policy_prompt,
    prompt_fen_width,
)
from rookworld_trl.data.errors import DataSourceError
from rookworld_trl.data.exclude import Exclusion
from rookworld_trl.data.files import is_puzzle_file
from rookworld_trl.data.labels import PuzzleSource
from rookworld_trl.data.layout import BATCH_ROWS, COLUMNS, FEATURES, arrow_batches, task_rows
from rookworld_trl.data.parse import parse_table
from rookworld_trl.data.rows import LoadReport, rows_from_lines
from rookworld_trl.data.sources import Lines, file_errors, line_table, open_source, table_lines, text_table

# -------------------------------------------------------------------------------------------- raw text


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


# ------------------------------------------------------------------------------------------------ load


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


def check_ratio(mix_env_ratio: float) -> None:
    if not 0.0 <= mix_env_ratio <= 1.0:
        raise ValueError(f"mix_env_ratio must be in [0, 1], got {mix_env_ratio}")


def mix_counts(n_policy: int, n_env: int, mix_env_ratio: float) -> tuple[int, int]:
    """The most (P:, A:) rows, out of those available, whose A: fraction is `mix_env_ratio` (rounded down)."""
    check_ratio(mix_env_ratio)
    if mix_env_ratio in (0.0, 1.0):
        counts = (0, n_env) if mix_env_ratio == 1.0 else (n_policy, 0)
    else:
        total = min(n_policy / (1 - mix_env_ratio), n_env / mix_env_ratio)
        counts = (int(total * (1 - mix_env_ratio) + 1e-9), int(total * mix_env_ratio + 1e-9))
    if sum(counts) == 0:
        alone = "0 to train on its P: rows alone" if n_policy else "1 to train on its A: rows alone"
        raise ValueError(
            f"mix_env_ratio={mix_env_ratio}: the source has {n_policy} P: and {n_env} A: rows; "
            f"set --mix_env_ratio {alone}"
        )
    return counts


def mix_tasks(ds: datasets.Dataset, mix_env_ratio: float, seed: int) -> datasets.Dataset:
    """Exactly the fraction `mix_env_ratio` of A: rows, as many rows as that allows, shuffled by `seed`."""
    policy, env = task_rows(ds)
    n_policy, n_env = mix_counts(len(policy), len(env), mix_env_ratio)
    rng = random.Random(seed)
    chosen = rng.sample(policy, n_policy) + rng.sample(env, n_env)
    rng.shuffle(chosen)
    # an array: datasets hashes it for the fingerprint at once, a list item by item (3 s for 478k)
    return ds.select(np.array(chosen, dtype=np.int64))


def fen_widths(prompts: Iterable[str]) -> Counter:
    """How many P: prompts among `prompts` are padded to each FEN field width."""
    return Counter(w for prompt in prompts if (w := prompt_fen_width(prompt)))


def rows_fen_widths(ds: datasets.Dataset) -> Counter:
    """fen_widths of a dataset's prompts, counted by Arrow a batch at a time (millions of rows in a second or
    two); a batch holding non-ASCII text is counted by fen_widths itself (Arrow's lengths are in bytes)."""
    counts = Counter()
    for _, batch in arrow_batches(ds, "prompt"):
        prompts = batch.column("prompt")
        if not pc.all(pc.string_is_ascii(prompts)).as_py():
            counts.update(fen_widths(prompts.to_pylist()))
            continue
        length = pc.binary_length(prompts)  # prompt_fen_width: "P: " + a body ending in a space + "M:"
        padded = pc.and_(
            pc.and_(pc.starts_with(prompts, "P: "), pc.greater_equal(length, 6)),
            pc.equal(pc.utf8_slice_codeunits(prompts, -3, -2), " "),
        )
        for item in pc.value_counts(pc.filter(pc.subtract(length, 5), padded)).to_pylist():
            counts[item["values"]] += item["counts"]
    return counts


def rows_fen_width(ds: datasets.Dataset) -> int | None:
    """chess/formats.py fen_width_of a dataset's prompts (rows_fen_widths)."""
    counts = rows_fen_widths(ds)
    return counts.most_common(1)[0][0] if counts else None


def with_fen_width(ds, width: int | None, prompts: Iterable[str] | None, source: str):
    """`ds` with every P: prompt (and its text) padded to `width` (None: the most common width among
    `prompts`, a sample of ds's, or None: all of ds's): one layout, the way the data was written. Says so when it
    re-pads."""
    counts = rows_fen_widths(ds) if prompts is None else fen_widths(prompts)
    width = width or (counts.most_common(1)[0][0] if counts else FEN_WIDTH)
    if set(counts) <= {width}:
        return ds
    others = ", ".join(f"{n} at width {w}" for w, n in sorted(counts.items()) if w != width)
    print(f"{source}: P: prompts re-padded to FEN width {width} ({others}; set fen_width to choose)")

    def pad(row):
        if row["task"] != "P":
            return row
        prompt = policy_prompt(row["fen"], width)
        return {**row, "prompt": prompt, "text": prompt + row["completion"]}

    return ds.map(pad)


def no_rows_check(
    ds, source: str, split: str, report: LoadReport, streaming: bool, exclude: Exclusion | None = None
):
    """`ds`, unless it is an in-memory dataset without rows: then a DataSourceError that says what the source
    held (an empty file, a binary or CSV file of lines that are not P:/A: lines, ...), or that --exclude dropped
    every row of it, and what is expected."""
    if streaming or len(ds):
        return ds
    if exclude and exclude.seen:  # the source had rows: the exclude files named every one of them
        raise DataSourceError(
            f"{exclude.one_line()}: {source} (split {split!r}) has no row left to train on; exclude fewer "
            "positions (--exclude) or pass a source with other positions"
        )
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


def read_rows(
    source: str | os.PathLike,
    split: str = "train",
    skip_bad_rows: bool = False,
    puzzles: PuzzleSource | None = None,
    exclude: Exclusion | None = None,
    max_puzzles: int | None = None,
    report: LoadReport | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """The rows of a source's split, as stored (no mix, no FEN width, no cap): read -> rows -> exclude, each
    said in one line (malformed lines skipped, rows excluded). Raw lines are parsed in `num_proc` processes
    (None: this machine's cores) into datasets' cache, memory-mapped (data/parse.py). A puzzle file is
    labelled by `puzzles` (its first `max_puzzles` after the filter and `exclude`: the engine is the slow
    part); malformed lines are counted in `report`."""
    source = os.fspath(source)
    if is_puzzle_file(source):
        rows = (puzzles or PuzzleSource()).rows(source, exclude, max_puzzles)  # filtered before labelling
        if exclude:
            print(exclude.one_line())
        return datasets.Dataset(datasets.table.InMemoryTable(table_from_rows(rows)))
    check_no_puzzle_filter(source, puzzles)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    opened = open_source(source, split, streaming=False)
    with file_errors(source):
        raw = text_table(source) if isinstance(opened, Lines) else opened  # a text file: its lines as a table
        ds = to_rows(raw, source, report, False, num_proc=num_proc)
    ds = no_rows_check(exclude.filter(ds) if exclude else ds, source, split, report, False, exclude)
    if report.malformed:
        print(report.summary())
    if exclude:
        print(exclude.one_line())
    return ds


def check_no_puzzle_filter(source: str, puzzles: PuzzleSource | None) -> None:
    if puzzles is not None and puzzles.keep:
        raise DataSourceError(
            f"{source}: --puzzle_rating/--puzzle_themes filter puzzle files (a Lichess puzzle .csv, an .epd "
            "suite), which this source is not: drop them"
        )


def shape(ds, source: str, mix_env_ratio: float | None = None, seed: int = 0, fen_width: int | None = None,
          max_samples: int | None = None):  # fmt: skip
    """Rows as a run trains on them: the P:/A: mix (by `seed`), every P: prompt at one FEN width, the first
    `max_samples`."""
    if mix_env_ratio is not None:
        ds = mix_tasks(ds, mix_env_ratio, seed)
    ds = with_fen_width(ds, fen_width, None, source)
    return ds if max_samples is None else ds.select(range(min(max_samples, len(ds))))


def load_rookworld_dataset(
    source: str | os.PathLike,
    split: str = "train",
    mix_env_ratio: float | None = None,
    seed: int = 0,
    streaming: bool = False,
    max_samples: int | None = None,
    report: LoadReport | None = None,
    fen_width: int | None = None,
    skip_bad_rows: bool = False,
    puzzles: PuzzleSource | None = None,
    exclude: Exclusion | None = None,
):
    """A `datasets.Dataset` (or `IterableDataset` when streaming) with the columns of FEATURES.

    source: a dataset dir of our layout (`split` picks the file), a .parquet/.jsonl file (of our columns or
    a `text` column), a raw text file of lines (.txt, .gz; a malformed line raises DataSourceError naming it,
    or with `skip_bad_rows` is skipped and counted in `report`, a LoadReport, filled as the lines are read), or a hub id such as `jrahn/rookworld_7m`.
    fen_width: the P: prompts' FEN field width (None: the source's most common one, so that a model is
    prompted the way its data was written; prompts of other widths are re-padded to it). Streaming decides
    from the first 1000 P: rows: published files are written at one width each.
    mix_env_ratio: the fraction of A: rows, deterministic by `seed` (None: all rows, as stored); in memory
    the counts are exact and the rows shuffled, streaming draws rows from the two tasks with these
    probabilities until one runs out. max_samples: the first rows, after mixing.
    puzzles: how a puzzle file (a Lichess puzzle .csv, an .epd suite) is filtered and labelled (None: every
    puzzle, Stockfish at depth 8): such a source is read whole, into memory, as engine-labelled P: rows.
    exclude: rows on its positions are dropped (before mixing), and counted; in memory the count is printed.
    A source that cannot be loaded raises DataSourceError saying what was tried.
    """
    source = os.fspath(source)
    if mix_env_ratio is not None:
        check_ratio(mix_env_ratio)
    puzzle = is_puzzle_file(source)
    if puzzle and mix_env_ratio:  # said before the labelling, which can take a while
        raise DataSourceError(
            f"mix_env_ratio={mix_env_ratio}: {source} is a puzzle file, P: rows only; set --mix_env_ratio 0 "
            "to train on its P: rows alone"
        )
    if streaming and not puzzle:
        return stream_rows(source, split, mix_env_ratio, seed, max_samples, report, fen_width, skip_bad_rows,
                           puzzles, exclude)  # fmt: skip
    # in memory (a puzzle file is read whole): read -> rows -> exclude, then mix / FEN width / cap
    ds = read_rows(source, split, skip_bad_rows, puzzles, exclude, max_samples if puzzle else None, report)
    return shape(ds, source, mix_env_ratio, seed, fen_width, None if puzzle else max_samples)


def stream_rows(source, split, mix_env_ratio, seed, max_samples, report, fen_width, skip_bad_rows, puzzles,
                exclude):  # fmt: skip
    """load_rookworld_dataset streaming: the rows as they are read, malformed lines counted in `report`."""
    check_no_puzzle_filter(source, puzzles)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    opened = open_source(source, split, streaming=True)

    def build(task: str | None = None, count: bool = True, into: LoadReport = report):
        if isinstance(opened, Lines):  # a file read as lines
            ds = dataset_from_lines(opened.__iter__, into, task, count)
        else:
            with file_errors(source):
                ds = to_rows(opened, source, into, True, task, count)
        return exclude.filter(ds) if exclude and into is report else ds

    if mix_env_ratio is None:
        ds = build()
    elif mix_env_ratio in (0.0, 1.0):
        ds = build("A" if mix_env_ratio == 1.0 else "P")
    else:
        # Two passes over the source, one per task; malformed lines are counted by the first only.
        policy, env = build("P"), build("A", count=False)
        probabilities = [1 - mix_env_ratio, mix_env_ratio]
        ds = datasets.interleave_datasets([policy, env], probabilities=probabilities, seed=seed)
    probe = build("P", into=LoadReport(source, skip_bad_rows=True)).take(1000)  # a pass the report ignores
    ds = with_fen_width(ds, fen_width, [row["prompt"] for row in probe], source)
    return ds if max_samples is None else ds.take(max_samples)
