"""The data pipeline every consumer reads through (the GRPO run's data/run.py, SFT, `rookworld eval`,
`rookworld data load`): bytes -> rows (data/read.py: parsed and cached, a puzzle file labelled) -> exclude
(data/exclude.py) -> the P:/A: mix, one FEN width, the cap (data/transforms.py) -> the rows. Each step returns
its own report; `load` says them, each in one line, here only.

    from rookworld_trl.data.load import Spec, load, load_rookworld_dataset
    loaded = load(Spec("data/rookworld", "train", mix_env_ratio=0.3, max_samples=1000))
    loaded.rows, loaded.excluded_rows, loaded.fen_width
    ds = load_rookworld_dataset("rookworld.txt", streaming=True, skip_bad_rows=True)  # malformed lines counted
    ds = load_rookworld_dataset("jrahn/rookworld_7m", split="train")      # through datasets.load_dataset
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import datasets

from rookworld_trl.data.exclude import Exclusion, exclude_rows
from rookworld_trl.data.files import is_puzzle_file
from rookworld_trl.data.labels import PuzzleSource
from rookworld_trl.data.read import check_no_puzzle_filter, read, stream_rows
from rookworld_trl.data.rows import LoadReport
from rookworld_trl.data.transforms import cap, check_ratio, mix, only_task, pad_fen_width, rows_fen_width

KEEP = -1  # Spec.fen_width: leave the prompts as they are written


@dataclass(frozen=True)
class Spec:
    """One set of rows: `source`'s `split` (or `rows` already read), what to drop (`exclusion`), which `task`
    (None: both), the A: fraction (`mix_env_ratio`, None: as stored, shuffled by `seed`), the FEN width (None:
    the rows' most common; KEEP: as written) and the cap (`max_samples`, the first rows after mixing). How to
    read: `skip_bad_rows`, `num_proc`, `puzzles` (how a puzzle file is filtered and labelled), `report` (a
    LoadReport to count malformed lines in)."""

    source: str = ""
    split: str = "train"
    rows: datasets.Dataset | None = None
    exclusion: Exclusion = field(default_factory=Exclusion)
    task: str | None = None
    mix_env_ratio: float | None = None
    seed: int = 0
    fen_width: int | None = None
    max_samples: int | None = None
    skip_bad_rows: bool = False
    num_proc: int | None = None
    puzzles: PuzzleSource | None = None
    report: LoadReport | None = None


@dataclass(frozen=True)
class Loaded:
    """The rows as read (`stored`), after --exclude (`excluded_rows`), and after every step (`rows`); the FEN
    width of `rows`' P: prompts (None: none, or KEEP) and each step's report by name."""

    stored: datasets.Dataset
    excluded_rows: datasets.Dataset
    rows: datasets.Dataset
    fen_width: int | None
    reports: dict


def load(spec: Spec) -> Loaded:
    """The rows `spec` asks for, read once, then each step in turn, each said in one line (the module
    docstring)."""
    source = spec.source or "the rows"
    report = spec.report if spec.report is not None else LoadReport(source, spec.skip_bad_rows)
    puzzle, excluded = False, None
    stored = spec.rows
    if stored is None:
        stored, excluded, puzzle = read(spec.source, spec.split, spec.exclusion, spec.max_samples,
                                        spec.mix_env_ratio, spec.skip_bad_rows, report, spec.num_proc,
                                        spec.puzzles)  # fmt: skip
    rows, reports, after = stored, {"read": report, "exclude": excluded}, {}
    for name, step in steps(spec, source, puzzle):
        rows, reports[name] = step(rows)
        after[name] = rows
    width = None
    if spec.fen_width != KEEP:
        width = spec.fen_width or (reports["fen_width"].width if reports["fen_width"].found else None)
        if reports["cap"] is not None:  # the first rows may hold no P: prompt
            width = spec.fen_width or rows_fen_width(rows)
    say(reports)
    return Loaded(stored, after.get("exclude", stored), rows, width, reports)


def steps(spec: Spec, source: str, puzzle: bool) -> list[tuple[str, Callable]]:
    """The steps `spec` asks of the rows read, in order, by name: each a pure function of the rows that
    returns (rows, its report). A puzzle file's positions were excluded and capped before the engine labelled
    them."""
    where = f"{source} (split {spec.split!r})"
    chosen = [] if puzzle else [("exclude", partial(exclude_rows, exclusion=spec.exclusion, where=where))]
    chosen += [("task", partial(only_task, task=spec.task)),
               ("mix", partial(mix, mix_env_ratio=spec.mix_env_ratio, seed=spec.seed))]  # fmt: skip
    if spec.fen_width != KEEP:
        chosen.append(("fen_width", partial(pad_fen_width, width=spec.fen_width, source=source)))
    return [*chosen, ("cap", partial(cap, max_samples=None if puzzle else spec.max_samples))]


def say(reports: dict) -> None:
    """Each report that has something to say, in one line (a puzzle file's labelling said its own)."""
    if reports["read"].malformed:
        print(reports["read"].summary())
    for report in (reports["exclude"], reports.get("fen_width")):
        if report and (line := report.one_line()):
            print(line)


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
    exclusion = exclude or Exclusion()
    if streaming and not is_puzzle_file(source):
        return stream(source, split, mix_env_ratio, seed, max_samples, report, fen_width, skip_bad_rows,
                      puzzles, exclusion)[0]  # fmt: skip
    return load(Spec(source, split, exclusion=exclusion, mix_env_ratio=mix_env_ratio, seed=seed,
                     fen_width=fen_width, max_samples=max_samples, skip_bad_rows=skip_bad_rows, puzzles=puzzles,
                     report=report)).rows  # fmt: skip


def stream(source, split, mix_env_ratio, seed, max_samples, report, fen_width, skip_bad_rows, puzzles,
           exclusion):  # fmt: skip
    """(the rows of load_rookworld_dataset streaming, read as iterated; what `exclusion` dropped, counted as they
    are read). Malformed lines are counted in `report`."""
    check_no_puzzle_filter(source, puzzles)
    report = report if report is not None else LoadReport(source, skip_bad_rows)
    excluded = exclusion.report()

    def rows(task: str | None = None, count: bool = True):  # excluded before mixing: each stream its own rows
        return exclude_rows(stream_rows(source, split, report, task, count), exclusion, report=excluded)[0]

    if mix_env_ratio is None:
        ds = rows()
    elif mix_env_ratio in (0.0, 1.0):
        ds = rows("A" if mix_env_ratio == 1.0 else "P")
    else:
        # Two passes over the source, one per task; malformed lines are counted by the first only.
        probabilities = [1 - mix_env_ratio, mix_env_ratio]
        ds = datasets.interleave_datasets(
            [rows("P"), rows("A", False)], probabilities=probabilities, seed=seed
        )
    probe = stream_rows(source, split, LoadReport(source, skip_bad_rows=True), "P").take(1000)  # not counted
    ds, padded = pad_fen_width(ds, fen_width, source, [row["prompt"] for row in probe])
    if padded.one_line():
        print(padded.one_line())
    return cap(ds, max_samples)[0], excluded
