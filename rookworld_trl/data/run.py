"""A run's data, read once from one set of options: the rows it trains on, what supervised replay draws from, the
held-out rows of its learning curve and final eval, the tactics rows it mixes in and evaluates on, and the
positions it trained on. The GRPO stage builds one `RunData` and hands it to the trainer, the tactics mix, the
learning curve and the final eval, so each of them keeps the run's --skip_bad_rows, --exclude, puzzle filter and
cap; `rookworld eval` builds one from its flags (`eval_data`).

    data = load_run_data(DataOptions("rookworld_trl/assets/data", mix_env_ratio=0.3, replay=True, held_out=True))
    data.train, data.replay, data.held_out, data.fen_width

Each set of rows goes through the one pipeline (data/load.py `load`: read -> exclude -> mix -> FEN width -> cap);
the train split is read once (a file's splits are the file itself: its rows as read are also the held-out rows;
the replay rows are the train split after --exclude, before the mix); a puzzle file is labelled once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rookworld_trl.chess.engine import EngineLimit
from rookworld_trl.data.exclude import Exclusion
from rookworld_trl.data.files import is_puzzle_file, position_fens
from rookworld_trl.data.keys import Positions
from rookworld_trl.data.labels import PuzzleSource
from rookworld_trl.data.layout import iter_column
from rookworld_trl.data.load import KEEP, Spec, load
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
    """What `rookworld eval` reads (each only when named): the held-out rows of `data`'s `split` at `fen_width`,
    the tactics test split, and the positions of `train_data` (a puzzle file's positions to solve, read, not
    labelled)."""
    out = RunData(train_data or "", train_split)
    if data:
        out.held_out = load(Spec(data, split, fen_width=fen_width)).rows
    if tactics:
        out.tactics_test = load(Spec(tactics, "test", fen_width=KEEP)).rows
    if train_data:
        out.training_keys = Positions(training_fens(train_data, train_split))
    return out


def training_fens(source: str, split: str):
    """The FENs a model trained on `source`'s `split` saw: a puzzle file's positions to solve (read, not
    labelled), else its rows' (read through the pipeline)."""
    if is_puzzle_file(source):
        return position_fens(source)
    return iter_column(load(Spec(source, split, fen_width=KEEP)).rows, "fen")
