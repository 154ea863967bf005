"""Issue 71's cases, run as a careless or hostile user would and as a flaky machine behaves: colliding writers,
hung or lying engines, hostile files, nonsense settings. Each asserts one line (or a correct recovery), the exit
status and that nothing is lost.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_fault_cases.py            # default tier, ~1-2 min
    PYTHONPATH=$PWD .venv/bin/python -m pytest -q -m slow tests/test_fault_cases.py    # + two runs, kills (~5 min)

Fake engines are small Python scripts written in tmp_path; the real Stockfish answers everything else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rookworld_trl import assets
from rookworld_trl.chess import engine as engine_mod
from rookworld_trl.chess import engine_calls
from rookworld_trl.chess.engine import EngineFailure, EngineLimit, EnginePool, EngineStopped
from rookworld_trl.common import locks
from rookworld_trl.common.errors import UserError
from rookworld_trl.data import layout
from rookworld_trl.data.commands import convert
from rookworld_trl.data.errors import DataSourceError
from rookworld_trl.data.load import load_rookworld_dataset

ROOT = Path(__file__).resolve().parent.parent
START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
CLI = [sys.executable, "-m", "rookworld_trl.stages.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(*argv: str, env: dict | None = None, timeout: int = 300, cwd: Path | None = None):
    return subprocess.run([*CLI, *argv], env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT)  # fmt: skip


def one_line(done, prefix: str, *says: str) -> str:
    """The one stderr line of a refusal: exit 2, no traceback, every `says` in it."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, done.stderr[-2000:]
    for said in says:
        assert said in errors[0], (said, errors[0])
    assert len(errors[0]) < 2500
    return errors[0]


def lines_of(n: int, skip: int = 0) -> list[str]:
    """n P:/A: lines of the embedded data."""
    table = pq.read_table(Path(assets.DATA) / "train.parquet", columns=["text"])
    return table.column("text").to_pylist()[skip : skip + n]


def text_file(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from rookworld_trl.common.locks import hold
    hold(sys.argv[1], "a test holder")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def hold_elsewhere(folder: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process holding folder's lock (as a live run or load would) until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], env=ENV,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------ 1. datasets written as a whole, one writer


@pytest.fixture
def sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    return text_file(tmp_path / "a.txt", lines_of(400)), text_file(
        tmp_path / "b.txt", lines_of(150, skip=400)
    )


def counts(out: Path) -> dict[str, int]:
    return {s: pq.ParquetFile(out / f"{s}.parquet").metadata.num_rows for s in layout.SPLITS}


def convert_to(source: str, out: Path) -> dict:
    return convert(source, str(out), "train", 0.1, 0.1, num_proc=1)


def test_load_over_a_dataset_says_what_it_replaces_and_a_stopped_one_loses_nothing(sources, tmp_path, capsys,
                                                                                     monkeypatch):  # fmt: skip
    a, b = sources
    out = tmp_path / "out"
    convert_to(a, out)
    before, stats_before = counts(out), (out / "stats.json").read_text()

    def stopped(self, table):  # Ctrl-C halfway through writing the new splits
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(layout.LayoutWriter, "add_table", stopped)
        with pytest.raises(KeyboardInterrupt):
            convert_to(b, out)
    assert "holds a dataset (train" in capsys.readouterr().out  # said what the load would replace
    assert counts(out) == before and (out / "stats.json").read_text() == stats_before
    assert not list(out.glob(".incoming-*"))  # no staging left behind
    assert len(load_rookworld_dataset(str(out))) == before["train"]
    convert_to(b, out)  # the load run again completes
    assert sum(counts(out).values()) == 150


def test_a_kill_during_the_commit_leaves_a_folder_that_is_refused_until_rerun(sources, tmp_path, monkeypatch):
    a, b = sources
    out = tmp_path / "out"
    convert_to(a, out)
    real, moved = os.replace, []

    def killed(src, dst):  # the process dies after the first two renames of the commit
        if Path(dst).parent == out and Path(dst).name in layout.LAYOUT_FILES:
            if len(moved) == 2:
                raise SystemExit(137)
            moved.append(dst)
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed)
        with pytest.raises(SystemExit):
            convert_to(b, out)
    with pytest.raises(DataSourceError, match=r"half-written.*run that command again, or remove the folder"):
        load_rookworld_dataset(str(out))
    convert_to(b, out)  # recovery: the same command again
    assert sum(counts(out).values()) == 150 and not (out / layout.INCOMPLETE).exists()


def test_a_folder_mixed_by_an_old_writer_is_refused(sources, tmp_path):
    a, b = sources
    out, other = tmp_path / "out", tmp_path / "other"
    convert_to(a, out)
    convert_to(b, other)
    os.replace(other / "train.parquet", out / "train.parquet")  # what 5176fec's close() could leave
    with pytest.raises(DataSourceError, match=r"mixes files of two writes: train.parquet holds \d+ rows, its "
                                              r"stats.json says \d+"):  # fmt: skip
        load_rookworld_dataset(str(out))


def test_a_second_load_into_a_folder_in_use_is_refused_naming_the_pid(sources, tmp_path):
    a, _ = sources
    out = tmp_path / "out"
    holder = hold_elsewhere(out)
    try:
        with pytest.raises(UserError, match=rf"{out} is in use by PID {holder.pid} on .*kill {holder.pid}"):
            convert_to(a, out)
        assert not (out / "train.parquet").exists()
    finally:
        holder.kill()
        holder.wait()
    convert_to(a, out)  # its holder killed -9: the stale lock is taken over


def test_a_stale_lock_is_taken_over_with_one_line(tmp_path, capfd):
    holder = hold_elsewhere(tmp_path / "run")
    assert locks.holder(tmp_path / "run")["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert locks.holder(tmp_path / "run") is None
    with locks.holding(tmp_path / "run", "test"):
        assert f"stale lock of PID {holder.pid}" in capfd.readouterr().err
    with locks.holding(tmp_path / "run", "test"):  # released cleanly: nothing stale to say
        assert "stale" not in capfd.readouterr().err


# ----------------------------------------------------------------------- 4, 8. hostile and mixed data files


def test_a_folder_of_mixed_formats_is_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    text_file(folder / "a.txt", lines_of(80))
    (folder / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines_of(60, skip=80)))
    with pytest.raises(DataSourceError, match=r"several formats \(1 JSON file, 1 text file\)"):
        load_rookworld_dataset(str(folder))


def test_hostile_data_lines_are_one_line(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text(json.dumps({"text": lines_of(1)[0]}) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n")
    one_line(run("data", "load", str(deep)), "rookworld data: error:", "deep.jsonl:2", "nested too deep")
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"text": pa.array([1, 2, 3], pa.int64())}), typed)
    with pytest.raises(DataSourceError, match="its 'text' column holds int64 values, not text"):
        load_rookworld_dataset(str(typed))


# ------------------------------------------------------------------------------------------ 3. engines


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
    monkeypatch.setattr(engine_calls, "STOP_GRACE", 1.0)
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


# ------------------------------------------------------------- 5, 6, 7, 8, 9. settings, recipes, models, report


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--temperature", "0"], "temperature must be > 0"),
        (["--temperature", "-1"], "temperature must be > 0"),
        (["--learning_rate", "inf"], "learning_rate must be a finite number"),
        (["--beta", "nan"], "beta must be a finite number"),
        (["--trust_remote_code", "true"], "trust_remote_code is refused"),
        (["--output_dir", ""], "output_dir is empty"),
    ],
)
def test_nonsense_settings_are_refused_before_launch(tmp_path, argv, says):
    argv = argv if "--output_dir" in argv else [*argv, "--output_dir", str(tmp_path / "run")]
    done = run("train", *argv, cwd=tmp_path)
    one_line(done, "rookworld train: error:", says)
    assert "accelerate.commands.launch" not in done.stdout and not (tmp_path / "run").exists()


def bomb(levels: int) -> str:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text + f"learning_rate: *a{levels - 1}\n"


@pytest.mark.parametrize(
    ("content", "command", "says"),
    [
        (os.urandom(300), ["train"], "is not UTF-8 text"),
        ("learning_rate: 1e-5\nmodel_name_or_path: caf\xe9\n".encode("latin-1"), ["sft"], "not UTF-8 text"),
        (
            "learning_rate: 1e-5\nmodel_name_or_path: caf\xe9\n".encode("latin-1"),
            ["train", "--help"],
            "not UTF-8",
        ),
        (bomb(9).encode(), ["train"], "aliases (*name) expand to more than"),
        (b"a" * (2 << 20), ["train"], "is 2.1 MB; a recipe is a few kB"),
    ],
)
def test_hostile_recipes_are_one_line(tmp_path, content, command, says):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    started = time.monotonic()
    done = run(*command[:1], "--config", str(recipe), *command[1:], cwd=tmp_path)
    one_line(done, f"rookworld {command[0]}: error:", says)
    assert time.monotonic() - started < 60


def test_an_echoed_value_is_cut_to_a_readable_length(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: [" + ", ".join(["1"] * 5000) + "]\n")
    line = one_line(
        run("train", "--config", str(recipe), cwd=tmp_path), "rookworld train: error:", "more characters"
    )
    assert len(line) < 400


def damaged_model(tmp_path: Path, how: str) -> str:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / how
    shutil.copytree(assets.MODEL, model)
    if how == "nan":
        weights = {
            k: torch.full_like(v, float("nan")) for k, v in load_file(model / "model.safetensors").items()
        }
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    elif how == "pickle_only":
        (model / "model.safetensors").unlink()
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04not unpickled")
    elif how == "list_config":
        (model / "config.json").write_text("[1, 2]")
    elif how == "huge_config":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "n_layer": 100_000}))
    return str(model)


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("nan", "hold NaN or Inf values"),
        ("pickle_only", "only as pytorch_model.bin, a pickle, which is not loaded"),
        ("list_config", "holds a JSON list, not an object"),
        ("huge_config", "describes a model of ~"),
    ],
)
def test_damaged_or_hostile_models_are_one_line(tmp_path, how, says):
    from rookworld_trl.model.loading import load_model_and_tokenizer
    from rookworld_trl.model.source import ModelLoadError

    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=says.replace("(", r"\(").replace("~", "~")):
        load_model_and_tokenizer(damaged_model(tmp_path, how))
    assert time.monotonic() - started < 30


def test_report_on_hostile_metrics_says_what_it_dropped(tmp_path, capsys):
    from rookworld_trl.stages.eval.charts import report

    (tmp_path / "metrics.jsonl").write_text(
        '[1, 2]\n"x"\n{"step": "one", "loss": 0.5}\n{"step": 1, "loss": NaN, "reward": 1e308}\n'
        '{"step": 2, "loss": 0.4, "reward": -1e308}\n{"step": 3, "loss": 0.3, "reward": 0.5}\n'
    )
    written = report(str(tmp_path))
    assert os.path.isfile(written["summary"])
    assert "dropped 3 unreadable line(s) (line 1, 2, 3" in capsys.readouterr().err


def test_eval_out_in_a_place_that_cannot_be_written_is_refused_first(tmp_path):
    from rookworld_trl.stages.eval.outputs import check_out_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_out_dir(str(blocker))
    with pytest.raises(ValueError, match="cannot write in"):
        check_out_dir(str(blocker / "below"))


# ----------------------------------------------------------------- 2. run folders: one run, dies with its front


def test_train_on_a_folder_in_use_is_refused_naming_the_pid(tmp_path):
    holder = hold_elsewhere(tmp_path / "run")
    try:
        done = run("train", "--output_dir", str(tmp_path / "run"), cwd=tmp_path)
        one_line(done, "rookworld train: error:", f"in use by PID {holder.pid}", f"kill {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


SMALL = ["--max_steps", "40", "--save_steps", "1", "--eval_samples", "0", "--eval_every_steps", "0",
         "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "64",
         "--replay_batch_size", "4", "--report_to", "none", "--log_completions", "false"]  # fmt: skip


def start_train(out: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", *SMALL, "--output_dir", str(out)], env={**ENV, **(env or {})},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def stage_pids(out: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"rookworld_trl.stages.grpo .*{out}"], capture_output=True, text=True
    )
    return [int(p) for p in found.stdout.split()]


@pytest.mark.slow
def test_two_runs_on_one_folder_and_a_front_killed_with_sigkill(tmp_path):
    """The second `rookworld train` is refused naming the live stage; kill -9 of the first front process stops
    its stage (it saves its step, then exits): nothing is left with parent PID 1, and the run resumes."""
    out = tmp_path / "run"
    front = start_train(out, tmp_path / "first.log")
    try:
        assert wait_for(lambda: (out / "checkpoint-1").is_dir(), 600), (tmp_path / "first.log").read_text()[
            -3000:
        ]
        stage = locks.holder(out)["pid"]
        done = run("train", *SMALL, "--output_dir", str(out))
        one_line(done, "rookworld train: error:", f"in use by PID {stage}")
        front.send_signal(signal.SIGKILL)
        front.wait()
        assert wait_for(lambda: not stage_pids(out), 240), "the stage outlived its front process"
    finally:
        front.kill()
        for pid in stage_pids(out):
            os.kill(pid, signal.SIGKILL)
    assert locks.holder(out) is None
    text = (tmp_path / "first.log").read_text()
    assert "SIGTERM: finishing this step" in text and "Traceback" not in text


@pytest.mark.slow
def test_sigterm_is_honoured_within_seconds_while_the_engine_hangs(tmp_path):
    """Stockfish answers the preflight's search and two more, then never again; SIGTERM to `rookworld train`
    ends the run within STOP_GRACE and a few seconds (exit 143), without a traceback."""
    proxy = tmp_path / "proxy.py"
    proxy.write_text(
        textwrap.dedent(f"""
        import subprocess, sys, threading
        sf = subprocess.Popen([{engine_mod.find_stockfish()!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1)
        def pump():
            for line in sf.stdout:
                sys.stdout.write(line); sys.stdout.flush()
        threading.Thread(target=pump, daemon=True).start()
        searches = 0
        for line in sys.stdin:
            if line.startswith("go"):
                searches += 1
                if searches > 3:
                    continue
            sf.stdin.write(line); sf.stdin.flush()
    """)
    )
    wrapper = tmp_path / "stockfish.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{proxy}"\n')
    wrapper.chmod(0o755)
    log = tmp_path / "train.log"
    front = start_train(
        tmp_path / "run", log, {"STOCKFISH_PATH": str(wrapper), "ROOKWORLD_ENGINE_TIMEOUT": "600"}
    )
    try:
        assert wait_for(lambda: "starting from scratch" in log.read_text(), 600), log.read_text()[-3000:]
        time.sleep(15)  # the step's rewards are waiting on the silent engine
        front.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = front.wait(timeout=120)
        took = time.monotonic() - started
    finally:
        front.kill()
    assert code == 143 and took < engine_mod.STOP_GRACE + 20, (code, took, log.read_text()[-2000:])
    assert "Traceback" not in log.read_text()
