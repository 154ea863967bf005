"""A small generated dataset the data tests share (`rookworld data generate` with real Stockfish at depth 4:
3 self-play and 3 random games); tests/conftest.py makes it the session fixture `generated`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from rookworld_trl.common.entry import run_stage
from rookworld_trl.data.commands import SPLITS, main

ROOT = Path(__file__).resolve().parent.parent
DEPTH = 4
# Small, fast, and still every source of generation: 3 self-play and 3 random games, 1 game per shard.
ARGS = [
    "--selfplay",
    "3",
    "--random",
    "3",
    "--depth",
    str(DEPTH),
    "--max-plies",
    "40",
    "--games-per-chunk",
    "1",
]
ARGS += ["--validation-fraction", "0.1", "--test-fraction", "0.1", "--no-progress"]
OUTPUTS = [f"{s}.{e}" for s in SPLITS for e in ("parquet", "txt")] + ["stats.json"]


def run_cli(args: list[str]) -> int:
    return run_stage("data", main, args)


def generate(out: Path) -> Path:
    assert run_cli(["generate", "--out", str(out), *ARGS]) == 0
    return out


def rows_of(out: Path) -> dict[str, list[dict]]:
    return {split: pq.read_table(out / f"{split}.parquet").to_pylist() for split in SPLITS}


def same_files(a: Path, b: Path) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in OUTPUTS)
