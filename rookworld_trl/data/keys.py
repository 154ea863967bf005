"""A position's key (its first four FEN fields, as python-chess writes them: the same position with other clocks
is the same position) and a compact set of keys: what --exclude drops (data/exclude.py) and what the eval's
"seen in training" counts (data/run.py `training_keys`) compare.

    fen4("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1") in Positions(fens)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import chess
import numpy as np

from rookworld_trl.chess.formats import position_key


def fen4(fen: str) -> str:
    """The position of a FEN as python-chess writes it (first four fields). Cheap for FENs python-chess wrote
    (no en-passant square): those are taken as they are; the rest go through python-chess.

    >>> fen4("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1")  # no capture: no square
    'rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq -'
    """
    fields = fen.split()
    if len(fields) >= 4 and fields[3] == "-":
        return " ".join(fields[:4])
    return position_key(chess.Board(" ".join(fields[:4])).fen())


class Positions:
    """The positions (fen4 keys) of `fens`, held as sorted 8-byte hashes: a run's millions of training positions
    in tens of MB, not a GB of strings. `fen4(fen) in positions`, `len(positions)`. Read from `fens` when first
    asked (~3 s a million: a run whose eval never asks does not pay it before its first step)."""

    def __init__(self, fens: Iterable[str]):
        self.fens, self._hashes = fens, None

    @property
    def hashes(self) -> np.ndarray:
        if self._hashes is None:
            self._hashes = np.unique(
                np.fromiter((position_hash(fen4(f)) for f in self.fens), dtype=np.uint64)
            )
            self.fens = None
        return self._hashes

    def __contains__(self, key: str) -> bool:
        h = np.uint64(position_hash(key))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    def __len__(self) -> int:
        return len(self.hashes)


def position_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def canonical_fen4(fen: str) -> str:
    """fen4 after python-chess has read the whole position (castling rights cleaned too): the exclude side."""
    return position_key(chess.Board(" ".join(fen.split()[:4])).fen())
