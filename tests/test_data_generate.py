"""`rookworld data`: generation (real Stockfish, low depth), resume and determinism, loading, audit.

.venv/bin/pytest tests/test_data_generate.py -q
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets / huggingface_hub read it

import gzip
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import chess
import chess.pgn
import pyarrow.parquet as pq
import pytest
from data_fixtures import ARGS, DEPTH, ROOT, rows_of, run_cli, same_files

from rookworld_trl.chess.engine import find_stockfish
from rookworld_trl.chess.environment import KINDS, env_truth
from rookworld_trl.chess.formats import parse_line, position_key, render
from rookworld_trl.data.commands import (
    COLUMNS,
    FEATURES,
    SPLITS,
    AuditConfig,
    audit,
)

pytestmark = (
    pytest.mark.integration
)  # `rookworld data generate` with Stockfish, killed and resumed subprocesses

try:
    find_stockfish()
except RuntimeError:
    pytest.skip("Stockfish is not installed", allow_module_level=True)


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
    assert run_cli([*args, "--no-progress"]) == 1  # a check that finds failures says so in its exit code
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
