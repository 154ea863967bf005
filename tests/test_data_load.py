"""`rookworld data` loading: our layout (dir, Parquet, JSONL, streaming), raw text, malformed lines, the task
mix, the hub offline, `rookworld data load`. On the generated sample of tests/data_fixtures.py.

.venv/bin/pytest tests/test_data_load.py -q
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets / huggingface_hub read it

import gzip
import json
import math

import datasets
import pyarrow.parquet as pq
import pytest
from data_fixtures import rows_of, run_cli

from rookworld_trl.chess.engine import find_stockfish
from rookworld_trl.data.commands import (
    FEATURES,
    SPLITS,
    DataSourceError,
    LoadReport,
    load_rookworld_dataset,
)

try:
    find_stockfish()
except RuntimeError:
    pytest.skip("Stockfish is not installed", allow_module_level=True)


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
    with pytest.raises(
        DataSourceError, match=f"^{path}:2: line: starts with neither .* pass --skip_bad_rows"
    ):
        load_rookworld_dataset(path)  # by default the first malformed line stops the load, named
    report = LoadReport(str(path), skip_bad_rows=True)
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
    for _ in range(5):  # the same rows every time (datasets' interleave gave 0, 1 or 100 of them at random)
        again = load_rookworld_dataset(generated / "train.txt", streaming=True, mix_env_ratio=0.3, seed=1)
        assert [r["text"] for r in again.take(100)] == [r["text"] for r in rows]
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
        == 2
    )
    assert (
        f"{raw}:{len((generated / 'train.txt').read_text().splitlines()) + 1}: line"
        in capsys.readouterr().err
    )
    assert (
        run_cli(
            ["load", str(raw), "--out", str(out), "--validation-fraction", "0.1", "--test-fraction", "0.1",
             "--skip_bad_rows"]
        )
        == 0
    )  # fmt: skip
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
    assert run_cli(["load", str(raw), "--skip_bad_rows"]) == 0
    assert "A: kinds:" in capsys.readouterr().out
    # our layout is read by column: its rows are counted, not "0 lines, 0 rows"
    train_rows = pq.read_table(out / "train.parquet").num_rows
    assert run_cli(["load", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: {train_rows} rows\n")
    assert run_cli(["load", str(tmp_path / "nope.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_nan_free_numbers(generated):
    rows = [r for split in rows_of(generated).values() for r in split]
    assert all(math.isfinite(r["reward"]) and all(math.isfinite(e) for e in r["evals"]) for r in rows)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", ": the file is empty"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)), ":1: not UTF-8 text (a binary file?)"),
        (b'{"text": "P: a"}\n{"text": broken\n{"text": "P: b"}\n', ":2: not valid JSON"),
        (b'{"text": "P: a"}\n["a list"]\n', ":2: a JSON list, not an object"),
    ],
    ids=["empty", "binary", "bad_line", "not_an_object"],
)
def test_a_bad_jsonl_file_is_one_line_naming_the_file_and_its_first_bad_line(
    tmp_path, capsys, content, expected
):
    """datasets reads JSON Lines lazily and failed with StopIteration or pyarrow's ArrowInvalid ('in row 1',
    0-based): `rookworld data load` says the file, the 1-based line and the fix, and exits 2."""
    path = tmp_path / "mine.jsonl"
    path.write_bytes(content)
    assert run_cli(["load", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}{expected}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", ["broken.parquet", "empty_dir"])
def test_a_source_datasets_cannot_read_is_one_line_with_the_fix(tmp_path, capsys, name):
    path = tmp_path / name
    path.mkdir() if name == "empty_dir" else path.write_bytes(b"PAR1 cut short")
    assert run_cli(["load", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    says = (
        "not a Parquet file" if name.endswith(".parquet") else "pass a `rookworld data generate` output dir"
    )
    assert str(path) in err and says in err


def test_one_task_data_names_the_flag_that_trains_it_alone(tmp_path):
    """P:-only data with an A: share asked for: the error says which --mix_env_ratio trains it; replay of a task
    the data lacks says --replay_coef 0 or another --replay_task."""
    from rookworld_trl.data.load import mix_counts
    from rookworld_trl.grpo.replay import Replay

    with pytest.raises(
        ValueError, match=r"has 40 P: and 0 A: rows; set --mix_env_ratio 0 to train on its P: rows"
    ):
        mix_counts(40, 0, 0.2)
    with pytest.raises(ValueError, match=r"set --mix_env_ratio 1 to train on its A: rows alone"):
        mix_counts(0, 40, 0.2)
    rows = datasets.Dataset.from_dict({"prompt": ["P: x "], "completion": ["M: e2e4"], "task": ["P"]})
    with pytest.raises(ValueError, match=r"set --replay_coef 0 \(no supervised replay\) or --replay_task"):
        Replay(rows, "A", tokenizer=None, batch_size=1, seed=0)
