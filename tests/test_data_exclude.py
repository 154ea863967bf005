"""Decontamination (rookworld_trl/data/files.py): the positions of hand-written exclude files of each kind (FEN
list, EPD, Lichess puzzle CSV, BIG-bench checkmate_in_one task.json), matched on the first four FEN fields, and
the rows they drop from data."""

from __future__ import annotations

import dataclasses
import json

import chess
import datasets
import pytest
from test_data_puzzles import BACK_RANK, EPD, HEADER, PUZZLES, SCHOLAR, after_first, write

from rookworld_trl.data.files import DataSourceError, Exclusion, fen4, positions_kind
from rookworld_trl.data.load import exclude_rows

SCHOLAR_MATE = after_first(SCHOLAR, "g8f6")  # the position to solve, White to mate with Qxf7#
BACK_RANK_MATE = after_first(BACK_RANK, "g8h8")
FOOLS_MATE = "rnbqkbnr/pppp1ppp/8/4p3/6P1/5P2/PPPPP2P/RNBQKBNR b KQkq - 0 2"
BIGBENCH = {
    "examples": [
        {"input": "1. e4 e5 2. Bc4 Nc6 3. Qh5 Nf6", "target": "Qxf7#"},
        {"input": "1. f3 e5 2. g4", "target": "Qh4#"},
    ]
}


def keys(*fens: str) -> frozenset[str]:
    return frozenset(" ".join(fen.split()[:4]) for fen in fens)


def test_each_kind_gives_its_positions(tmp_path):
    fens = write(
        tmp_path / "fens.txt", ["# held out", SCHOLAR_MATE.replace(" 4 4", " 40 80"), "", FOOLS_MATE]
    )
    (tmp_path / "task.json").write_text(json.dumps(BIGBENCH))
    assert Exclusion.of(fens).keys == keys(SCHOLAR_MATE, FOOLS_MATE)  # other clocks: the same position
    assert Exclusion.of(write(tmp_path / "suite.epd", EPD)).keys == keys(SCHOLAR_MATE, BACK_RANK_MATE)
    assert Exclusion.of(write(tmp_path / "p.csv", [HEADER, *PUZZLES[:2]])).keys == keys(
        SCHOLAR_MATE, BACK_RANK_MATE
    )
    assert Exclusion.of(tmp_path / "task.json").keys == keys(SCHOLAR_MATE, FOOLS_MATE)
    assert [positions_kind(tmp_path / n) for n in ("fens.txt", "suite.epd", "p.csv", "task.json")] == [
        "fens", "epd", "lichess", "bigbench"
    ]  # fmt: skip
    both = Exclusion.of([fens, tmp_path / "p.csv"])
    assert both.keys == keys(SCHOLAR_MATE, FOOLS_MATE, BACK_RANK_MATE) and len(both.files) == 2


def test_a_data_file_excludes_its_positions(tmp_path):
    """A split of our layout (its `fen` column) and a JSON Lines file of P:/A: lines: every row's position."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rookworld_trl.chess.formats import env_prompt, policy_prompt

    pq.write_table(pa.table({"fen": [SCHOLAR_MATE, FOOLS_MATE]}), tmp_path / "test.parquet")
    rows = [{"text": policy_prompt(SCHOLAR_MATE) + " e2e4 E: 0.1 B: e2e4"},
            {"prompt": env_prompt(FOOLS_MATE, "d8h4", ["d8h4"]), "completion": "x+1+1+0"}]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [positions_kind(tmp_path / n) for n in ("test.parquet", "rows.jsonl")] == ["data", "data"]
    assert Exclusion.of(tmp_path / "test.parquet").keys == keys(SCHOLAR_MATE, FOOLS_MATE)
    assert Exclusion.of(tmp_path / "rows.jsonl").keys == keys(SCHOLAR_MATE, FOOLS_MATE)


def test_positions_match_as_python_chess_writes_them(tmp_path):
    # after 1. e4 no capture en passant is possible: python-chess writes no square, another tool may write e3
    written = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1"
    exclusion = Exclusion.of(write(tmp_path / "fens.txt", [written]))
    board = chess.Board()
    board.push_uci("e2e4")
    assert exclusion.holds(board.fen()) and fen4(written) == fen4(board.fen())


def test_filter_drops_rows_on_excluded_positions(tmp_path):
    exclusion = Exclusion.of(write(tmp_path / "fens.txt", [SCHOLAR_MATE]))
    other = chess.Board().fen()
    rows = [
        {"task": "P", "fen": SCHOLAR_MATE.replace(" 4 4", " 9 9")},
        {"task": "P", "fen": other},
        {"task": "A", "fen": SCHOLAR_MATE},
    ]
    kept, report = exclude_rows(datasets.Dataset.from_list(rows), exclusion)
    assert kept["fen"] == [other] and report.dropped == {"P": 1, "A": 1} and report.seen == 3
    assert report.one_line().endswith("1 position; dropped 2 of 3 rows (A: 1, P: 1) on one of them")
    streamed, counted = exclude_rows(datasets.Dataset.from_list(rows).to_iterable_dataset(), exclusion)
    assert counted.seen == 0  # a stream is counted as it is read, in its own report
    assert [r["fen"] for r in streamed] == [other] and counted.dropped == {"P": 1, "A": 1}
    assert report.seen == 3  # the first use's report is its own: the keys carry no counts
    assert not Exclusion.of(None) and exclude_rows(rows, Exclusion.of(None)) == (rows, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exclusion.keys = frozenset()
    with pytest.raises(DataSourceError, match=r"dropped 1 of 1 rows .*: mine has no row left to train on"):
        exclude_rows(datasets.Dataset.from_list(rows[:1]), exclusion, "mine")


def test_a_parquet_exclude_file_without_fens_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["P: x"]}), tmp_path / "rows.parquet")
    with pytest.raises(
        DataSourceError, match=r"rows\.parquet: a Parquet file of positions needs a `fen` column"
    ):
        Exclusion.of(tmp_path / "rows.parquet")


def test_a_bad_exclude_file_is_one_line(tmp_path):
    path = write(tmp_path / "fens.txt", [FOOLS_MATE, "e2e4 e7e5"])
    with pytest.raises(
        DataSourceError, match=r"fens\.txt:2: 'e2e4 e7e5' has 2 field\(s\), not a FEN; .*fix or delete"
    ):
        Exclusion.of(path)
    write(path, [FOOLS_MATE, "8/8/8/8/8/8/8/8 w - -"])
    with pytest.raises(DataSourceError, match=r"fens\.txt:2: FEN .* is no legal position"):
        Exclusion.of(path)
    with pytest.raises(DataSourceError, match="no such file"):
        Exclusion.of(tmp_path / "missing.txt")
    (tmp_path / "task.json").write_text(json.dumps({"examples": [{"input": "1. e4 e5", "target": "Nf3"}]}))
    with pytest.raises(ValueError, match="does not mate"):
        Exclusion.of(tmp_path / "task.json")


def test_generate_reassembles_without_excluded_positions(generated, tmp_path, capsys):
    import shutil

    from data_fixtures import ARGS, rows_of, run_cli

    out = tmp_path / "out"
    shutil.copytree(generated, out)  # the shards are done: a re-run with --exclude only reassembles them
    before = [row for rows in rows_of(out).values() for row in rows]
    policy = [row["fen"] for row in before if row["task"] == "P"]
    held_out = write(tmp_path / "held_out.txt", policy[:3])
    assert run_cli(["generate", "--out", str(out), *ARGS, "--exclude", str(held_out)]) == 0
    after = [row for rows in rows_of(out).values() for row in rows]
    gone = keys(*policy[:3])
    dropped = [row for row in before if fen4(row["fen"]) in gone]
    assert not any(fen4(row["fen"]) in gone for row in after) and len(after) == len(before) - len(dropped)
    # counted in the shards' rows, before duplicates are removed: at least the distinct rows that went
    stats = json.loads((out / "stats.json").read_text())["excluded"]
    assert stats["positions"] == 3 and sum(stats["rows_dropped"].values()) >= len(dropped) >= 3
    said = f"dropped {sum(stats['rows_dropped'].values())} of {stats['rows_seen']} rows"
    assert said in capsys.readouterr().out


def test_eval_counts_its_items_in_the_training_data(generated, tmp_path):
    from data_fixtures import rows_of

    from rookworld_trl.data.load import eval_data
    from rookworld_trl.stages.eval.evaluate import EvalItems, items_in_training, markdown, training_line

    rows = rows_of(generated)

    def of(split, task, n):
        return [row for row in rows[split] if row["task"] == task][:n]

    items = EvalItems(
        policy_fens=[r["fen"] for r in of("train", "P", 2) + of("test", "P", 3)],
        env_prompts=[r["prompt"] for r in of("train", "A", 1) + of("test", "A", 1)],
        mate_fens=[SCHOLAR_MATE],
    )
    found = items_in_training(items, eval_data(None, "test", None, train_data=str(generated)))
    assert found["items"] == {
        "policy": {"in": 2, "of": 5},
        "env": {"in": 1, "of": 2},
        "mate": {"in": 0, "of": 1},
    }
    assert training_line(found).endswith("by position): policy 2 of 5, env 1 of 2, mate 0 of 1")
    puzzles = write(tmp_path / "p.csv", [HEADER, *PUZZLES])  # a puzzle file: its positions to solve
    in_puzzles = items_in_training(items, eval_data(None, "test", None, train_data=str(puzzles)))
    assert in_puzzles["items"]["mate"] == {"in": 1, "of": 1}
    text = markdown({}, {"model": "m", "baseline": None, "in_training_data": found})
    assert "Items in the training data" in text and "policy 2 of 5" in text


def test_data_load_drops_excluded_positions_as_it_streams(generated, tmp_path, capsys):
    from data_fixtures import rows_of, run_cli

    train = rows_of(generated)["train"]
    held_out = write(tmp_path / "held_out.txt", [row["fen"] for row in train if row["task"] == "P"][:2])
    out = tmp_path / "clean"
    assert run_cli(["load", str(generated), "--out", str(out), "--exclude", str(held_out)]) == 0
    gone = keys(*held_out.read_text().split("\n")[:2])
    kept = [row for rows in rows_of(out).values() for row in rows]
    assert len(kept) == sum(fen4(row["fen"]) not in gone for row in train) < len(train)
    dropped = len(train) - len(kept)
    assert f"2 positions; dropped {dropped} of {len(train)} rows" in capsys.readouterr().out
    assert json.loads((out / "stats.json").read_text())["excluded"]["rows_seen"] == len(train)
