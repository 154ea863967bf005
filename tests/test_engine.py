"""Tests for rookworld_trl/chess/engine.py against the real Stockfish and python-chess (no mocks).

Run: .venv/bin/pytest tests/test_engine.py   (engine tests are skipped where Stockfish is not installed)
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import chess
import chess.engine
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rookworld_trl.chess.engine import (
    AnalysisCache,
    EngineLimit,
    EnginePool,
    MoveEval,
    StockfishNotFound,
    find_stockfish,
    format_eval,
)
from rookworld_trl.chess.environment import random_boards

try:
    STOCKFISH = find_stockfish()
except StockfishNotFound:
    STOCKFISH = None
needs_stockfish = pytest.mark.skipif(STOCKFISH is None, reason="Stockfish not installed")

LIMIT = EngineLimit(depth=6)  # low depth keeps the suite fast; determinism does not depend on depth
START = chess.STARTING_FEN
MATE_IN_1_WHITE = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"  # Ra8#
MATE_IN_1_BLACK = "r5k1/8/8/8/8/8/5PPP/6K1 b - - 0 1"  # Ra1#
MATED_IN_1_BLACK = "k7/8/1K6/8/8/8/8/7R b - - 0 1"  # only Kb8, then Rh8#
STALEMATE = "k7/8/1Q6/8/8/8/8/7K b - - 0 1"
CHECKMATE = "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"


def random_positions(n: int, seed: int) -> list[str]:
    return [board.fen() for board in random_boards(n, seed, max_plies=60)]


POSITIONS = random_positions(12, seed=0)


@pytest.fixture(scope="module")
def reference():
    """Analyses of POSITIONS by a fresh one-engine pool, in order: what every other setup must reproduce."""
    if STOCKFISH is None:
        pytest.skip("Stockfish not installed")
    with EnginePool(limit=LIMIT) as pool:
        return pool.analyse_many(POSITIONS)


def wait_until_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


# ---- pure helpers ----


def test_format_eval_examples():
    assert [format_eval(cp) for cp in (30, -125, 0, 99997, -99999, 5)] == [
        "0.3",
        "-1.25",
        "0.0",
        "999.97",
        "-999.99",
        "0.05",
    ]
    assert MoveEval("e2e4", 35).pawns == 0.35


@given(st.integers(min_value=-100000, max_value=100000))
def test_format_eval_round_trips(cp):
    text = format_eval(cp)
    assert re.fullmatch(r"-?\d+\.\d+", text)
    assert round(float(text) * 100) == cp


def test_engine_limit():
    assert EngineLimit().key() == "depth=8"
    assert EngineLimit(depth=None, nodes=20000).key() == "nodes=20000"
    assert EngineLimit(depth=10, nodes=500).key() == "depth=10,nodes=500"
    assert EngineLimit(depth=None, nodes=20000).to_chess() == chess.engine.Limit(nodes=20000)
    assert EngineLimit(depth=6).to_chess() == chess.engine.Limit(depth=6)
    for bad in ({"depth": None}, {"depth": 0}, {"depth": None, "nodes": -1}, {"depth": 2.5}):
        with pytest.raises(ValueError):
            EngineLimit(**bad)


def test_cache_round_trip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    evals = [MoveEval("e2e4", 30), MoveEval("a7a8q", 99997), MoveEval("h2h1", -125)]
    cache = AnalysisCache(path)
    assert cache.get(START, LIMIT, 5) is None
    cache.put(START, LIMIT, 5, evals)
    cache.put(START, LIMIT, 3, evals[:1])
    cache.put(START, EngineLimit(depth=None, nodes=100), 5, [])
    assert cache.get(START, LIMIT, 5) == evals
    assert cache.get(START, LIMIT, 3) == evals[:1]  # multipv is part of the key
    assert cache.get(START, EngineLimit(depth=None, nodes=100), 5) == []  # so is the limit
    assert cache.get(START, EngineLimit(depth=7), 5) is None
    cache.close()
    reopened = AnalysisCache(path)
    assert reopened.get(START, LIMIT, 5) == evals and len(reopened) == 3
    reopened.close()


def test_cache_is_thread_safe(tmp_path):
    cache = AnalysisCache(tmp_path / "cache.sqlite")

    def work(t):
        for i in range(50):
            cache.put(f"fen {t} {i}", LIMIT, 5, [MoveEval("e2e4", t * 1000 + i)])
            assert cache.get(f"fen {t} {i}", LIMIT, 5) == [MoveEval("e2e4", t * 1000 + i)]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 300
    cache.close()


def test_find_stockfish_order_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("STOCKFISH_PATH", raising=False)
    with pytest.raises(StockfishNotFound, match="apt-get install stockfish"):
        find_stockfish(str(tmp_path / "nope"))
    monkeypatch.setenv("STOCKFISH_PATH", str(tmp_path / "nope"))
    with pytest.raises(StockfishNotFound, match="STOCKFISH_PATH"):
        find_stockfish()
    with pytest.raises(StockfishNotFound):
        EnginePool(stockfish_path=str(tmp_path / "nope"))  # fails at construction, before any use


@needs_stockfish
def test_find_stockfish_finds_real_binary(tmp_path, monkeypatch):
    monkeypatch.delenv("STOCKFISH_PATH", raising=False)
    assert find_stockfish(STOCKFISH) == STOCKFISH
    link = tmp_path / "bin" / "stockfish"
    link.parent.mkdir()
    link.symlink_to(STOCKFISH)
    monkeypatch.setenv("PATH", str(link.parent))
    assert find_stockfish() == str(link)  # PATH comes before /usr/games
    monkeypatch.setenv("STOCKFISH_PATH", STOCKFISH)
    assert find_stockfish() == STOCKFISH  # the variable comes before PATH


# ---- the pool, on the real engine ----


@needs_stockfish
def test_analysis_shape(reference):
    for fen, evals in zip(POSITIONS, reference, strict=True):
        board = chess.Board(fen)
        assert len(evals) == min(5, board.legal_moves.count())
        assert all(chess.Move.from_uci(e.move) in board.legal_moves for e in evals)
        assert len({e.move for e in evals}) == len(evals)
        assert [e.cp for e in evals] == sorted((e.cp for e in evals), reverse=True)  # best first


@needs_stockfish
def test_matches_plain_python_chess(reference):
    """Same moves and centipawns as a bare SimpleEngine with a fresh game per position."""
    with chess.engine.SimpleEngine.popen_uci(STOCKFISH) as engine:
        engine.configure({"Threads": 1, "Hash": 16})
        for fen, evals in zip(POSITIONS[:4], reference[:4], strict=True):
            board = chess.Board(fen)
            infos = engine.analyse(board, LIMIT.to_chess(), multipv=5, game=object())
            expected = [
                (i["pv"][0].uci(), i["score"].pov(board.turn).score(mate_score=100000)) for i in infos
            ]
            assert [(e.move, e.cp) for e in evals] == expected


@needs_stockfish
def test_mates_and_game_over():
    with EnginePool(limit=LIMIT) as pool:
        assert pool.analyse_many([CHECKMATE, STALEMATE]) == [[], []]
        assert pool.engine_calls == 0 and pool.pids() == []  # game-over positions need no engine
        white, black, mated = pool.analyse_many([MATE_IN_1_WHITE, MATE_IN_1_BLACK, MATED_IN_1_BLACK])
    assert white[0] == MoveEval("a1a8", 99999) and format_eval(white[0].cp) == "999.99"
    assert black[0] == MoveEval("a8a1", 99999)  # side to move's point of view, also for black
    assert mated == [MoveEval("a8b8", -99999)]  # one legal move: one entry


@needs_stockfish
def test_multipv_setting():
    with EnginePool(limit=LIMIT, multipv=3) as pool:
        assert len(pool.analyse(START)) == 3


@needs_stockfish
def test_lazy_start_and_clean_close():
    pool = EnginePool(workers=2, limit=LIMIT)
    assert pool.pids() == []  # creating a pool starts no process
    pool.analyse_many(POSITIONS[:2])
    pids = pool.pids()
    assert len(pids) == 2
    pool.close()
    assert all(wait_until_gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.analyse(START)


@needs_stockfish
@pytest.mark.integration  # a subprocess
def test_unclosed_pool_does_not_hang_exit(tmp_path):
    """A program that forgets close() still exits, and its engine goes with it."""
    pid_file = tmp_path / "pid"
    script = (
        "from rookworld_trl.chess.engine import EngineLimit, EnginePool\n"
        "pool = EnginePool(workers=2, limit=EngineLimit(depth=4))\n"
        f"pool.analyse({START!r})\n"
        f"open({str(pid_file)!r}, 'w').write(str(pool.pids()[0]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", script], env=env, timeout=30, check=True)
    assert wait_until_gone(int(pid_file.read_text()))


@needs_stockfish
def test_invalid_fen_names_it():
    with EnginePool(limit=LIMIT) as pool:
        with pytest.raises(ValueError, match="not a fen"):
            pool.analyse_many([START, "not a fen"])
        with pytest.raises(ValueError, match=re.escape("8/8/8/8/8/8/8/8 w - - 0 1")):
            pool.analyse("8/8/8/8/8/8/8/8 w - - 0 1")  # parses, but no kings
        assert pool.engine_calls == 0  # every FEN is checked before any search


@needs_stockfish
def test_order_does_not_matter(reference):
    """Forward, reversed and in parallel: fresh pools give identical analyses (the hash is cleared)."""
    with EnginePool(limit=LIMIT) as pool:
        backwards = pool.analyse_many(POSITIONS[::-1])
    with EnginePool(workers=2, limit=LIMIT) as pool:
        parallel = pool.analyse_many(POSITIONS[5:] + POSITIONS[:5], progress=True)
    assert backwards[::-1] == reference
    assert parallel[7:] + parallel[:7] == reference


@needs_stockfish
def test_node_limit_is_reproducible():
    limit = EngineLimit(depth=None, nodes=3000)
    with EnginePool(limit=limit) as pool:
        forward = pool.analyse_many(POSITIONS[:4])
    with EnginePool(limit=limit) as pool:
        backward = pool.analyse_many(POSITIONS[:4][::-1])
    assert forward == backward[::-1]


@needs_stockfish
def test_dedup_and_cache(tmp_path, reference):
    short_start = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -"  # same position as START
    fens = POSITIONS[:4] + POSITIONS[:4] + [START, short_start]
    with EnginePool(limit=LIMIT, cache=tmp_path / "cache.sqlite") as pool:
        first = pool.analyse_many(fens)
        assert pool.engine_calls == 5  # four positions and the start, each once
        second = pool.analyse_many(fens)
        assert pool.engine_calls == 5  # all served by the cache
    assert first == second and first[:4] == reference[:4] and first[8] == first[9]
    with EnginePool(limit=LIMIT, cache=str(tmp_path / "cache.sqlite")) as pool:
        assert pool.analyse_many(fens) == first and pool.engine_calls == 0  # persisted on disk
    with EnginePool(limit=EngineLimit(depth=5), cache=str(tmp_path / "cache.sqlite")) as pool:
        pool.analyse(START)
        assert pool.engine_calls == 1  # another limit is another key


@needs_stockfish
def test_shared_between_threads(reference):
    with EnginePool(workers=2, limit=LIMIT) as pool:
        results = [None] * 4

        def work(t):
            results[t] = pool.analyse_many(POSITIONS)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(pool.pids()) == 2
    assert results == [reference] * 4


@needs_stockfish
@pytest.mark.parametrize("wait", [False, True])
def test_restart_after_kill_between_calls(reference, wait):
    with EnginePool(limit=LIMIT) as pool:
        pool.analyse(START)
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        if wait:  # the pool's event loop has noticed the death; else the next command races with it
            assert wait_until_gone(pid)
        assert pool.analyse_many(POSITIONS) == reference
        assert pool.restarts == 1 and pool.pids() != [pid]


@needs_stockfish
@pytest.mark.parametrize("workers", [1, 2])
def test_restart_after_kill_during_analysis(reference, workers):
    """Kill every engine while analyse_many is still working through the list."""
    with EnginePool(workers=workers, limit=LIMIT) as pool:
        killed = []

        def killer():
            deadline = time.monotonic() + 30
            while pool.engine_calls < 3 and time.monotonic() < deadline:
                time.sleep(0.0005)
            for pid in pool.pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        thread = threading.Thread(target=killer)
        thread.start()
        results = pool.analyse_many(POSITIONS)
        thread.join()
        assert killed and pool.restarts >= 1
        assert not set(killed) & set(pool.pids())
    assert results == reference


@needs_stockfish
def test_restart_when_the_engine_dies_while_it_starts(reference, tmp_path):
    # a Stockfish whose first process dies before it answers `uci` (as a kill during startup does)
    wrapper = tmp_path / "dies_once.sh"
    wrapper.write_text(f'#!/bin/sh\nif [ ! -e "{tmp_path}/started" ]; then touch "{tmp_path}/started"; kill -9 $$; fi\n'
                       f'exec "{STOCKFISH}"\n')  # fmt: skip
    wrapper.chmod(0o755)
    with EnginePool(limit=LIMIT, stockfish_path=str(wrapper)) as pool:
        assert pool.analyse_many(POSITIONS) == reference
        assert pool.restarts == 1
