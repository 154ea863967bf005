"""`rookworld data`: generation (real Stockfish, low depth), resume and determinism, loading, audit.

.venv/bin/pytest tests/test_data.py -q
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets / huggingface_hub read it

import gzip
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import chess
import chess.pgn
import datasets
import pyarrow.parquet as pq
import pytest

from rookworld_trl.chess.engine import find_stockfish
from rookworld_trl.chess.environment import KINDS, env_truth
from rookworld_trl.chess.formats import parse_line, render
from rookworld_trl.data.commands import (
    COLUMNS,
    FEATURES,
    SPLITS,
    AuditConfig,
    DataSourceError,
    LoadReport,
    audit,
    load_rookworld_dataset,
    main,
)
from rookworld_trl.data.load import position_key
from rookworld_trl.stage import run_stage

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

try:
    find_stockfish()
except RuntimeError:
    pytest.skip("Stockfish is not installed", allow_module_level=True)


def run_cli(args: list[str]) -> int:
    return run_stage("data", main, args)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "out"
    assert run_cli(["generate", "--out", str(out), *ARGS]) == 0
    return out


def rows_of(out: Path) -> dict[str, list[dict]]:
    return {split: pq.read_table(out / f"{split}.parquet").to_pylist() for split in SPLITS}


def same_files(a: Path, b: Path) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in OUTPUTS)


# ------------------------------------------------------------------------------------------ generation


def test_layout_columns_and_labels(generated):
    for split in SPLITS:
        table = pq.read_table(generated / f"{split}.parquet")
        assert tuple(table.column_names) == COLUMNS
        assert table.schema.remove_metadata() == FEATURES.arrow_schema.remove_metadata()
        assert [r["text"] for r in table.to_pylist()] == (generated / f"{split}.txt").read_text().splitlines()
    rows = [r for split in rows_of(generated).values() for r in split]
    policy = [r for r in rows if r["task"] == "P"]
    env = [r for r in rows if r["task"] == "A"]
    assert len(policy) > 50 and len(env) > 50
    for r in policy:
        assert r["text"] == r["prompt"] + r["completion"] and r["prompt"].endswith("M:")
        assert r["best"] == r["moves"][0] and r["limit"] == f"depth={DEPTH}"
        assert r["evals"] == sorted(r["evals"], reverse=True)  # best first
        written = r["completion"].split("E:")[0].split()
        assert sorted(written) == sorted(r["moves"])
        assert r["move"] == "" and r["kind"] == "" and r["reward"] == 0.0
    assert any(r["completion"].split()[0] != r["best"] for r in policy)  # the written order is shuffled
    for r in env:
        truth = env_truth(r["prompt"])
        assert (r["new_fen"], r["reward"], r["terminated"], r["truncated"]) == (
            truth.new_fen,
            truth.reward,
            truth.terminated,
            truth.truncated,
        )
        assert r["kind"] in KINDS and r["history"][-1] == r["move"] and len(r["history"]) <= 10
        assert r["moves"] == [] and r["best"] == ""


def test_dedup_and_splits_share_no_position(generated):
    rows = rows_of(generated)
    positions = {split: {position_key(r["fen"]) for r in split_rows} for split, split_rows in rows.items()}
    assert all(positions[split] for split in SPLITS)
    assert not positions["train"] & positions["validation"]
    assert not positions["train"] & positions["test"]
    assert not positions["validation"] & positions["test"]
    flat = [r for split_rows in rows.values() for r in split_rows]
    policy_keys = [r["fen"] for r in flat if r["task"] == "P"]
    env_keys = [(r["fen"], r["move"]) for r in flat if r["task"] == "A"]
    assert len(policy_keys) == len(set(policy_keys)) and len(env_keys) == len(set(env_keys))


def test_stats_count_what_was_written(generated):
    stats = json.loads((generated / "stats.json").read_text())
    rows = rows_of(generated)
    for split in SPLITS:
        assert stats["rows"][split] == {
            t: sum(r["task"] == t for r in rows[split]) for t in "AP" if rows[split]
        }
    env = [r for split_rows in rows.values() for r in split_rows if r["task"] == "A"]
    assert sum(stats["kinds"].values()) == len(env)
    assert stats["kinds"]["illegal"] == sum(r["kind"] == "illegal" for r in env) > 0
    assert stats["illegal_fraction"] == round(stats["kinds"]["illegal"] / len(env), 4)
    # special transitions are mined on purpose: the 75-move edge appears in this small sample
    assert stats["kinds"].get("75_move", 0) > 0 and stats["kinds"].get("capture", 0) > 0
    assert stats["settings"]["limit"] == f"depth={DEPTH}" and stats["settings"]["seed"] == 0
    assert stats["sources"]["selfplay"]["games"] == 3 and stats["sources"]["random"]["games"] == 3
    assert "Stockfish" in stats["settings"]["stockfish"]


def test_same_seed_same_files_other_seed_other_files(generated, tmp_path):
    again = tmp_path / "again"
    assert run_cli(["generate", "--out", str(again), *ARGS, "--workers", "2"]) == 0
    assert same_files(generated, again)
    other = tmp_path / "other"
    assert run_cli(["generate", "--out", str(other), *ARGS, "--seed", "1"]) == 0
    assert (other / "train.txt").read_text() != (generated / "train.txt").read_text()


def test_resume_after_lost_shards_gives_the_same_files(generated, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(generated / "shards", out / "shards")
    for name in ["selfplay-00001", "random-00002"]:  # as if the run had stopped before these
        (out / "shards" / f"{name}.parquet").unlink()
    (out / "shards" / "random-00000.parquet.tmp").write_text("half a file from a killed run")
    assert run_cli(["generate", "--out", str(out), *ARGS]) == 0
    assert same_files(generated, out)


def test_killed_run_resumes_to_the_same_files(generated, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rookworld_trl.data.commands", "generate", "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "shards").glob("*.parquet")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "stats.json").exists(), "the run finished before it could be killed"
    assert run_cli(["generate", "--out", str(out), *ARGS]) == 0
    assert same_files(generated, out)


def test_resume_with_other_settings_is_refused(generated, tmp_path, capsys):
    out = tmp_path / "mixed"
    shutil.copytree(generated / "shards", out / "shards")
    assert run_cli(["generate", "--out", str(out), *ARGS, "--illegal-fraction", "0.5"]) == 2
    assert "changed: illegal_fraction" in capsys.readouterr().err


def test_bad_generate_options_are_clear(tmp_path, capsys):
    assert run_cli(["generate", "--out", str(tmp_path / "x"), "--depth", "2"]) == 2
    assert "nothing to generate" in capsys.readouterr().err
    assert run_cli(["generate", "--out", str(tmp_path / "x"), "--pgn", str(tmp_path / "missing.pgn")]) == 2
    assert "--pgn: no such file" in capsys.readouterr().err


def write_pgn(path: Path) -> None:
    """Three usable games (mate, en passant, promotion), one with an illegal move, one Chess960 game."""
    games = [
        ["f2f3", "e7e5", "g2g4", "d8h4"],
        ["e2e4", "a7a6", "e4e5", "d7d5", "e5d6", "c7d6"],
        ["a2a4", "b7b5", "a4b5", "g8f6", "b5b6", "f6g8", "b6a7", "g8f6", "a7b8q"],
    ]
    texts = []
    for moves in games:
        game = chess.pgn.Game.from_board(_board(moves))
        texts.append(str(game))
    texts.append('[Event "broken"]\n\n1. e4 e5 2. Ke3 *')
    texts.append(
        '[Event "960"]\n[Variant "Chess960"]\n[FEN "bbqnnrkr/pppppppp/8/8/8/8/PPPPPPPP/BBQNNRKR w KQkq - 0 1"]\n\n1. e4 *'
    )
    path.write_text("\n\n".join(texts) + "\n")


def _board(moves):
    board = chess.Board()
    for m in moves:
        board.push_uci(m)
    return board


def test_pgn_source(tmp_path):
    pgn = tmp_path / "games.pgn"
    write_pgn(pgn)
    out = tmp_path / "pgn"
    args = [
        "--pgn",
        str(pgn),
        "--depth",
        "2",
        "--games-per-chunk",
        "2",
        "--plies-per-game",
        "20",
        "--no-progress",
    ]
    assert run_cli(["generate", "--out", str(out), *args]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"]["pgn"]["games"] == 3
    assert (
        stats["sources"]["pgn"]["skipped_pgn_error"] == 1 and stats["sources"]["pgn"]["skipped_variant"] == 1
    )
    assert stats["sources"]["pgn"]["end_checkmate"] == 1
    for kind in ("mate", "en_passant", "promotion"):
        assert stats["kinds"].get(kind, 0) > 0, kind
    # a gzip copy of the same PGN gives the same samples
    gz = tmp_path / "games.pgn.gz"
    gz.write_bytes(gzip.compress(pgn.read_bytes()))
    out_gz = tmp_path / "pgn_gz"
    assert run_cli(["generate", "--out", str(out_gz), *[str(gz) if a == str(pgn) else a for a in args]]) == 0
    assert (out / "train.txt").read_text() == (out_gz / "train.txt").read_text()


# ------------------------------------------------------------------------------------------------ audit


def test_generated_sample_passes_the_audit(generated, tmp_path):
    lines = tmp_path / "all.txt"
    lines.write_text("".join((generated / f"{s}.txt").read_text() for s in SPLITS))
    n = len(lines.read_text().splitlines())
    assert n > 200
    failures = tmp_path / "failures.txt"
    report = audit(AuditConfig(str(lines), depth=DEPTH, failures=str(failures), progress=False))
    assert report.lines == n and report.failed == 0, report.summary()
    assert failures.read_text() == ""
    assert set(report.groups) == {"P w", "P b", "A w", "A b"}


def corrupt(line: str, how: str) -> str:
    """The line with one label changed, written exactly as formats renders it (so only that field is wrong)."""
    sample = parse_line(line)
    if how == "best":  # another listed move than the engine's best
        return render(replace(sample, best=next(m for m in sample.moves if m != sample.best)))
    if how == "evals":
        return render(replace(sample, evals=(sample.evals[0] + 5.0, *sample.evals[1:])))
    if how == "reward":
        return render(replace(sample, reward=0.5))
    return render(replace(sample, new_fen=sample.fen))  # the move did not happen


def test_audit_finds_wrong_labels(generated, tmp_path):
    rows = rows_of(generated)["train"]
    # the best move clearly ahead of the second, so naming the second is wrong at any tolerance
    policy = [
        r["text"]
        for r in rows
        if r["task"] == "P" and len(r["moves"]) > 1 and r["evals"][0] - r["evals"][1] > 0.1
    ]
    env = [r["text"] for r in rows if r["task"] == "A" and r["kind"] == "normal"]
    bad = [corrupt(policy[0], "best"), corrupt(policy[1], "evals"), corrupt(env[0], "reward")]
    bad += [corrupt(env[1], "new_fen"), "A: not a fen+e2e4+e2e4+x+0.001+0+0", ""]
    source = tmp_path / "mixed.txt"
    source.write_text("\n".join([policy[2], env[2], *bad]) + "\n")
    failures, report_json = tmp_path / "failures.txt", tmp_path / "report.json"
    args = [
        "audit",
        str(source),
        "--depth",
        str(DEPTH),
        "--failures",
        str(failures),
        "--report",
        str(report_json),
    ]
    assert run_cli([*args, "--no-progress"]) == 0
    report = json.loads(report_json.read_text())
    assert report["lines"] == 8 and report["failed"] == 6
    expected = {"P: best", "P: evals", "A: reward", "A: new_fen", "A: unparseable", "?: unparseable"}
    assert set(report["fields"]) == expected
    assert report["fields"]["A: unparseable"] == {"count": 1, "rate": 1 / 4}  # over all A: lines
    assert failures.read_text().splitlines() == bad
    assert [e["line"] for e in report["examples"]] == [3, 4, 5, 6, 7, 8]


def test_audit_tolerances(generated, tmp_path):
    rows = rows_of(generated)["train"]
    sample = parse_line(next(r["text"] for r in rows if r["task"] == "P" and abs(r["evals"][0]) < 50))
    source = tmp_path / "one.txt"
    source.write_text(
        render(replace(sample, evals=(round(sample.evals[0] + 0.2, 2), *sample.evals[1:]))) + "\n"
    )
    strict = audit(AuditConfig(str(source), depth=DEPTH, eval_tolerance=0.1, progress=False))
    loose = audit(AuditConfig(str(source), depth=DEPTH, eval_tolerance=0.3, progress=False))
    assert strict.field_counts() == {"P: evals": 1} and loose.failed == 0


# ---------------------------------------------------------------------------------------------- loading


def test_load_our_dir_and_files(generated, tmp_path):
    ds = load_rookworld_dataset(generated, split="validation")
    expected = pq.read_table(generated / "validation.parquet").to_pylist()
    assert isinstance(ds, datasets.Dataset) and ds.features == FEATURES and ds.to_list() == expected
    assert load_rookworld_dataset(generated / "validation.parquet").to_list() == expected
    streamed = load_rookworld_dataset(generated, split="validation", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset) and list(streamed) == expected
    jsonl = tmp_path / "ours.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in expected))
    assert load_rookworld_dataset(jsonl).to_list() == expected
    only_text = tmp_path / "text.jsonl"
    only_text.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in expected))
    assert [r["text"] for r in load_rookworld_dataset(only_text).to_list()] == [r["text"] for r in expected]


def test_raw_text_fills_the_columns(generated):
    expected = pq.read_table(generated / "train.parquet").to_pylist()
    loaded = load_rookworld_dataset(generated / "train.txt").to_list()
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        if want["task"] == "A":
            assert got == want
        else:  # written order and no known engine limit; the same labels
            assert got["limit"] == "" and got["best"] == want["best"]
            assert dict(zip(got["moves"], got["evals"], strict=True)) == dict(
                zip(want["moves"], want["evals"], strict=True)
            )
            assert {k: got[k] for k in ("text", "prompt", "completion", "fen")} == {
                k: want[k] for k in ("text", "prompt", "completion", "fen")
            }


def test_malformed_lines_are_counted_by_reason(generated, tmp_path):
    good = (generated / "train.txt").read_text().splitlines()[:6]
    env_line = next(line for line in good if line.startswith("A:"))
    lines = [
        good[0],
        "garbage",  # 2
        "",  # 3
        env_line.removeprefix("A: "),  # an A: line without its prefix is fine
        env_line.rsplit("+", 1)[0] + "+7",  # 5: bad truncated flag
        "garbage again",  # 6
        "P: " + "x" * 90 + "M: e2e4 E: 0.3 B: e2e4",  # 7
        "P: " + "8/8/8/8/8/8/8/8 w - - 0 1".ljust(90) + "M: e2e4 E: 0.3 B: e2e4",  # 8: no kings
        *good[1:],
    ]
    path = tmp_path / "raw.txt.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    report = LoadReport(str(path))
    ds = load_rookworld_dataset(path, report=report)
    assert len(ds) == 7 == report.rows and report.lines == len(lines)
    garbage = "line: starts with neither 'P:' nor 'A:' and is not an A: line without prefix"
    no_kings = "P: fen: invalid position …: no white king, no black king, empty"
    assert report.first_lines == {
        garbage: [2, 6],
        "empty line": [3],
        "A: truncated: not 0/1: …": [5],
        "P: fen: expected 6 FEN fields, got …": [7],
        no_kings: [8],
    }  # each reason with its detail, the FEN it cites left out
    assert dict(report.malformed) == {reason: len(at) for reason, at in report.first_lines.items()}
    assert f"{no_kings}  (first at {path}:8)" in report.summary()


def test_mix_ratio(generated):
    tasks = list(load_rookworld_dataset(generated)["task"])
    n_policy, n_env = tasks.count("P"), tasks.count("A")
    for ratio in (0.0, 0.2, 0.5, 1.0):
        mixed = list(load_rookworld_dataset(generated, mix_env_ratio=ratio, seed=3)["task"])
        env = mixed.count("A")
        assert abs(env - ratio * len(mixed)) < 1.0, (ratio, env, len(mixed))
        assert env == n_env or len(mixed) - env == n_policy  # as many rows as the ratio allows
    texts = list(load_rookworld_dataset(generated, mix_env_ratio=0.2, seed=3)["text"])
    assert texts == list(load_rookworld_dataset(generated, mix_env_ratio=0.2, seed=3)["text"])
    assert texts != list(load_rookworld_dataset(generated, mix_env_ratio=0.2, seed=4)["text"])
    assert (
        list(load_rookworld_dataset(generated, mix_env_ratio=0.2, seed=3, max_samples=10)["text"])
        == texts[:10]
    )
    with pytest.raises(ValueError, match="mix_env_ratio must be in"):
        load_rookworld_dataset(generated, mix_env_ratio=1.5)


def test_streaming_mix_of_raw_text(generated):
    report = LoadReport("train.txt")
    stream = load_rookworld_dataset(
        generated / "train.txt", streaming=True, mix_env_ratio=0.3, seed=1, report=report
    )
    rows = list(stream.take(100))
    env = sum(r["task"] == "A" for r in rows)
    assert len(rows) == 100 and 15 <= env <= 45
    assert [r["text"] for r in rows] == [
        r["text"]
        for r in load_rookworld_dataset(
            generated / "train.txt", streaming=True, mix_env_ratio=0.3, seed=1
        ).take(100)
    ]
    assert not report.malformed


def test_hub_offline_error_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataSourceError) as error:
        load_rookworld_dataset("jrahn/rookworld_7m")
    message = str(error.value)
    assert "jrahn/rookworld_7m" in message and "hub" in message and "--local-dir" in message
    with pytest.raises(DataSourceError, match="no such file or directory"):
        load_rookworld_dataset("missing/dir/file.txt")


def test_load_cli_converts_to_our_layout(generated, tmp_path, capsys):
    raw = tmp_path / "raw.txt"
    raw.write_text((generated / "train.txt").read_text() + "garbage\n")
    out = tmp_path / "converted"
    assert (
        run_cli(
            ["load", str(raw), "--out", str(out), "--validation-fraction", "0.1", "--test-fraction", "0.1"]
        )
        == 0
    )
    assert "1 malformed lines skipped" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["load_report"]["malformed"] == {
        "line: starts with neither 'P:' nor 'A:' and is not an A: line without prefix": 1
    }
    converted = [r for s in SPLITS for r in pq.read_table(out / f"{s}.parquet").to_pylist()]
    assert sorted(r["text"] for r in converted) == sorted((generated / "train.txt").read_text().splitlines())
    # the same hash split as generation: train positions stay in train
    assert {r["text"] for r in converted} == {
        r["text"] for r in pq.read_table(out / "train.parquet").to_pylist()
    }
    assert run_cli(["load", str(raw)]) == 0
    assert "A: kinds:" in capsys.readouterr().out
    assert run_cli(["load", str(tmp_path / "nope.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_nan_free_numbers(generated):
    rows = [r for split in rows_of(generated).values() for r in split]
    assert all(math.isfinite(r["reward"]) and all(math.isfinite(e) for e in r["evals"]) for r in rows)
