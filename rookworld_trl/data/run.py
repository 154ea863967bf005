"""A run's data, read once from one set of options: the rows it trains on, what supervised replay draws from, the
held-out rows of its learning curve and final eval, the tactics rows it mixes in and evaluates on, and the
positions it trained on. The GRPO stage builds one `RunData` and hands it to the trainer, the tactics mix, the
learning curve and the final eval, so each of them keeps the run's --skip_bad_rows, --exclude, puzzle filter and
cap; `rookworld eval` builds one from its flags (`eval_data`).

    data = load_run_data(DataOptions("rookworld_trl/assets/data", mix_env_ratio=0.3, replay=True, held_out=True))
    data.train, data.replay, data.held_out, data.fen_width

A source's split is read once (a file's splits are the file itself: read once for both), then excluded, then
shaped (mix, FEN width, cap: data/load.py); a puzzle file is labelled once, and its rows are also its held-out
rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rookworld_trl.chess.engine import EngineLimit
from rookworld_trl.data.exclude import Exclusion, Positions
from rookworld_trl.data.files import is_puzzle_file, read_puzzles
from rookworld_trl.data.labels import PuzzleSource
from rookworld_trl.data.layout import iter_column
from rookworld_trl.data.load import (
    LoadReport,
    no_rows_check,
    read_rows,
    rows_fen_width,
    shape,
    with_fen_width,
)
from rookworld_trl.data.puzzles import PuzzleFilter


@dataclass(frozen=True)
class DataOptions:
    """What a run reads (the recipe's data fields). `fen_width`: the width to prompt at (the recipe's, else the
    model's record; None: the data's). `tactics`: the tactics data; `replay`, `held_out`, `tactics_train`,
    `tactics_test`: whether they are read at all."""

    source: str
    train_split: str = "train"
    test_split: str = "test"
    mix_env_ratio: float | None = None
    seed: int = 0
    max_samples: int | None = None
    fen_width: int | None = None
    skip_bad_rows: bool = False
    num_proc: int | None = None  # processes that parse raw lines (None: the machine's cores; data/parse.py)
    puzzle_rating: str | None = None  # a puzzle file's filter (--puzzle_rating / --puzzle_themes) and labels
    puzzle_themes: str | None = None
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
    """The rows of one run (None: not asked for). `fen_width`: the run's P: width (None: no P: rows);
    `training_keys`: the positions (first four FEN fields) of the train split the run drew from."""

    source: str
    train_split: str = "train"
    train: object = None
    replay: object = None
    held_out: object = None
    tactics: object = None
    tactics_test: object = None
    fen_width: int | None = None
    training_keys: Positions | None = None


def load_run_data(o: DataOptions) -> RunData:
    """Every set of rows `o` asks for, each split read once (see the module docstring)."""
    exclude, puzzle = Exclusion.of(o.exclude), is_puzzle_file(o.source)
    one_file = os.path.isfile(o.source)  # a file's test split is the file itself
    puzzles = PuzzleSource(  # a puzzle file is labelled at the reward's limit, into its cache
        PuzzleFilter.parse(o.puzzle_rating, o.puzzle_themes), o.engine_limit, workers=o.engine_workers,
        cache=o.engine_cache, seed=o.seed,
    )  # fmt: skip
    if puzzle:  # labelled once: its first max_samples after the filter and --exclude
        stored = whole = read_rows(o.source, puzzles=puzzles, exclude=exclude, max_puzzles=o.max_samples)
    else:
        stored = read_rows(o.source, o.train_split, o.skip_bad_rows, puzzles, num_proc=o.num_proc)
        whole = read_excluded(stored, o.source, o.train_split, exclude)
    train = shape(whole, o.source, o.mix_env_ratio, o.seed, o.fen_width, None if puzzle else o.max_samples)
    width = o.fen_width or rows_fen_width(train)
    keys = Positions(iter_column(whole, "fen"))
    data = RunData(o.source, o.train_split, train, fen_width=width, training_keys=keys)
    if o.replay:  # the whole split: the mix may hold no rows of the replayed task
        data.replay = with_fen_width(whole, width, None, o.source)
    if o.held_out:
        rows = stored if one_file else read_rows(o.source, o.test_split, o.skip_bad_rows, num_proc=o.num_proc)
        data.held_out = with_fen_width(rows, width, None, o.source)
    if o.tactics and o.tactics_train:
        tactics_exclude = Exclusion(exclude.files, exclude.keys)  # counted apart from the main source's rows
        rows = read_rows(o.tactics, "train", exclude=tactics_exclude)  # every training row keeps --exclude
        rows = rows.filter(lambda task: task == "P", input_columns="task")
        data.tactics = with_fen_width(rows, width, None, o.tactics)
    if o.tactics and o.tactics_test:
        data.tactics_test = read_rows(o.tactics, "test")
    return data


def read_excluded(rows, source: str, split: str, exclude: Exclusion):
    """`rows` without those on an excluded position, said in one line (an error when none is left)."""
    if not exclude:
        return rows
    kept = no_rows_check(exclude.filter(rows), source, split, LoadReport(source), False, exclude)
    print(exclude.one_line())
    return kept


def eval_data(data: str | None, split: str, fen_width: int | None, tactics: str | None = None,
              train_data: str | None = None, train_split: str = "train") -> RunData:  # fmt: skip
    """What `rookworld eval` reads (each only when named): the held-out rows of `data`'s `split` at `fen_width`,
    the tactics test split, and the positions of `train_data` (a puzzle file's positions to solve, read, not
    labelled)."""
    out = RunData(train_data or "", train_split)
    if data:
        rows = read_rows(data, split)
        out.held_out = with_fen_width(rows, fen_width, None, data)
    if tactics:
        out.tactics_test = read_rows(tactics, "test")
    if train_data:
        fens = (
            [puzzle.fen for puzzle in read_puzzles(train_data)]
            if is_puzzle_file(train_data)
            else iter_column(read_rows(train_data, train_split), "fen")
        )
        out.training_keys = Positions(fens)
    return out
