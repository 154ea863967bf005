"""AnalysisCache: engine analyses on disk, one sqlite3 file keyed by (fen, limit, multipv); chess/engine.py's
EnginePool reads and fills it.

    cache = AnalysisCache("data/analysis.sqlite")
    cache.get(fen, EngineLimit(depth=8), 5)    # [MoveEval, ...] or None
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class MoveEval:
    move: str  # UCI
    cp: int  # centipawns from the side to move's point of view; mate in n is MATE_SCORE - n

    @property
    def pawns(self) -> float:
        return self.cp / 100


class AnalysisCache:
    """Analyses on disk in one sqlite3 file keyed by (fen, limit.key(), multipv).

    One connection behind a lock makes it safe for threads; WAL mode lets several processes share the file.
    The key does not name the Stockfish version or Hash size: use one cache file per engine setup.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync on every put, and a crash can lose only the last puts, never corrupt.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS analysis (fen TEXT NOT NULL, limit_key TEXT NOT NULL,"
                " multipv INTEGER NOT NULL, evals TEXT NOT NULL, PRIMARY KEY (fen, limit_key, multipv))"
            )
            self._conn.commit()

    def get(self, fen: str, limit, multipv: int) -> list[MoveEval] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT evals FROM analysis WHERE fen = ? AND limit_key = ? AND multipv = ?",
                (fen, limit.key(), multipv),
            ).fetchone()
        return None if row is None else [MoveEval(move, cp) for move, cp in json.loads(row[0])]

    def put(self, fen: str, limit, multipv: int, analysis: list[MoveEval]) -> None:
        evals = json.dumps([[e.move, e.cp] for e in analysis])
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO analysis VALUES (?, ?, ?, ?)", (fen, limit.key(), multipv, evals)
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM analysis").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
