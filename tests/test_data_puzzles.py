"""Puzzle files as sources (rookworld_trl/data/puzzles.py): Lichess puzzle CSV and EPD rows written by hand, read
with python-chess, filtered by rating and theme, labelled by the real Stockfish; bad rows are one line naming the
file, the row, the problem and the fix."""

from __future__ import annotations

import chess
import pytest

from rookworld_trl.chess.engine import EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.formats import parse_policy_prompt, policy_prompt
from rookworld_trl.data.puzzles import PuzzleFilter, PuzzleSource, puzzle_rows, read_puzzles
from rookworld_trl.data.rows import DataSourceError

HEADER = "PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl,OpeningTags"
# Black blunders, White mates: Scholar's mate; a back-rank mate; K+R against K, mate in two.
SCHOLAR = "r1bqkbnr/pppp1ppp/2n5/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR b KQkq - 3 3"
BACK_RANK = "6k1/5ppp/8/8/8/8/5PPP/3R2K1 b - - 0 30"
ROOK_MATE = "1k6/8/2K5/8/8/8/8/7R b - - 0 50"
PUZZLES = [
    f"p0001,{SCHOLAR},g8f6 h5f7,600,75,90,1000,mateIn1 opening short,https://lichess.org/x,Italian_Game",
    f"p0002,{BACK_RANK},g8h8 d1d8,900,80,95,2000,backRankMate endgame mateIn1 short,https://lichess.org/y,",
    f"p0003,{ROOK_MATE},b8a8 c6b6 a8b8 h1h8,1500,90,85,500,endgame mateIn2 rookEndgame short,https://lichess.org/z,",
]
EPD = [
    "# two positions to solve, written by hand",
    'r1bqkb1r/pppp1ppp/2n2n2/4p2Q/2B1P3/8/PPPP1PPP/RNB1K1NR w KQkq - bm Qxf7#; am Qxe5+; id "scholar";',
    "",
    '7k/5ppp/8/8/8/8/5PPP/3R2K1 w - - bm Rd8#; id "back rank";',
]


def after_first(fen: str, moves: str) -> str:
    board = chess.Board(fen)
    board.push_uci(moves.split()[0])
    return board.fen()


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def engine():
    try:
        find_stockfish()
    except RuntimeError:
        pytest.skip("Stockfish is not installed")
    with EnginePool(workers=1, limit=EngineLimit(depth=8)) as pool:
        yield pool


def test_lichess_csv_gives_the_position_after_the_first_move(tmp_path):
    puzzles = list(read_puzzles(write(tmp_path / "p.csv", [HEADER, *PUZZLES])))
    assert [p.fen for p in puzzles] == [after_first(*row.split(",")[1:3]) for row in PUZZLES]
    assert [p.best for p in puzzles] == [("h5f7",), ("d1d8",), ("c6b6",)]
    assert [p.rating for p in puzzles] == [600, 900, 1500] and puzzles[1].id == "p0002"
    assert "backRankMate" in puzzles[1].themes
    # the older dumps have no header: the same puzzles by column position
    assert list(read_puzzles(write(tmp_path / "bare.csv", PUZZLES))) == puzzles


def test_filters_by_rating_and_theme(tmp_path):
    path = write(tmp_path / "p.csv", [HEADER, *PUZZLES])

    def ids(rating=None, themes=None):
        keep = PuzzleFilter.parse(rating, themes)
        return [p.id for p in read_puzzles(path) if keep.keeps(p)]

    assert ids("500-1000") == ["p0001", "p0002"]
    assert ids(themes="mateIn2") == ["p0003"]
    assert ids("800-2000", "mateIn1,mateIn2") == ["p0002", "p0003"]
    assert ids("1600-3000") == []
    with pytest.raises(ValueError, match="LOW-HIGH"):
        PuzzleFilter.parse("1800-1000")


def test_epd_reads_bm_and_am(tmp_path):
    puzzles = list(read_puzzles(write(tmp_path / "suite.epd", EPD)))
    assert [p.id for p in puzzles] == ["scholar", "back rank"]
    assert puzzles[0].best == ("h5f7",) and puzzles[0].avoid == ("h5e5",)
    assert puzzles[0].fen == after_first(SCHOLAR, "g8f6").replace(" 4 4", " 0 1")
    with pytest.raises(DataSourceError, match="no ratings or themes"):
        list(read_puzzles(tmp_path / "suite.epd", PuzzleFilter.parse("1000-1800")))


def test_rows_are_engine_labelled_p_lines(tmp_path, engine):
    path = write(tmp_path / "p.csv", [HEADER, *PUZZLES])
    rows, report, excluded = puzzle_rows(path, engine, PuzzleFilter.parse(themes="mateIn1,mateIn2"))
    assert excluded is None  # nothing to exclude: no report
    assert (report.read, report.kept, report.rows) == (3, 3, 3)
    for row, puzzle in zip(rows, read_puzzles(path), strict=True):
        analysis = engine.analyse(puzzle.fen)
        assert row["task"] == "P" and row["fen"] == puzzle.fen == parse_policy_prompt(row["prompt"])
        assert row["prompt"] == policy_prompt(puzzle.fen) and row["limit"] == "depth=8"
        assert row["best"] == analysis[0].move and sorted(row["moves"]) == sorted(e.move for e in analysis)
    assert rows[0]["best"] == "h5f7" and rows[1]["best"] == "d1d8"  # a mate in one: the engine finds it
    assert report.solved == sum(
        row["best"] in p.best for row, p in zip(rows, read_puzzles(path), strict=True)
    )
    assert "3 puzzles, 3 kept" in report.one_line() and f"in {report.solved} of 3" in report.one_line()
    epd_rows, epd_report, _ = puzzle_rows(write(tmp_path / "s.epd", EPD), engine)
    assert [r["best"] for r in epd_rows] == ["h5f7", "d1d8"] and epd_report.avoided == 0


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            f"b1,{SCHOLAR},g8g6 h5f7,600,,,,mateIn1,,",
            "the opponent's move (Moves' first) 'g8g6' is not a legal move",
        ),
        (
            f"b2,{SCHOLAR},g8f6 h5h8,600,,,,mateIn1,,",
            "the solution's first move (Moves' second) 'h5h8' is not a legal move",
        ),
        (f"b3,{SCHOLAR},g8f6,600,,,,mateIn1,,", "Moves 'g8f6' has 1 move(s)"),
        ("b4,8/8/8/8/8/8/8/8 w - - 0 1,a1a2 a2a3,600,,,,mateIn1,,", "is no legal position"),
        ("b5,not a fen,a1a2 a2a3,600,,,,mateIn1,,", "does not parse"),
        (f"b6,{SCHOLAR},g8f6 h5f7,easy,,,,mateIn1,,", "Rating 'easy' is not a whole number"),
    ],
)
def test_a_bad_csv_row_is_one_line_naming_it(tmp_path, row, problem):
    path = write(tmp_path / "bad.csv", [HEADER, PUZZLES[0], row])
    with pytest.raises(DataSourceError) as e:
        list(read_puzzles(path))
    message = str(e.value)
    assert (
        message.startswith(f"{path}:3: ")
        and problem in message
        and message.endswith("fix or delete that row")
    )
    assert "\n" not in message


def test_a_bad_file_is_one_line(tmp_path):
    with pytest.raises(
        DataSourceError, match=r"bad\.epd:2: not an EPD line .*Re2.*; fix or delete that line"
    ):
        list(read_puzzles(write(tmp_path / "bad.epd", [EPD[1], "7k/5ppp/8/8/8/8/5PPP/3R2K1 w - - bm Re2;"])))
    with pytest.raises(DataSourceError, match=r"h\.csv:1: the header has no Moves column"):
        list(read_puzzles(write(tmp_path / "h.csv", ["PuzzleId,FEN,Rating", f"x,{SCHOLAR},600"])))
    with pytest.raises(DataSourceError, match="no puzzle rows"):
        list(read_puzzles(write(tmp_path / "empty.csv", [HEADER])))


# ---------------------------------------------------------------------------------- the commands that read them


def test_data_load_writes_labelled_puzzles(tmp_path, engine, capsys):
    from data_fixtures import rows_of, run_cli

    path = write(tmp_path / "p.csv", [HEADER, *PUZZLES])
    out = tmp_path / "out"
    args = ["load", str(path), "--out", str(out), "--puzzle_rating", "500-1000", "--no-progress"]
    assert run_cli([*args, "--puzzle_themes", "mateIn1"]) == 0
    said = capsys.readouterr().out
    assert f"{path}: 3 puzzles, 2 kept (rating 500-1000, themes mateIn1), 2 P: rows" in said
    rows = [row for split in rows_of(out).values() for row in split]
    assert sorted(row["fen"] for row in rows) == sorted(after_first(*r.split(",")[1:3]) for r in PUZZLES[:2])
    assert {row["best"] for row in rows} == {"h5f7", "d1d8"}
    assert run_cli(["load", str(write(tmp_path / "s.epd", EPD)), "--puzzle_themes", "mateIn1"]) == 2
    assert "no ratings or themes to filter by" in capsys.readouterr().err


def test_train_loads_a_puzzle_file_without_excluded_positions(model_dir, tmp_path, engine):
    from tiny_grpo import ROOT

    from rookworld_trl.model.loading import load_model_and_tokenizer
    from rookworld_trl.stages import grpo as grpo_stage

    recipe = ROOT / "recipes" / "grpo_tiny_cpu.yaml"
    path = write(tmp_path / "p.csv", [HEADER, *PUZZLES])
    held_out = write(tmp_path / "held_out.txt", [after_first(SCHOLAR, "g8f6")])
    flags = ["--dataset_name", str(path), "--mix_env_ratio", "0", "--puzzle_themes", "mateIn1,mateIn2",
             "--exclude", str(held_out), "--output_dir", str(tmp_path / "run"), "--replay_coef", "0"]  # fmt: skip
    script, args, _ = grpo_stage.parse(["--config", str(recipe), *flags])
    model, _ = load_model_and_tokenizer(str(model_dir))
    data = grpo_stage.load_run_data(script, args, model)
    assert sorted(data.train["fen"]) == sorted(after_first(*r.split(",")[1:3]) for r in PUZZLES[1:])


def test_a_puzzle_file_mixed_with_a_rows_is_refused_before_labelling(tmp_path):
    from rookworld_trl.data.load import load_rookworld_dataset

    path = write(tmp_path / "p.csv", [HEADER, *PUZZLES])
    with pytest.raises(DataSourceError, match="P: rows only; set --mix_env_ratio 0"):
        load_rookworld_dataset(path, mix_env_ratio=0.2, puzzles=PuzzleSource(stockfish="/no/such/stockfish"))


def test_preflight_checks_a_puzzle_file_and_the_exclude_files(tmp_path):
    from rookworld_trl.stages import preflight

    def check(*flags):
        preflight.preflight("train", ["--output_dir", str(tmp_path / "run"), *flags])

    good = write(tmp_path / "p.csv", [HEADER, *PUZZLES])
    check("--dataset_name", str(good), "--puzzle_themes", "mateIn1", "--exclude", str(good))
    bad = write(tmp_path / "bad.csv", [HEADER, PUZZLES[0].replace("g8f6 h5f7", "g8f6")])
    with pytest.raises(preflight.UserError, match=r"bad\.csv:2: Moves 'g8f6' has 1 move\(s\)"):
        check("--dataset_name", str(bad))
    other = write(tmp_path / "rows.csv", ["PuzzleId,FEN,Rating", f"x,{SCHOLAR},600"])
    with pytest.raises(preflight.UserError, match=r"rows\.csv:1: the header has no Moves column"):
        check("--dataset_name", str(other))
    with pytest.raises(preflight.UserError, match="no ratings or themes"):
        check("--dataset_name", str(write(tmp_path / "s.epd", EPD)), "--puzzle_rating", "1000-1800")
    with pytest.raises(preflight.UserError, match="--exclude .*no.txt: no such file"):
        check("--dataset_name", str(good), "--exclude", str(tmp_path / "no.txt"))


def test_excluded_and_capped_puzzles_are_never_labelled(tmp_path, engine):
    from rookworld_trl.data.files import Exclusion

    path = write(tmp_path / "p.csv", [HEADER, *PUZZLES])
    exclude = Exclusion.of(write(tmp_path / "held_out.txt", [after_first(SCHOLAR, "g8f6")]))
    calls = engine.engine_calls
    rows, report, excluded = puzzle_rows(path, engine, exclude=exclude, max_puzzles=1, progress=False)
    assert [row["fen"] for row in rows] == [after_first(BACK_RANK, "g8h8")]
    assert (report.excluded, report.capped, report.rows) == (1, 1, 1) and excluded.dropped == {"P": 1}
    assert engine.engine_calls - calls <= 1  # only the kept puzzle reached the engine (if not cached)
    assert "1 excluded (--exclude), the first 1 taken (max_samples), 1 P: rows" in report.one_line()


def test_the_file_registry_knows_puzzle_files(tmp_path):
    from rookworld_trl.data.files import read_lines, sniff

    assert sniff(write(tmp_path / "p.csv", [HEADER, *PUZZLES])).name == "lichess-puzzles"
    assert sniff(write(tmp_path / "bare.csv", PUZZLES)).name == "lichess-puzzles"  # no header: a board
    assert sniff(write(tmp_path / "s.epd", EPD)).name == "epd"
    lines = write(tmp_path / "lines.csv", ["P: " + SCHOLAR.ljust(90) + "M: g8f6 E: 0.1 B: g8f6"])
    assert sniff(lines).name == "text"  # P:/A: lines named .csv stay lines
    with pytest.raises(DataSourceError, match="holds positions to label, not P:/A: lines"):
        read_lines(tmp_path / "p.csv")
