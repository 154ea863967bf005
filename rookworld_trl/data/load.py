"""Loading the RookWorld dataset from anywhere: our output dir, Parquet, JSONL, raw text (malformed lines
counted by reason), the hub; the P:/A: mix and the FEN width. The layout itself is rookworld_trl/data/layout.py.

    from rookworld_trl.data.load import load_rookworld_dataset
    ds = load_rookworld_dataset("data/rookworld", split="train", mix_env_ratio=0.3, seed=0)
    ds = load_rookworld_dataset("rookworld.txt", streaming=True, skip_bad_rows=True)  # malformed lines counted
    ds = load_rookworld_dataset("jrahn/rookworld_7m", split="train")      # through datasets.load_dataset
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator

import datasets
import pyarrow as pa

from rookworld_trl.chess.formats import (
    FEN_WIDTH,
    FormatError,
    policy_prompt,
    prompt_fen_width,
)
from rookworld_trl.data.exclude import Exclusion
from rookworld_trl.data.files import DataSourceError, line_error, sniff
from rookworld_trl.data.layout import BATCH_ROWS, COLUMNS, FEATURES, column, row_from_line, task_rows
from rookworld_trl.data.puzzles import PuzzleSource
from rookworld_trl.data.sources import Lines, file_errors, open_source, table_lines

# -------------------------------------------------------------------------------------------- raw text


EMPTY_LINE = "empty line"


@dataclasses.dataclass
class LoadReport:
    """What a pass over raw lines found: lines read, rows made, malformed lines by reason (first line numbers).
    Unless `skip_bad_rows`, the first malformed line stops the load with a DataSourceError naming it (blank lines
    are always skipped)."""

    source: str
    skip_bad_rows: bool = False
    lines: int = 0
    rows: int = 0
    malformed: Counter = dataclasses.field(default_factory=Counter)
    first_lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    max_examples: int = 5

    def bad(self, reason: str, line_no: int, message: str | None = None) -> None:
        """Count a malformed line by `reason`; without skip_bad_rows stop at it, citing it whole (`message`)."""
        if not self.skip_bad_rows and reason != EMPTY_LINE:
            raise line_error(self.source, line_no, message or reason)
        self.malformed[reason] += 1
        examples = self.first_lines.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(line_no)

    def summary(self) -> str:
        bad = sum(self.malformed.values())
        lines = [f"{self.source}: {self.lines} lines, {self.rows} rows, {bad} malformed lines skipped"]
        for reason, count in self.malformed.most_common():
            at = ", ".join(f"{self.source}:{n}" for n in self.first_lines[reason])
            lines.append(f"  {count:>8}  {reason}  (first at {at})")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The summary in one line: lines read, rows, and the commonest reason a line was skipped."""
        bad = sum(self.malformed.values())
        text = f"{self.lines} lines, {self.rows} rows, {bad} malformed"
        if bad:
            reason, count = self.malformed.most_common(1)[0]
            text += f" ({count} x {reason}, first at {self.source}:{self.first_lines[reason][0]})"
        return text

    def to_dict(self) -> dict:
        return {"source": self.source, "lines": self.lines, "rows": self.rows, "malformed": dict(self.malformed),
                "first_lines": self.first_lines}  # fmt: skip


def rows_from_lines(
    lines: Iterable[str], report: LoadReport, task: str | None = None, count: bool = True
) -> Iterator[dict]:
    """Rows of the well-formed lines; the others are counted in `report` by reason (when `count`).

    `task` keeps only "P" or "A" rows; two filtered passes over one source count malformed lines once
    (the pass with `count=True`).
    """
    for line_no, line in enumerate(lines, 1):
        if count:
            report.lines += 1
        if not line.strip():
            if count:
                report.bad(EMPTY_LINE, line_no)
            continue
        try:
            row = row_from_line(line)
        except FormatError as e:
            if count:
                report.bad(e.reason, line_no, str(e))
            continue
        if task is None or row["task"] == task:
            report.rows += 1
            yield row


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


def dataset_from_lines(
    lines_fn, report: LoadReport, streaming: bool, task: str | None = None, count: bool = True
):
    """A (streaming) dataset of the rows of `lines_fn()`, an iterable of raw lines read anew on each pass."""
    if streaming:

        def generate():
            yield from rows_from_lines(lines_fn(), report, task, count)

        return datasets.IterableDataset.from_generator(generate, features=FEATURES)
    table = table_from_rows(rows_from_lines(lines_fn(), report, task, count))
    return datasets.Dataset(datasets.table.InMemoryTable(table))


# ------------------------------------------------------------------------------------------------ load


def to_rows(
    ds, source: str, report: LoadReport, streaming: bool, task: str | None = None, count: bool = True
):
    """Our columns: as they are when present, else parsed from a `text` column of raw lines."""
    names = ds.column_names or list(next(iter(ds), {}))  # a streamed JSON file names its columns when read
    if set(COLUMNS) <= set(names):
        ds = ds.select_columns(list(COLUMNS))
        ds = ds if ds.features == FEATURES else ds.cast(FEATURES)  # e.g. JSON numbers read as int64
        return ds if task is None else ds.filter(lambda row: row["task"] == task)
    return dataset_from_lines(lambda: table_lines(ds, source), report, streaming, task, count)


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
    return ds.select(chosen)


def fen_widths(prompts: Iterable[str]) -> Counter:
    """How many P: prompts among `prompts` are padded to each FEN field width."""
    return Counter(w for prompt in prompts if (w := prompt_fen_width(prompt)))


def with_fen_width(ds, width: int | None, prompts: Iterable[str], source: str):
    """`ds` with every P: prompt (and its text) padded to `width` (None: the most common width among
    `prompts`, ds's or a sample of them): one layout, the way the data was written. Says so when it re-pads."""
    counts = fen_widths(prompts)
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


def no_rows_check(ds, source: str, split: str, report: LoadReport, streaming: bool):
    """`ds`, unless it is an in-memory dataset without rows: then a DataSourceError that says what the source
    held (an empty file, a binary or CSV file of lines that are not P:/A: lines, ...) and what is expected."""
    if streaming or len(ds):
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
    if os.path.isfile(source) and sniff(source).positions is not None:
        return puzzle_dataset(
            source, puzzles or PuzzleSource(), mix_env_ratio, seed, max_samples, fen_width, exclude
        )
    if puzzles is not None and puzzles.keep:
        raise DataSourceError(
            f"{source}: --puzzle_rating/--puzzle_themes filter puzzle files (a Lichess puzzle .csv, an .epd "
            "suite), which this source is not: drop them"
        )
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    opened = open_source(source, split, streaming)

    def build(task: str | None = None, count: bool = True, into: LoadReport = report):
        if isinstance(opened, Lines):  # a file read as lines
            ds = dataset_from_lines(opened.__iter__, into, streaming, task, count)
        else:
            with file_errors(source):
                ds = to_rows(opened, source, into, streaming, task, count)
        return exclude.filter(ds) if exclude and into is report else ds

    if mix_env_ratio is not None:
        check_ratio(mix_env_ratio)
    if mix_env_ratio is None:
        ds = no_rows_check(build(), source, split, report, streaming)
    elif not streaming:
        ds = mix_tasks(no_rows_check(build(), source, split, report, streaming), mix_env_ratio, seed)
    elif mix_env_ratio in (0.0, 1.0):
        ds = build("A" if mix_env_ratio == 1.0 else "P")
    else:
        # Two passes over the source, one per task; malformed lines are counted by the first only.
        policy, env = build("P"), build("A", count=False)
        probabilities = [1 - mix_env_ratio, mix_env_ratio]
        ds = datasets.interleave_datasets([policy, env], probabilities=probabilities, seed=seed)
    if report.malformed and not streaming:
        print(report.summary())
    if exclude and not streaming:
        print(exclude.one_line())
    probe = (
        build("P", into=LoadReport(source, skip_bad_rows=True)).take(1000) if streaming else ds
    )  # a pass the report ignores
    ds = with_fen_width(
        ds, fen_width, [row["prompt"] for row in probe] if streaming else column(ds, "prompt"), source
    )
    if max_samples is not None:
        ds = ds.take(max_samples) if streaming else ds.select(range(min(max_samples, len(ds))))
    return ds


def puzzle_dataset(
    source: str,
    puzzles: PuzzleSource,
    mix_env_ratio: float | None,
    seed: int,
    max_samples: int | None,
    fen_width: int | None,
    exclude: Exclusion | None,
) -> datasets.Dataset:
    """The engine-labelled P: rows of a puzzle file, as load_rookworld_dataset returns a source's rows."""
    if mix_env_ratio:  # said before the labelling, which can take a while
        raise DataSourceError(
            f"mix_env_ratio={mix_env_ratio}: {source} is a puzzle file, P: rows only; set --mix_env_ratio 0 "
            "to train on its P: rows alone"
        )
    rows = puzzles.rows(source, exclude, max_samples)  # filtered before the engine labels them
    if exclude:
        print(exclude.one_line())
    ds = datasets.Dataset(datasets.table.InMemoryTable(table_from_rows(rows)))
    if mix_env_ratio is not None:
        ds = mix_tasks(ds, mix_env_ratio, seed)
    return with_fen_width(ds, fen_width, column(ds, "prompt"), source)
