"""The data pipeline every consumer reads through: bytes -> rows (data/read.py) -> exclude -> one task -> the
P:/A: mix -> one FEN width -> the cap. Each step is a pure function returning (rows, its report), the same for a
Dataset and a streamed IterableDataset; `load` runs them and prints the reports, each in one line.

    from rookworld_trl.data.load import Spec, load, load_rookworld_dataset
    loaded = load(Spec("data/rookworld", "train", mix_env_ratio=0.3, max_samples=1000))
    loaded.rows, loaded.excluded_rows, loaded.fen_width
    ds = load_rookworld_dataset("rookworld.txt", streaming=True, skip_bad_rows=True)  # malformed lines counted
    ds = load_rookworld_dataset("jrahn/rookworld_7m", split="train")      # through datasets.load_dataset
    rows, mixed = mix(rows, 0.3, seed=0)                # mixed: {"P": n, "A": m}, the rows of each task kept
    rows, padded = pad_fen_width(rows, None, "data/x")  # padded.width; padded.one_line() when it re-padded
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import datasets
import numpy as np
import pyarrow.compute as pc

from rookworld_trl.chess.engine import EngineLimit
from rookworld_trl.chess.formats import FEN_WIDTH, fen_widths, policy_prompt
from rookworld_trl.data.files import (
    ExcludeReport,
    Exclusion,
    Positions,
    is_puzzle,
    kind_of,
    position_fens,
    source_kind,
)
from rookworld_trl.data.layout import arrow_batches, iter_column, no_bars, task_rows
from rookworld_trl.data.puzzles import PuzzleFilter, PuzzleSource
from rookworld_trl.data.read import read, read_puzzles
from rookworld_trl.data.rows import DataSourceError, LoadReport

KEEP = -1  # Spec.fen_width: leave the prompts as they are written


@dataclass(frozen=True)
class Spec:
    """One set of rows: `source`'s `split` (or `rows` already read) through the steps. `task` None: both;
    `mix_env_ratio` None: as stored; `fen_width` None: the rows' most common, KEEP: as written; `max_samples`:
    the first rows after mixing. A puzzle file is labelled whole, in memory, even when `streaming`."""

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
    streaming: bool = False


@dataclass(frozen=True)
class Loaded:
    """The rows as read (`stored`), after --exclude (`excluded_rows`), after every step (`rows`); the FEN width
    of `rows`' P: prompts (None: none, or KEEP) and each step's report by name."""

    stored: datasets.Dataset
    excluded_rows: datasets.Dataset
    rows: datasets.Dataset
    fen_width: int | None
    reports: dict


def load(spec: Spec) -> Loaded:
    """The rows `spec` asks for, read once, then each step in turn."""
    source = spec.source or "the rows"
    report = spec.report if spec.report is not None else LoadReport(source, spec.skip_bad_rows)
    puzzle, excluded = False, None
    stored = spec.rows
    if stored is None:
        kind = source_kind(spec.source)  # what the source is, decided once
        puzzle = is_puzzle(kind)
        if puzzle:
            stored, excluded = read_puzzles(spec.source, spec.exclusion, spec.max_samples, spec.mix_env_ratio,
                                            spec.puzzles)  # fmt: skip
        else:
            stored = read(spec.source, spec.split, kind, report, spec.num_proc, spec.streaming, spec.puzzles)
    rows, reports, after = stored, {"read": report, "exclude": excluded}, {}
    for name, step in steps(spec, source, puzzle, stored):
        rows, reports[name] = step(rows)
        after[name] = rows
    width = None
    if spec.fen_width != KEEP:
        width = spec.fen_width or (reports["fen_width"].width if reports["fen_width"].found else None)
        if reports["cap"] is not None:  # the first rows may hold no P: prompt
            width = spec.fen_width or commonest(rows_fen_widths(rows))
    # each report that has something to say, in one line (a puzzle file's labelling said its own; a stream's
    # read and exclude reports count as it is read)
    streamed = not hasattr(rows, "__len__")
    if reports["read"].malformed and not streamed:
        print(reports["read"].summary())
    for report in (None if streamed else reports["exclude"], reports.get("fen_width")):
        if report and (line := report.one_line()):
            print(line)
    return Loaded(stored, after.get("exclude", stored), rows, width, reports)


def steps(spec: Spec, source: str, puzzle: bool, stored) -> list[tuple[str, Callable]]:
    """The steps `spec` asks of the rows read (`stored`), in order, by name. A puzzle file's positions were
    excluded and capped before labelling. A stream's FEN width is its first 1000 P: rows' (published files are
    written at one width each)."""
    where = f"{source} (split {spec.split!r})"
    chosen = [] if puzzle else [("exclude", partial(exclude_rows, exclusion=spec.exclusion, where=where))]
    chosen += [("task", partial(only_task, task=spec.task)),
               ("mix", partial(mix, mix_env_ratio=spec.mix_env_ratio, seed=spec.seed))]  # fmt: skip
    if spec.fen_width != KEEP:
        streamed = not hasattr(stored, "__len__")
        probe = (row["prompt"] for row in only_task(stored, "P")[0].take(1000)) if streamed else None
        chosen.append(
            ("fen_width", partial(pad_fen_width, width=spec.fen_width, source=source, prompts=probe))
        )
    return [*chosen, ("cap", partial(cap, max_samples=None if puzzle else spec.max_samples))]


def load_rookworld_dataset(source: str | os.PathLike, split: str = "train", mix_env_ratio: float | None = None,
                           seed: int = 0, streaming: bool = False, max_samples: int | None = None,
                           report: LoadReport | None = None, fen_width: int | None = None,
                           skip_bad_rows: bool = False, puzzles: PuzzleSource | None = None,
                           exclude: Exclusion | None = None):  # fmt: skip
    """A `datasets.Dataset` (an `IterableDataset` when streaming) with the columns of FEATURES, from a layout
    dir, a data file (.parquet/.jsonl/.txt/.gz/a puzzle .csv or .epd) or a hub id, through `load` (see Spec).
    A malformed line raises DataSourceError naming it, or with `skip_bad_rows` is counted in `report`.
    `mix_env_ratio` is exact in memory; streamed, each row is drawn from a task with that probability."""
    source = os.fspath(source)
    if mix_env_ratio is not None:
        check_ratio(mix_env_ratio)
    return load(Spec(source, split, exclusion=exclude or Exclusion(), mix_env_ratio=mix_env_ratio, seed=seed,
                     fen_width=fen_width, max_samples=max_samples, skip_bad_rows=skip_bad_rows, puzzles=puzzles,
                     report=report, streaming=streaming)).rows  # fmt: skip


# ------------------------------------------------------------- the steps: exclude, task, mix, FEN width, cap


def exclude_rows(ds, exclusion: Exclusion, where: str = "the data", report: ExcludeReport | None = None):
    """(`ds` without the rows on an excluded position, its report; None when nothing is excluded). A stream is
    counted as it is read, into `report` when given (two streams of one source count together)."""
    if not exclusion:
        return ds, None
    report = report or exclusion.report()

    def keep(fens: list[str], tasks: list[str]) -> list[bool]:
        return [not report.drops(fen, task) for fen, task in zip(fens, tasks, strict=True)]

    streaming = not hasattr(ds, "__len__")
    # in memory, counted at every load: a cached filter would skip `report.drops`
    again = {} if streaming else {"load_from_cache_file": False}
    with no_bars():
        kept = ds.filter(keep, batched=True, input_columns=["fen", "task"], **again)
    if not streaming and report.seen and not len(kept):
        raise DataSourceError(
            f"{report.one_line()}: {where} has no row left to train on; exclude fewer positions (--exclude) or "
            "pass a source with other positions"
        )
    return kept, report


def only_task(ds, task: str | None) -> tuple[object, None]:
    """(the rows of `task`, "P" or "A"; None: `ds` as it is) and no report: nothing to say."""
    if task is None:
        return ds, None
    return ds.filter(lambda t: t == task, input_columns="task"), None


# ------------------------------------------------------------------------------------------------- mix


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


def mix(ds: datasets.Dataset, mix_env_ratio: float | None, seed: int) -> tuple[datasets.Dataset, dict | None]:
    """(exactly the fraction `mix_env_ratio` of A: rows, as many as that allows, shuffled by `seed`; the rows of
    each task kept). None: `ds` as it is."""
    if mix_env_ratio is None:
        return ds, None
    # streamed: drawn from the two tasks with these probabilities until one runs out
    if not hasattr(ds, "__len__"):
        check_ratio(mix_env_ratio)
        if mix_env_ratio in (0.0, 1.0):
            return only_task(ds, "A" if mix_env_ratio == 1.0 else "P")[0], None
        tasks = [only_task(ds, "P")[0], only_task(ds, "A")[0]]  # each reads the source anew
        # partial, not gen_kwargs: datasets splits a list in gen_kwargs into shards
        return datasets.IterableDataset.from_generator(partial(drawn, tasks, mix_env_ratio, seed),
                                                       features=ds.features), None  # fmt: skip
    policy, env = task_rows(ds)
    n_policy, n_env = mix_counts(len(policy), len(env), mix_env_ratio)
    rng = random.Random(seed)
    chosen = rng.sample(policy, n_policy) + rng.sample(env, n_env)
    rng.shuffle(chosen)
    # an array: datasets hashes it for the fingerprint at once, a list item by item (3 s for 478k)
    return ds.select(np.array(chosen, dtype=np.int64)), {"P": n_policy, "A": n_env}


def drawn(tasks: list, p_env: float, seed: int):
    """Rows of a streamed mix: each drawn from the A: stream with probability `p_env` (by `seed`), else from the
    P: stream, until the drawn one runs out. Not `datasets.interleave_datasets`: over two filters of one
    streamed, parsed source it yielded 0, 1 or 100 of 100 rows from run to run (datasets 5.2)."""
    rng, streams = random.Random(seed), [iter(task) for task in tasks]
    while True:
        try:
            yield next(streams[rng.random() < p_env])
        except StopIteration:
            return


# ------------------------------------------------------------------------------------------- FEN width


def rows_fen_widths(ds: datasets.Dataset) -> Counter:
    """fen_widths of a dataset's prompts, counted by Arrow (millions of rows a second); a non-ASCII batch by
    fen_widths itself (Arrow's lengths are in bytes)."""
    counts = Counter()
    for batch in arrow_batches(ds, "prompt"):
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


def commonest(widths: Counter, default: int | None = None) -> int | None:
    """The most common of the FEN widths counted (chess/formats.py fen_width_of); `default` when none was."""
    return widths.most_common(1)[0][0] if widths else default


@dataclass(frozen=True)
class Padded:
    """What `pad_fen_width` did: the width it padded to, and the P: prompts it found at each width."""

    source: str
    width: int
    found: Counter = field(default_factory=Counter)

    def one_line(self) -> str | None:
        """What it re-padded (None: every P: prompt was at `width` already)."""
        if set(self.found) <= {self.width}:
            return None
        others = ", ".join(f"{n} at width {w}" for w, n in sorted(self.found.items()) if w != self.width)
        return f"{self.source}: P: prompts re-padded to FEN width {self.width} ({others}; set fen_width to choose)"


def pad_fen_width(
    ds, width: int | None, source: str, prompts: Iterable[str] | None = None
) -> tuple[object, Padded]:
    """(`ds` with every P: prompt (and its text) padded to `width`, what it did). `width` None: the commonest
    among `prompts` (a sample of ds's; None: all of ds's)."""
    found = rows_fen_widths(ds) if prompts is None else fen_widths(prompts)
    report = Padded(source, width or commonest(found, FEN_WIDTH), found)
    if report.one_line() is None:
        return ds, report

    def pad(row):
        if row["task"] != "P":
            return row
        prompt = policy_prompt(row["fen"], report.width)
        return {**row, "prompt": prompt, "text": prompt + row["completion"]}

    return ds.map(pad), report


def cap(ds, max_samples: int | None) -> tuple[object, int | None]:
    """(the first `max_samples` rows of `ds`, how many are left; None: all, uncounted)."""
    if max_samples is None:
        return ds, None
    if not hasattr(ds, "__len__"):
        return ds.take(max_samples), None
    return ds.select(range(min(max_samples, len(ds)))), min(max_samples, len(ds))


# ----------------------------------------------------------------------------------------- a run's data
#
# A run's data, read once from one set of options, so the trainer, the tactics mix, the learning curve and the
# final eval all keep the run's --skip_bad_rows, --exclude, puzzle filter and cap:
#
#     data = run_data(DataOptions("rookworld_trl/assets/data", mix_env_ratio=0.3, replay=True, held_out=True))


@dataclass(frozen=True)
class DataOptions:
    """What a run reads (the recipe's data fields). `fen_width` None: the data's."""

    source: str
    train_split: str = "train"
    test_split: str = "test"
    mix_env_ratio: float | None = None
    seed: int = 0
    max_samples: int | None = None
    fen_width: int | None = None
    skip_bad_rows: bool = False
    num_proc: int | None = None  # processes that parse raw lines (None: the machine's cores; data/read.py)
    # a puzzle file's filter (--puzzle_rating / --puzzle_themes) and how it is labelled
    puzzle_filter: PuzzleFilter = field(default_factory=PuzzleFilter)
    engine_limit: EngineLimit = field(default_factory=lambda: EngineLimit(depth=8))
    engine_workers: int = 1
    engine_cache: str | None = None
    exclude: tuple[str, ...] = ()
    tactics: str | None = None
    replay: bool = False
    held_out: bool = False
    tactics_train: bool = False
    tactics_test: bool = False


@dataclass
class RunData:
    """The rows of one run (None: not asked for); `training_keys`: the positions of the train split."""

    source: str
    train_split: str = "train"
    train: object = None
    replay: object = None
    held_out: object = None
    tactics: object = None
    tactics_test: object = None
    fen_width: int | None = None
    training_keys: Positions | None = None


def run_data(o: DataOptions) -> RunData:
    """Every set of rows `o` asks for, each split read once."""
    exclusion = Exclusion.of(o.exclude)
    puzzles = PuzzleSource(  # a puzzle file is labelled at the reward's limit, into its cache
        o.puzzle_filter, o.engine_limit, workers=o.engine_workers, cache=o.engine_cache, seed=o.seed
    )
    read = dict(skip_bad_rows=o.skip_bad_rows, num_proc=o.num_proc)
    train = load(Spec(o.source, o.train_split, exclusion=exclusion, mix_env_ratio=o.mix_env_ratio, seed=o.seed,
                      fen_width=o.fen_width, max_samples=o.max_samples, puzzles=puzzles, **read))  # fmt: skip
    width = train.fen_width
    one_file = os.path.isfile(o.source)  # a file's test split is the file itself: its rows as read
    tactics = o.tactics or ""
    # fmt: off
    later = {  # replay: the whole split, since the mix may hold no rows of the replayed task
        "replay": o.replay and Spec(o.source, rows=train.excluded_rows, fen_width=width),
        "held_out": o.held_out and Spec(o.source, o.test_split, train.stored if one_file else None,
                                        fen_width=width, **read),
        # every training row keeps --exclude (counted apart from the main source's rows)
        "tactics": tactics and o.tactics_train and Spec(tactics, exclusion=exclusion, task="P",
                                                        fen_width=width),
        "tactics_test": tactics and o.tactics_test and Spec(tactics, "test", fen_width=KEEP),
    }
    # fmt: on
    keys = Positions(iter_column(train.excluded_rows, "fen"))  # read when first asked
    data = RunData(o.source, o.train_split, train.rows, fen_width=width, training_keys=keys)
    for name, spec in later.items():
        if spec:
            setattr(data, name, load(spec).rows)
    return data


def eval_data(data: str | None, split: str, fen_width: int | None, tactics: str | None = None,
              train_data: str | None = None, train_split: str = "train") -> RunData:  # fmt: skip
    """What `rookworld eval` reads (each only when named): `data`'s held-out rows, the tactics test split, and the
    positions of `train_data`."""
    out = RunData(train_data or "", train_split)
    if data:
        out.held_out = load(Spec(data, split, fen_width=fen_width)).rows
    if tactics:
        out.tactics_test = load(Spec(tactics, "test", fen_width=KEEP)).rows
    if train_data and is_puzzle(kind_of(train_data)):  # its positions to solve, read, not labelled
        out.training_keys = Positions(position_fens(train_data))
    elif train_data:
        out.training_keys = Positions(
            iter_column(load(Spec(train_data, train_split, fen_width=KEEP)).rows, "fen")
        )
    return out
