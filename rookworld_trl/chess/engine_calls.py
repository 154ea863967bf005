"""Bounded calls to a UCI engine (issue 71): a start gets `start_timeout()` seconds ($ROOKWORLD_ENGINE_START_TIMEOUT,
default 30), a search `search_timeout()` ($ROOKWORLD_ENGINE_TIMEOUT, default 60); an answer python-chess cannot parse
(an illegal or missing move) is caught as it is logged, not waited for; after `request_stop()` (a stop signal in
training) a wait ends STOP_GRACE seconds after it (or after its own start) with EngineStopped. chess/engine.py's EnginePool calls these.

    engine = popen_daemon("/usr/games/stockfish")                      # asyncio.TimeoutError past the start timeout
    infos = bounded_analyse(engine, board, limit, multipv=5, timeout=60)  # TimeoutError, ProtocolError, EngineStopped
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import re
import threading
import time

import chess
import chess.engine

from rookworld_trl.common.errors import UserError

START_TIMEOUT_ENV, SEARCH_TIMEOUT_ENV = "ROOKWORLD_ENGINE_START_TIMEOUT", "ROOKWORLD_ENGINE_TIMEOUT"
# seconds for the UCI handshake and options: Stockfish answers in ~0.1 s, a busy box in a few
START_TIMEOUT = 30.0
# seconds for one search: depth 8 MultiPV 5 takes 20-200 ms; generous for deeper limits too
SEARCH_TIMEOUT = 60.0
STOP_GRACE = 5.0  # seconds an engine wait may go on after request_stop(): a healthy search ends well before
POLL_S = 0.25  # how often a wait looks at the stop request and its engine's protocol errors
FIX = "set STOCKFISH_PATH (or --stockfish) to a working Stockfish binary (Debian/Ubuntu: `apt-get install stockfish`)"


class EngineFailure(UserError):
    """An engine that does not start, hangs past its timeout, or answers what is not legal UCI: one line naming
    the binary and the fix (a UserError: the stages print it and exit 2)."""


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


def start_timeout() -> float:
    """Seconds an engine start may take ($ROOKWORLD_ENGINE_START_TIMEOUT, default START_TIMEOUT)."""
    return _seconds(START_TIMEOUT_ENV, START_TIMEOUT)


def search_timeout() -> float:
    """Seconds one search may take ($ROOKWORLD_ENGINE_TIMEOUT, default SEARCH_TIMEOUT)."""
    return _seconds(SEARCH_TIMEOUT_ENV, SEARCH_TIMEOUT)


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
    """python-chess drops what it cannot parse: an illegal pv move is logged (with a traceback), an illegal
    `bestmove` goes to the event loop's exception handler and the search never ends. This filter (on python-chess's
    logger) and `on_loop_error` (each engine's loop handler) keep those off the console and file them by engine
    pid, so the wait for that engine refuses it by name at once."""

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
    """SimpleEngine.popen_uci called from a daemon thread, its handshake bounded by `timeout` (None:
    start_timeout()): asyncio.TimeoutError past it, EngineStopped after request_stop().

    python-chess runs each engine's event loop on a new thread, which inherits the daemon flag of the thread
    that creates it. A non-daemon loop thread would make the interpreter wait for it at exit before any
    atexit hook runs, so a pool that was never closed would hang the program; a daemon one lets the
    pool's finalizer run at exit and quit the engine.
    """
    box: dict = {}
    timeout = start_timeout() if timeout is None else timeout

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
    """engine.analyse(...) (a fresh `game`: ucinewgame) that gives up after `timeout` seconds (TimeoutError),
    after a stop request (EngineStopped), or as soon as python-chess logs that it could not parse the engine's
    answer (EngineFailure raised by the caller: `ProtocolError`)."""
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
