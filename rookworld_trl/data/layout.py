"""The RookWorld dataset layout: its columns (FEATURES), the split of a position, and LayoutWriter.

    OUT/{train,validation,test}.parquet   one row per sample, the columns of FEATURES
    OUT/{train,validation,test}.txt       the same samples as raw lines (the original RookWorld text)
    OUT/stats.json                        counts (P: rows by FEN width in `fen_widths`) and settings

Columns (docs/FORMATS.md): P: rows' `moves`/`evals` are engine top-k best first, evals in pawns (raw text lines
keep their written order, `limit` ""); the other task's columns hold empty values, so every row has one Arrow
type. A layout is written as a whole: through a staging folder, moved in by `publish`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from rookworld_trl.chess.formats import position_key, prompt_fen_width
from rookworld_trl.common.errors import UserError
from rookworld_trl.common.paths import out_folder_problem
from rookworld_trl.data.files import INCOMPLETE, position_hash

SPLITS = ("train", "validation", "test")
FEATURES = Features(
    {
        "text": Value("string"),
        "prompt": Value("string"),
        "completion": Value("string"),
        "task": Value("string"),
        "fen": Value("string"),
        "moves": List(Value("string")),
        "evals": List(Value("float64")),
        "best": Value("string"),
        "limit": Value("string"),
        "move": Value("string"),
        "history": List(Value("string")),
        "new_fen": Value("string"),
        "reward": Value("float64"),
        "terminated": Value("bool"),
        "truncated": Value("bool"),
        "kind": Value("string"),
    }
)
COLUMNS = tuple(FEATURES)
# Rows per Arrow batch / Parquet row group: bounded memory for any input size (~100 MB), and row groups
# large enough to compress well (one 92k-row group: 8.3 MB; ten of 10k rows: 9.2 MB).
BATCH_ROWS = 100_000


@contextlib.contextmanager
def no_bars():
    """datasets' progress bars off within the block: a bad file's error stays the one line on stderr."""
    was_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.utils.enable_progress_bars()


# ------------------------------------------------------------------------------------------------ rows


def columns(ds, *names: str) -> list[list]:
    """An in-memory dataset's columns `names`, each as a list, in one Arrow read (iterating rows formats them one
    by one: ~1 s per 100k rows)."""
    table = ds.select_columns(list(names)).to_dict()
    return [table[name] for name in names]


def column(ds, name: str) -> list:
    """An in-memory dataset's column `name` as a list (`columns`)."""
    return columns(ds, name)[0]


def arrow_batches(ds, *names: str, size: int = BATCH_ROWS):
    """Arrow tables of `ds`'s columns `names`, `size` rows at a time, in `ds`'s order."""
    return ds.select_columns(list(names)).with_format("arrow").iter(batch_size=size)


def iter_rows(ds, *names: str):
    """The tuples of `ds`'s columns `names`, row by row, never holding a whole column."""
    for batch in arrow_batches(ds, *names):
        yield from zip(*(batch.column(name).to_pylist() for name in names), strict=True)


def iter_column(ds, name: str):
    """The values of `ds`'s column `name`, one at a time (iter_rows)."""
    return (value for (value,) in iter_rows(ds, name))


def task_rows(ds) -> tuple[list[int], list[int]]:
    """(indices of the P: rows, indices of the A: rows) of an in-memory dataset, in order."""
    tasks = column(ds, "task")
    return [i for i, t in enumerate(tasks) if t == "P"], [i for i, t in enumerate(tasks) if t == "A"]


def split_of(fen: str, validation_fraction: float, test_fraction: float) -> str:
    """The split of a position, from an unsalted hash of its position part: no position is in two splits, in
    any dataset made with any seed."""
    return hashed_split(position_key(fen), validation_fraction, test_fraction)


def hashed_split(text: str, validation_fraction: float, test_fraction: float) -> str:
    """ "test", "validation" or "train", by where `text`'s 8-byte hash falls in [0, 1)."""
    u = position_hash(text) / 2**64
    if u < test_fraction:
        return "test"
    return "validation" if u < test_fraction + validation_fraction else "train"


# ---------------------------------------------------------------------------------------------- writing


STAGING = ".incoming-"  # the prefix of a writer's staging folder inside OUT
LAYOUT_FILES = tuple(f"{s}.{ext}" for s in SPLITS for ext in ("parquet", "txt")) + ("stats.json",)


class LayoutWriter:
    """Writes rows into OUT/{split}.parquet and OUT/{split}.txt, dropping duplicates, through a staging folder:
    close() finishes the files, commit(stats) moves them and stats.json into OUT as a whole, abort() drops them."""

    def __init__(self, out: str | os.PathLike, validation_fraction: float, test_fraction: float,
                 compression_level: int = 19):  # fmt: skip
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(f"{STAGING}*"):  # left by a killed writer (we hold OUT's lock)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        self.stage = Path(tempfile.mkdtemp(prefix=STAGING, dir=self.out))
        self.fractions = (validation_fraction, test_fraction)
        self.seen: set[int] = set()
        self.rows = {split: Counter() for split in SPLITS}  # split -> task -> rows
        self.kinds: Counter[str] = Counter()
        self.fen_widths: Counter[int] = Counter()  # P: rows by FEN field width: the layout of the prompts
        self.duplicates: Counter[str] = Counter()
        self.batches: dict[str, list[dict]] = {split: [] for split in SPLITS}
        # zstd 19 halves the files against snappy (the embedded data ships in the package) at ~140 us a row, which a
        # conversion of millions of rows does not pay (commands.py convert: level 3, ~3 us a row, files ~25% larger)
        self.parquet = {s: pq.ParquetWriter(self.stage / f"{s}.parquet", FEATURES.arrow_schema, compression="zstd",
                                            compression_level=compression_level) for s in SPLITS}  # fmt: skip
        # closed in close(), like the Parquet writers
        self.text = {s: open(self.stage / f"{s}.txt", "w", encoding="utf-8") for s in SPLITS}  # noqa: SIM115

    def add(self, row: dict, split: str | None = None) -> None:
        """Add a row to `split` (None: its position's, split_of), unless it is a duplicate."""
        split = self._place(row, split)
        if split is not None:
            self.batches[split].append(row)
            if len(self.batches[split]) >= BATCH_ROWS:
                self._flush(split)

    def add_table(self, table: pa.Table) -> None:
        """add() every row of an Arrow table of FEATURES' columns, in order, written as Arrow (no dict per row)."""
        names = ("task", "fen", "move", "kind", "prompt")
        picked: dict[str, list[int]] = {split: [] for split in SPLITS}
        for i, values in enumerate(zip(*(table.column(n).to_pylist() for n in names), strict=True)):
            split = self._place(dict(zip(names, values, strict=True)))
            if split is not None:
                picked[split].append(i)
        table = table.select(list(FEATURES)).cast(FEATURES.arrow_schema)
        for split, indices in picked.items():
            if indices:
                self._flush(split)  # rows add() holds go first: a split's rows stay in order
                self._write(split, table.take(pa.array(indices, pa.int64())))

    def _place(self, row: dict, split: str | None = None) -> str | None:
        """The split a row goes to, counted (None: a duplicate, counted as one)."""
        # P: rows are duplicates by FEN, A: rows by FEN + move (8-byte hashes keep millions in memory)
        key = position_hash(row["task"] + row["fen"] + ("" if row["task"] == "P" else "+" + row["move"]))
        if key in self.seen:
            self.duplicates[row["task"]] += 1
            return None
        self.seen.add(key)
        split = split or split_of(row["fen"], *self.fractions)
        self.rows[split][row["task"]] += 1
        if row["kind"]:
            self.kinds[row["kind"]] += 1
        if width := row["task"] == "P" and prompt_fen_width(row["prompt"]):
            self.fen_widths[width] += 1
        return split

    def _flush(self, split: str) -> None:
        batch, self.batches[split] = self.batches[split], []
        if batch:
            self._write(split, pa.Table.from_pylist(batch, schema=FEATURES.arrow_schema))

    def _write(self, split: str, rows: pa.Table) -> None:
        self.parquet[split].write_table(rows)
        self.text[split].write("".join(text + "\n" for text in rows.column("text").to_pylist()))

    def close(self) -> dict:
        """Finish the files (still staged: commit moves them in) and return the counts for stats.json."""
        for split in SPLITS:
            self._flush(split)
            self.parquet[split].close()
            self.text[split].close()
        return {
            "rows": {split: dict(sorted(counts.items())) for split, counts in self.rows.items()},
            "kinds": dict(sorted(self.kinds.items())),
            "fen_widths": dict(sorted(self.fen_widths.items())),
            "duplicates_removed": dict(sorted(self.duplicates.items())),
        }

    def commit(self, stats: dict) -> None:
        """stats.json beside the staged files, then all of them into OUT as one change (`publish`)."""
        (self.stage / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        publish(self.out, self.stage)

    def abort(self) -> None:
        """Drop the staged files: OUT keeps what it held."""
        for files in (self.parquet, self.text):
            for f in files.values():
                with contextlib.suppress(Exception):  # a writer that failed mid-write
                    f.close()
        shutil.rmtree(self.stage, ignore_errors=True)


def publish(out: Path, stage: Path) -> None:
    """Move a staged layout into OUT: the INCOMPLETE marker, one rename per file (stats.json last), no marker. A
    process killed between leaves the marker: readers refuse the folder (files.py check_dir)."""
    marker = out / INCOMPLETE
    tmp = out / f"{INCOMPLETE}.tmp"
    tmp.write_text(json.dumps({"staging": stage.name, "pid": os.getpid()}) + "\n")
    os.replace(tmp, marker)
    for name in LAYOUT_FILES:
        if (stage / name).exists():
            os.replace(stage / name, out / name)
    os.unlink(marker)
    shutil.rmtree(stage, ignore_errors=True)


def check_out(out: str) -> None:
    """One line, before any reading, for an --out that cannot become a dataset folder (common/paths.py)."""
    if problem := out_folder_problem(out, "to write, e.g. --out data/mine"):
        raise UserError(problem)


def say_replaced(out: str) -> None:
    """One line when OUT already holds a dataset: what the load replaces (its rows per split, from stats.json)."""
    held = [name for name in LAYOUT_FILES if os.path.exists(os.path.join(out, name))]
    if not held:
        return
    try:
        rows = json.loads(Path(out, "stats.json").read_text())["rows"]
        what = ", ".join(f"{s} {split_text(rows[s])}" for s in SPLITS if s in rows)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        what = ", ".join(held)
    print(f"rookworld data: {out} holds a dataset ({what}); this load replaces it when it has finished "
          "(stopped before then, the old one stays)", flush=True)  # fmt: skip


def split_text(counts: dict) -> str:
    """'12 rows (P: 7, A: 5)' for a split's {task: rows}."""
    tasks = ", ".join(f"{task}: {n}" for task, n in sorted(counts.items()))
    return f"{sum(counts.values())} rows" + (f" ({tasks})" if tasks else "")
