"""The loader at scale (data/read.py): raw lines parsed in batches, in parallel, cached by the source's
fingerprint; the rows are rows.py's, line for line, and a malformed line is named by its exact line number
whatever batch or process read it.

    .venv/bin/python -m pytest -q tests/test_data_parse.py
"""

import itertools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets / huggingface_hub read it

import datasets
import pyarrow.parquet as pq
import pytest

from rookworld_trl import assets
from rookworld_trl.data import read as parse
from rookworld_trl.data.read import read_rows
from rookworld_trl.data.rows import DataSourceError, LoadReport, row_from_line

EMBEDDED = pq.read_table(f"{assets.DATA}/train.parquet", columns=["text", "task"]).to_pylist()


def sample_lines(n: int) -> list[str]:
    """n embedded lines, P: and A: alternating (both tasks in every batch)."""
    policy = (r["text"] for r in EMBEDDED if r["task"] == "P")
    env = (r["text"] for r in EMBEDDED if r["task"] == "A")
    return list(itertools.islice(itertools.chain.from_iterable(zip(policy, env, strict=False)), n))


def write(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


class CountingParse:
    """rows.py's row_from_line, counted: how many lines a load parsed (0: it read the cache)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        monkeypatch.setattr("rookworld_trl.data.rows.row_from_line", self)

    def __call__(self, line):
        self.calls += 1
        return row_from_line(line)


def test_batched_parse_gives_the_rows_of_row_from_line(tmp_path):
    lines = sample_lines(2500)  # three batches of 1000
    rows = read_rows(write(tmp_path / "mine.txt", lines), num_proc=1)
    assert {"P", "A"} == set(rows["task"])
    assert rows.to_list() == [row_from_line(line) for line in lines]  # every column of every row


def test_two_processes_give_the_rows_of_one():
    lines = sample_lines(2400)
    raw = datasets.Dataset.from_dict({"text": lines})  # in memory: no cache, each call parses
    one = parse.parse_table(raw, "mine.txt", LoadReport("mine.txt"), num_proc=1)
    two = parse.parse_table(raw, "mine.txt", LoadReport("mine.txt"), num_proc=2)
    assert one.to_list() == two.to_list() == [row_from_line(line) for line in lines]


def test_a_second_load_reads_the_cache_and_a_changed_file_is_parsed_again(tmp_path, monkeypatch):
    path = write(tmp_path / "mine.txt", sample_lines(1500))
    counted = CountingParse(monkeypatch)
    first = read_rows(path, num_proc=1).to_list()
    assert counted.calls == 1500
    assert read_rows(path, num_proc=1).to_list() == first and counted.calls == 1500  # no line parsed again
    changed = sample_lines(1600)[100:]
    write(path, changed)
    assert read_rows(path, num_proc=1).to_list() == [row_from_line(line) for line in changed]
    assert counted.calls == 1500 + 1500


@pytest.mark.parametrize("num_proc", [1, 2])
def test_bad_lines_are_named_by_their_line_across_batches_and_processes(tmp_path, num_proc):
    lines = sample_lines(2600)
    lines[1000] = ""  # line 1001: blank, skipped always
    lines[1499] = lines[1499].replace("B: ", "B: zz", 1) if lines[1499].startswith("P:") else "P: not a line"
    lines[2299] = "A: garbage"
    path = write(tmp_path / "bad.txt", lines)
    with pytest.raises(DataSourceError) as stopped:
        read_rows(path, num_proc=num_proc)
    assert str(stopped.value).startswith(f"{path}:1500: ")  # the first bad line, not the first batch's
    report = LoadReport(str(path), skip_bad_rows=True)
    rows = read_rows(path, skip_bad_rows=True, report=report, num_proc=num_proc)
    assert report.lines == 2600 and report.rows == len(rows) == 2597
    assert sorted(n for ns in report.first_lines.values() for n in ns) == [1001, 1500, 2300]
    good = [line for i, line in enumerate(lines) if i not in (1000, 1499, 2299)]
    assert rows["text"] == [row_from_line(line)["text"] for line in good]


def test_a_big_source_with_a_bad_early_line_stops_before_the_whole_parse(tmp_path, monkeypatch):
    """A big source's first lines are parsed before the map over all of it: a wrong file stops at once."""
    monkeypatch.setattr(parse, "PROGRESS_ROWS", 2000)  # "big" at the test's size
    lines = sample_lines(3000)
    lines[4] = "A: garbage"
    path = write(tmp_path / "big.txt", lines)

    def whole_parse(*args, **kwargs):
        raise AssertionError("the whole source was parsed before its line 5 was named")

    monkeypatch.setattr(datasets.Dataset, "map", whole_parse)
    with pytest.raises(DataSourceError) as stopped:
        read_rows(path, num_proc=1)
    assert str(stopped.value).startswith(f"{path}:5: ")


def test_a_pass_over_parsed_rows_gives_them_row_for_row(tmp_path, monkeypatch):
    """layout.arrow_batches reads parsed rows, a row selection of them (the mix, --exclude), a slice and an
    in-memory table through datasets' own Arrow iteration: the same rows in the same order each way, at batch
    sizes below and above the parse's shards."""
    from rookworld_trl.data import layout

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = read_rows(str(write(tmp_path / "s.txt", sample_lines(3000))), "train", num_proc=2)
    picked = rows.select([i for i in range(len(rows)) if i % 3])  # an indices mapping over the files' rows
    sliced = rows.select(range(100, 2500))  # contiguous: datasets slices the table instead
    in_memory = datasets.Dataset.from_list(picked.to_list()[:500])
    for ds in (rows, picked, sliced, in_memory):
        for size in (256, 1500):
            read = [
                r for batch in layout.arrow_batches(ds, "fen", "task", size=size) for r in batch.to_pylist()
            ]
            assert read == ds.select_columns(["fen", "task"]).to_list()


def test_a_stream_goes_through_the_same_batched_parse(tmp_path, monkeypatch):
    """Streamed, a source's lines go through the same batched map as in memory (`parse_batch`): the same rows,
    the same malformed line named, and the two passes of a streamed mix (one per task) count each line once."""
    from rookworld_trl.data.load import load_rookworld_dataset

    lines = sample_lines(1200)
    lines[700] = "A: garbage"
    path = write(tmp_path / "s.txt", lines)
    batches = []
    parse_batch = parse.parse_batch
    monkeypatch.setattr(
        parse, "parse_batch", lambda batch: batches.append(len(batch["text"])) or parse_batch(batch)
    )
    with pytest.raises(DataSourceError) as stopped:
        list(load_rookworld_dataset(path, streaming=True))
    assert str(stopped.value).startswith(f"{path}:701: ") and batches
    streamed = list(load_rookworld_dataset(path, streaming=True, skip_bad_rows=True))
    assert streamed == load_rookworld_dataset(path, skip_bad_rows=True).to_list()
    report = LoadReport(str(path), skip_bad_rows=True)
    mixed = list(
        load_rookworld_dataset(path, streaming=True, skip_bad_rows=True, mix_env_ratio=0.5, report=report)
    )
    assert mixed and report.lines <= len(lines) and sum(report.malformed.values()) == 1
