"""Stockfish that hangs, lies or is missing: every search and start is bounded, a stop request ends a hung search,
and eval or train says so in one line before any work. Fake engines are small Python scripts written in tmp_path;
the real Stockfish answers everything else.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_engine_faults.py
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest
from fault_cli import START, one_line, run

from rookworld_trl import assets
from rookworld_trl.chess import engine as engine_mod
from rookworld_trl.chess.engine import EngineFailure, EngineLimit, EnginePool, EngineStopped

FAKE = textwrap.dedent(
    """
    import sys, time
    mode = sys.argv[1]
    def out(s):
        sys.stdout.write(s + "\\n"); sys.stdout.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "uci":
            if mode == "hang_uci":
                time.sleep(3600)
            out("id name Fake")
            for name in ("MultiPV", "Threads", "Hash"):
                out(f"option name {name} type spin default 1 min 1 max 1024")
            out("uciok")
        elif cmd == "isready":
            out("readyok")
        elif cmd.startswith("go"):
            if mode == "hang_go":
                time.sleep(3600)
            elif mode == "illegal":
                out("info depth 1 multipv 1 score cp 10 pv a1a8"); out("bestmove a1a8")
            elif mode == "no_pv":
                out("info depth 1 multipv 1 score cp 10"); out("bestmove e2e4")
        elif cmd == "quit":
            break
    """
)


def fake_engine(tmp_path: Path, mode: str) -> str:
    script = tmp_path / f"fake_{mode}.sh"
    (tmp_path / "fake.py").write_text(FAKE)
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "fake.py"}" {mode}\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("hang_go", "did not answer a depth=8 search in 2 s"),
        ("hang_uci", "did not start in 2 s"),
        ("illegal", "answered what is not legal UCI"),
        ("no_pv", "answered what is not legal UCI"),
        ("/bin/false", "failed 3 times"),
    ],
)
def test_an_engine_that_hangs_or_lies_is_one_line_within_its_timeout(tmp_path, mode, says):
    path = mode if mode.startswith("/") else fake_engine(tmp_path, mode)
    started = time.monotonic()
    with (
        pytest.raises(EngineFailure, match=says) as caught,
        EnginePool(stockfish_path=path, search_timeout=2, start_timeout=2) as pool,
    ):
        pool.analyse(START)
    assert time.monotonic() - started < 2 + 5
    assert "STOCKFISH_PATH" in str(caught.value) and "\n" not in str(caught.value)


def test_a_stop_request_ends_a_hung_search_within_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_mod, "STOP_GRACE", 1.0)
    with EnginePool(stockfish_path=fake_engine(tmp_path, "hang_go"), search_timeout=600) as pool:
        timer = __import__("threading").Timer(1.0, engine_mod.request_stop)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(EngineStopped):
                pool.analyse(START)
        finally:
            engine_mod.clear_stop()
    assert time.monotonic() - started < 1.0 + 1.0 + 2


def test_a_healthy_engine_gives_the_same_answers_with_the_bounds():
    with EnginePool(limit=EngineLimit(depth=8)) as bounded:
        evals = bounded.analyse(START)
    import chess
    import chess.engine

    with chess.engine.SimpleEngine.popen_uci(engine_mod.find_stockfish()) as plain:
        plain.configure({"Threads": 1, "Hash": 16})
        infos = plain.analyse(chess.Board(START), chess.engine.Limit(depth=8), multipv=5, game=object())
    assert [e.move for e in evals] == [info["pv"][0].uci() for info in infos]


def test_eval_with_a_hung_engine_is_one_line_before_any_work(tmp_path):
    started = time.monotonic()
    done = run("eval", assets.MODEL, "--suites", "policy", "--policy_samples", "5", "--out", str(tmp_path / "ev"),
               env={"STOCKFISH_PATH": fake_engine(tmp_path, "hang_go"), "ROOKWORLD_ENGINE_TIMEOUT": "2"})  # fmt: skip
    one_line(done, "rookworld eval: error:", "did not answer", "STOCKFISH_PATH")
    assert time.monotonic() - started < 60 and not (tmp_path / "ev" / "eval.json").exists()


@pytest.mark.parametrize("mode", ["/bin/false", "hang_uci", "illegal"])
def test_train_with_a_broken_engine_is_one_line_before_launch(tmp_path, mode):
    path = mode if mode.startswith("/") else fake_engine(tmp_path, mode)
    env = {"STOCKFISH_PATH": path, "ROOKWORLD_ENGINE_START_TIMEOUT": "2"}
    done = run("train", "--output_dir", str(tmp_path / "run"), env=env, cwd=tmp_path)
    one_line(done, "rookworld train: error:", f"Stockfish at {path}", "STOCKFISH_PATH")
    assert "accelerate.commands.launch" not in done.stdout
