"""Stockfish analysis for the P: task's top-5 moves: a pool of engines over python-chess, and a sqlite cache.
Reproducible: a fixed depth or node limit, Threads=1, and `ucinewgame` before every position, so the same FEN +
limit gives the same answer whatever was analysed before it.

    from rookworld_trl.chess.engine import EngineLimit, EnginePool, format_eval
    with EnginePool(workers=2, limit=EngineLimit(depth=8), cache="data/analysis.sqlite") as pool:
        evals = pool.analyse("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1")
        print([(e.move, format_eval(e.cp)) for e in evals])

Stockfish: an explicit path, $STOCKFISH_PATH, `stockfish` on PATH, or /usr/games/stockfish (`apt-get install
stockfish`). Every engine call is bounded: a start by $ROOKWORLD_ENGINE_START_TIMEOUT seconds (default 30), a search
by $ROOKWORLD_ENGINE_TIMEOUT (default 60), then an EngineFailure naming the binary and the fix; an engine that
answers what is not legal UCI is refused the same way, at once. After `request_stop()` no wait lasts more than
STOP_GRACE seconds (EngineStopped, a KeyboardInterrupt).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import queue
import re
import shutil
import signal
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import chess
import chess.engine
from tqdm.auto import tqdm

from rookworld_trl.chess.environment import parse_board
from rookworld_trl.common.errors import UserError

# ----------------------------------------------------------------------------- bounded engine calls

START_TIMEOUT_ENV, SEARCH_TIMEOUT_ENV = "ROOKWORLD_ENGINE_START_TIMEOUT", "ROOKWORLD_ENGINE_TIMEOUT"
# seconds for the UCI handshake and options: Stockfish answers in ~0.1 s, a busy box in a few
START_TIMEOUT = 30.0
# seconds for one search: depth 8 MultiPV 5 takes 20-200 ms; generous for deeper limits too
SEARCH_TIMEOUT = 60.0
STOP_GRACE = 5.0  # seconds an engine wait may go on after request_stop(): a healthy search ends well before
POLL_S = 0.25  # how often a wait looks at the stop request and its engine's protocol errors
FIX = "set STOCKFISH_PATH (or --stockfish) to a working Stockfish binary (Debian/Ubuntu: `apt-get install stockfish`)"


class EngineFailure(UserError):
    """An engine that does not start, hangs, or answers what is not legal UCI: one line naming the binary."""


class EngineStopped(KeyboardInterrupt):
    """An engine wait cut short by request_stop(): the stage stops as after a second Ctrl-C."""


def _seconds(env: str, default: float) -> float:
    """A timeout from the environment variable `env` (seconds > 0), else `default`; a bad value is one line."""
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"{env}={raw[:40]!r}: expected a number of seconds > 0; unset it for {default:g}")
    return value


_STOP = threading.Event()
_STOP_AT: list[float] = []


def request_stop() -> None:
    """A stop signal arrived (training/interrupt.py): every engine wait ends within STOP_GRACE seconds."""
    if not _STOP.is_set():
        _STOP_AT.append(time.monotonic())
        _STOP.set()


def clear_stop() -> None:
    """Forget a stop request (tests, and a trainer started again in the same process)."""
    _STOP.clear()
    _STOP_AT.clear()


def _stop_deadline(since: float) -> float | None:
    """When a wait that began at `since` gives up after a stop request: STOP_GRACE after the later of the two, so a
    healthy search under way (or started while the step finishes) is never cut; None without a request."""
    return max(_STOP_AT[0], since) + STOP_GRACE if _STOP.is_set() and _STOP_AT else None


class _ProtocolErrors(logging.Filter):
    """python-chess logs an illegal pv move and hands an illegal `bestmove` to the event loop (the search never
    ends): this filter and `on_loop_error` keep those off the console and file them by engine pid, so the wait for
    that engine refuses it at once."""

    PID = re.compile(r"pid=(\d+)")

    def __init__(self):
        super().__init__()
        self.by_pid: dict[int | None, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        text = record.getMessage()
        found = self.PID.search(text)
        cause = record.exc_info[1] if record.exc_info else None
        self.by_pid[int(found.group(1)) if found else None] = str(cause or text).splitlines()[0][:200]
        return False

    def on_loop_error(self, loop, context: dict) -> None:
        protocol, cause = context.get("protocol"), context.get("exception")
        # python-chess ending a search we cancelled (a timeout), or a dead engine's future nobody awaited: the
        # pool restarts the engine, and says so in one line when it cannot
        if isinstance(cause, (asyncio.InvalidStateError, chess.engine.EngineTerminatedError)):
            return
        try:
            pid = protocol.transport.get_pid()
        except Exception:  # not an engine's error: asyncio's own handling
            loop.default_exception_handler(context)
            return
        self.by_pid[pid] = str(cause or context.get("message", "")).splitlines()[0][:200]


PROTOCOL_ERRORS = _ProtocolErrors()
logging.getLogger("chess.engine").addFilter(PROTOCOL_ERRORS)


def popen_daemon(path: str, timeout: float | None = None) -> chess.engine.SimpleEngine:
    """SimpleEngine.popen_uci from a daemon thread, bounded by `timeout` (None: the environment's, else
    START_TIMEOUT). The engine's event loop thread inherits the daemon flag: a non-daemon one would hang the exit
    of a program that never closed its pool, before the pool's finalizer could run."""
    box: dict = {}
    timeout = _seconds(START_TIMEOUT_ENV, START_TIMEOUT) if timeout is None else timeout

    def target():
        try:
            box["engine"] = chess.engine.SimpleEngine.popen_uci(path, timeout=timeout)
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    thread = threading.Thread(target=target, name="stockfish-start", daemon=True)
    thread.start()
    since = time.monotonic()
    while thread.is_alive():  # polled: a stop request must not wait for a start that hangs
        thread.join(POLL_S)
        stop = _stop_deadline(since)
        if stop is not None and time.monotonic() > stop:
            raise EngineStopped()  # the start thread is a daemon; its engine, if any, dies with the process
    if "error" in box:
        raise box["error"]
    return box["engine"]


def bounded_analyse(engine, board: chess.Board, limit: chess.engine.Limit, multipv: int, timeout: float):
    """engine.analyse(...) that gives up after `timeout` seconds (TimeoutError), after a stop request
    (EngineStopped), or once python-chess could not parse the answer (ProtocolError)."""
    pid = engine.transport.get_pid()
    PROTOCOL_ERRORS.by_pid.pop(pid, None)
    # A new `game` object makes python-chess send ucinewgame, which clears Stockfish's hash and history tables:
    # without it results depend on the positions searched before.
    loop = engine.protocol.loop
    if loop.is_closed() or getattr(engine, "_shutdown", False):  # it died and python-chess has noticed
        raise chess.engine.EngineTerminatedError("engine event loop dead")
    coro = engine.protocol.analyse(board, limit, multipv=multipv, game=object())
    try:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop closed meanwhile
        coro.close()
        raise chess.engine.EngineTerminatedError("engine event loop dead") from None
    since = time.monotonic()
    deadline = since + timeout
    while True:
        try:
            return future.result(timeout=POLL_S)
        except concurrent.futures.TimeoutError:
            pass
        if pid in PROTOCOL_ERRORS.by_pid:
            future.cancel()
            raise ProtocolError(PROTOCOL_ERRORS.by_pid.pop(pid))
        now, stop = time.monotonic(), _stop_deadline(since)
        if stop is not None and now > stop:
            future.cancel()
            raise EngineStopped()
        if now > deadline:
            future.cancel()
            raise TimeoutError(f"no answer in {timeout:g} s")


class ProtocolError(Exception):
    """An answer python-chess could not parse (an illegal move, ...): the pool refuses the engine by name."""


# ----------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class MoveEval:
    move: str  # UCI
    cp: int  # centipawns from the side to move's point of view; mate in n is MATE_SCORE - n

    @property
    def pawns(self) -> float:
        return self.cp / 100


class AnalysisCache:
    """Analyses in one sqlite3 file keyed by (fen, limit.key(), multipv): one file per engine setup (the key
    names no Stockfish version). A lock makes it thread-safe; WAL lets processes share the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
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


# ----------------------------------------------------------------------------- the pool

MULTIPV = 5  # the P: format lists the engine's top 5 moves: every analysis is MultiPV 5
MATE_SCORE = 100000  # mate in n -> MATE_SCORE - n centipawns, the convention of the published data
WIN_K = 0.00368208  # lichess's centipawn -> expected score slope; saturates, so mates and +20 agree
MAX_ATTEMPTS = 3  # a position is tried on at most this many (re)started engines


class StockfishNotFound(UserError):
    pass


def find_stockfish(path: str | None = None) -> str:
    """Path of a Stockfish binary: `path`, else $STOCKFISH_PATH, else `stockfish` on PATH, else /usr/games."""
    how = "Install it (Debian/Ubuntu: `apt-get install stockfish`) or set STOCKFISH_PATH to the binary."
    # An explicit choice that does not work is an error, not a reason to silently use another binary.
    for source, wanted in (("path", path), ("STOCKFISH_PATH", os.environ.get("STOCKFISH_PATH"))):
        if wanted:
            found = shutil.which(wanted)
            if found is None:
                raise StockfishNotFound(f"Stockfish not found at {source}={wanted!r}. {how}")
            return found
    found = shutil.which("stockfish") or shutil.which("/usr/games/stockfish")
    if found is None:
        raise StockfishNotFound(f"Stockfish not found on PATH nor at /usr/games/stockfish. {how}")
    return found


@dataclass(frozen=True)
class EngineLimit:
    """A reproducible search limit; both set: whichever comes first. Nodes alone: EngineLimit(None, 20000)."""

    depth: int | None = 8
    nodes: int | None = None

    def __post_init__(self):
        if self.depth is None and self.nodes is None:
            raise ValueError("EngineLimit needs a depth or a node limit (time limits are not reproducible)")
        for name in ("depth", "nodes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"EngineLimit.{name} must be a positive int, got {value!r}")

    def to_chess(self) -> chess.engine.Limit:
        return chess.engine.Limit(depth=self.depth, nodes=self.nodes)

    def key(self) -> str:
        """Text for cache keys and dataset metadata: "depth=8", "nodes=20000", "depth=8,nodes=20000"."""
        limits = (("depth", self.depth), ("nodes", self.nodes))
        return ",".join(f"{name}={value}" for name, value in limits if value is not None)


def expected_score(cp: float) -> float:
    """Centipawns (side to move) -> expected score in (0, 1). A mate (+-100000) is 1 or 0."""
    return 1 / (1 + math.exp(-WIN_K * max(-MATE_SCORE, min(MATE_SCORE, cp))))


def format_eval(cp: int) -> str:
    """The E: field text of one evaluation: str(cp / 100), e.g. 30 -> "0.3", 0 -> "0.0", 99997 -> "999.97"."""
    return str(cp / 100)


def _close_engines(engines: list) -> None:
    """Quit every started engine. Module level so that the pool's finalizer does not keep the pool alive."""
    for i, engine in enumerate(engines):
        if engine is None:
            continue
        # quit() lets Stockfish exit by itself; an engine that is already dead raises, and close() is enough.
        with contextlib.suppress(Exception):
            engine.quit()
        engine.close()
        engines[i] = None


class EnginePool:
    """`workers` Stockfish processes, started on first use, each used by one thread at a time; thread-safe but
    for close(). `engine_calls` and `restarts` count for tests and logs."""

    def __init__(
        self,
        workers: int = 1,
        limit: EngineLimit = EngineLimit(),
        multipv: int = MULTIPV,
        cache: AnalysisCache | str | os.PathLike | None = None,
        stockfish_path: str | None = None,
        threads: int = 1,
        hash_mb: int = 16,
        search_timeout: float | None = None,
        start_timeout: float | None = None,
    ):
        if workers < 1 or multipv < 1 or threads < 1 or hash_mb < 1:
            raise ValueError("workers, multipv, threads and hash_mb must be >= 1")
        self.path = find_stockfish(stockfish_path)  # fail now, with the install hint, not at first analyse
        self.search_timeout = search_timeout or _seconds(SEARCH_TIMEOUT_ENV, SEARCH_TIMEOUT)
        self.start_timeout = start_timeout or _seconds(START_TIMEOUT_ENV, START_TIMEOUT)
        self.workers, self.limit, self.multipv = workers, limit, multipv
        self.options = {"Threads": threads, "Hash": hash_mb}
        self._owns_cache = cache is not None and not isinstance(cache, AnalysisCache)
        self.cache = AnalysisCache(cache) if self._owns_cache else cache
        self._engines: list[chess.engine.SimpleEngine | None] = [None] * workers
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()  # indices of engines no thread is using
        for i in range(workers):
            self._free.put(i)
        self._count_lock = threading.Lock()
        self.engine_calls = self.restarts = 0
        self._closed = False
        # Engines are quit on close(), when the pool is garbage collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _close_engines, self._engines)

    def analyse(self, fen: str) -> list[MoveEval]:
        """Best-first top-`multipv` moves of one position; [] when the game is over."""
        return self.analyse_many([fen])[0]

    def analyse_many(
        self, fens: Iterable[str], progress: bool = False, multipv: int | None = None
    ) -> list[list[MoveEval]]:
        """analyse() for each FEN, in order; each distinct position is looked up or searched once.
        `multipv` overrides the pool's (1: the best line only, a third of the time of 5 at depth 8)."""
        if self._closed:
            raise RuntimeError("EnginePool is closed")
        multipv = multipv or self.multipv
        # every FEN checked (ValueError naming it) and made canonical before any engine work: Stockfish may crash
        # or misbehave on impossible positions (no king, the side not to move in check, ...)
        keys = [parse_board(fen).fen() for fen in fens]
        results: dict[str, list[MoveEval]] = {}
        todo = []
        for key in dict.fromkeys(keys):  # distinct, first-seen order
            cached = self.cache.get(key, self.limit, multipv) if self.cache is not None else None
            if cached is None:
                todo.append(key)
            else:
                results[key] = cached
        results.update(zip(todo, self._analyse_all(todo, progress, multipv), strict=True))
        return [list(results[key]) for key in keys]  # copies: duplicates must not share a mutable list

    def _analyse_all(self, fens: list[str], progress: bool, multipv: int) -> list[list[MoveEval]]:
        with tqdm(total=len(fens), disable=not progress, desc="stockfish", unit="pos") as bar:
            if self.workers == 1 or len(fens) <= 1:  # no thread hand-off when it cannot help
                out = []
                for fen in fens:
                    out.append(self._analyse_fen(fen, multipv))
                    bar.update()
                return out
            with ThreadPoolExecutor(self.workers, thread_name_prefix="stockfish") as executor:
                futures = [executor.submit(self._analyse_fen, fen, multipv) for fen in fens]
                try:
                    for future in as_completed(futures):
                        future.result()  # raise the first error now rather than after all the work
                        bar.update()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            return [future.result() for future in futures]

    def _analyse_fen(self, fen: str, multipv: int) -> list[MoveEval]:
        board = chess.Board(fen)
        if board.is_game_over():
            return []
        i = self._free.get()  # blocks while every engine is busy (other threads using the pool)
        try:
            evals = self._search(i, board, multipv)
        finally:
            self._free.put(i)
        if self.cache is not None:
            self.cache.put(fen, self.limit, multipv, evals)
        return evals

    def _search(self, i: int, board: chess.Board, multipv: int) -> list[MoveEval]:
        """One search on engine i, replacing the process if it died; a hang or an answer that is not legal UCI is
        an EngineFailure at once (a hung or lying engine would do so again)."""
        error = None
        for _ in range(MAX_ATTEMPTS):
            engine = self._engines[i]
            with self._count_lock:
                self.engine_calls += 1
            try:
                engine = engine or self._start(i)  # a process may die while it starts, too
                infos = bounded_analyse(engine, board, self.limit.to_chess(), multipv, self.search_timeout)
                break
            except TimeoutError:  # asyncio's too (3.11): a start or a search that hangs
                self._drop(i, engine)
                what = (
                    f"did not start in {self.start_timeout:g} s ({START_TIMEOUT_ENV} sets it)"
                    if engine is None  # the start timed out: nothing was assigned
                    else f"did not answer a {self.limit.key()} search in {self.search_timeout:g} s on "
                    f"{board.fen()!r} ({SEARCH_TIMEOUT_ENV} sets it)"
                )
                raise EngineFailure(
                    f"Stockfish at {self.path} {what}: it hangs or this machine is overloaded; {FIX}"
                ) from None
            except (ProtocolError, chess.engine.EngineError) as e:
                if isinstance(e, chess.engine.EngineTerminatedError):
                    error = e
                else:  # it answered, but not legal UCI: a lying engine is refused, not restarted
                    self._drop(i, engine)
                    raise self._lying(board, e) from None
            # A dead process shows up as EngineTerminatedError (an EngineError), a broken pipe (OSError), or,
            # when python-chess has already torn down the engine's event loop, a cancelled future.
            except (OSError, CancelledError, RuntimeError) as e:  # RuntimeError: its event loop is closed
                error = e
            except BaseException:  # EngineStopped, a Ctrl-C: the engine is mid-search, so it goes
                self._drop(i, engine)
                raise
            self._drop(i, engine)
            with self._count_lock:
                self.restarts += 1
        else:
            raise EngineFailure(
                f"Stockfish at {self.path} failed {MAX_ATTEMPTS} times on {board.fen()!r} "
                f"({type(error).__name__}: {str(error)[:200] or 'it exited'}); {FIX}"
            )
        return self._evals(infos, board)  # outside the retries: a lying engine is refused, not restarted

    def _drop(self, i: int, engine) -> None:
        """Kill engine i's process now (close() runs later on its loop: a hung engine must not outlive a process
        that exits right after the error) and forget it."""
        if engine is not None:
            with contextlib.suppress(Exception):  # gone already
                os.kill(engine.transport.get_pid(), signal.SIGKILL)
            engine.close()
        self._engines[i] = None

    def _lying(self, board: chess.Board, error: Exception) -> EngineFailure:
        return EngineFailure(
            f"Stockfish at {self.path} answered what is not legal UCI on {board.fen()!r} ({str(error)[:200]}); "
            f"{FIX}"
        )

    def _evals(self, infos: list[dict], board: chess.Board) -> list[MoveEval]:
        """MoveEvals of an analysis; a line without a legal first move and a score is an EngineFailure."""
        out = []
        for info in infos:
            pv, score = info.get("pv"), info.get("score")
            if not pv or score is None or pv[0] not in board.legal_moves:
                raise self._lying(board, ValueError(f"an info line without a legal move and a score: {info}"))
            out.append(MoveEval(pv[0].uci(), score.pov(board.turn).score(mate_score=MATE_SCORE)))
        if not out:
            raise self._lying(board, ValueError("no info line before bestmove"))
        return out

    def _start(self, i: int) -> chess.engine.SimpleEngine:
        engine = popen_daemon(self.path, self.start_timeout)
        try:
            engine.protocol.loop.set_exception_handler(PROTOCOL_ERRORS.on_loop_error)
            engine.configure(self.options)
        except BaseException:
            engine.close()
            raise
        self._engines[i] = engine
        return engine

    def check(self) -> None:
        """Search the starting position past the cache: a bad engine fails now, not after a minute of work."""
        i = self._free.get()
        try:
            self._search(i, chess.Board(), 1)
        finally:
            self._free.put(i)

    def pids(self) -> list[int]:
        """Process ids of the running engines (none before first use)."""
        return [engine.transport.get_pid() for engine in self._engines if engine is not None]

    def close(self) -> None:
        self._closed = True
        self._finalizer()
        if self._owns_cache:
            self.cache.close()

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
