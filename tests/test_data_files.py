"""Every file format the data can come in, and every kind of bad file, through the preflight (before accelerate
starts) and through the loader: the same verdict (both accept, or both refuse with the same line), since both
read files through rookworld_trl/data/files.py."""

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rookworld_trl.data.files import FORMATS, DataSourceError, check_source, sniff
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.stages import preflight

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "rookworld_trl" / "assets" / "data"


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """Real P:/A: lines: the bundled validation split's text column."""
    return pq.read_table(DATA / "validation.parquet", columns=["text"]).column("text").to_pylist()[:6]


def good_files(tmp: Path, lines: list[str]) -> dict[str, Path]:
    pairs = [{"prompt": line[:3], "completion": line[3:]} for line in lines]
    table = pq.read_table(DATA / "validation.parquet").slice(0, 6)
    files = {
        "text.txt": "\n".join(lines) + "\n",
        "text.csv": "\n".join(lines) + "\n",
        "text_lines.jsonl": "".join(json.dumps({"text": line}) + "\n" for line in lines),
        "pairs.jsonl": "".join(json.dumps(p) + "\n" for p in pairs),
        "lines.json": "\n".join(json.dumps({"text": line}) for line in lines),
        "array_one_line.json": json.dumps(lines),
        "array_one_line.jsonl": json.dumps(lines),
        "array_indented.json": json.dumps(lines, indent=2),
        "array_objects.json": json.dumps(pairs),
    }
    for name, content in files.items():
        (tmp / name).write_text(content)
    with gzip.open(tmp / "text.txt.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    pq.write_table(table, tmp / "ours.parquet")
    pq.write_table(table.select(["text"]), tmp / "text.parquet")
    (tmp / "dir").mkdir()
    pq.write_table(table, tmp / "dir" / "train.parquet")
    return {name: tmp / name for name in [*files, "text.txt.gz", "ours.parquet", "text.parquet", "dir"]}


def bad_files(tmp: Path, lines: list[str]) -> dict[str, Path]:
    files = {
        "empty.jsonl": b"",
        "blank.jsonl": b"\n\n",
        "binary.jsonl": b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)),
        "bad_json.jsonl": f'{json.dumps({"text": lines[0]})}\n{{"text": broken\n'.encode(),
        "list_row.jsonl": f'{json.dumps({"text": lines[0]})}\n["a list"]\n'.encode(),
        "no_text.jsonl": json.dumps({"question": "P: ...", "answer": "e2e4"}).encode() + b"\n",
        "some_rows_without_text.jsonl": f"{json.dumps({'text': lines[0]})}\n{json.dumps({'other': 1})}\n".encode(),
        "numbers.json": b"[1, 2]",
        "empty_array.json": b"[]",
        "array_bad_line.json": json.dumps([lines[0], "P: garbage"]).encode(),
        "array_no_text.json": json.dumps([{"question": "x"}]).encode(),
        "broken_array.json": b'["P: a", ',
        "bad_line.txt": f"{lines[0]}\n\nP: garbage\n".encode(),
        "table.csv": b"fen,move\nx,e2e4\n",
        "broken.parquet": b"PAR1 but cut short",
        "csv.parquet": b"fen,move\nx,e2e4\n",
    }
    for name, content in files.items():
        (tmp / name).write_bytes(content)
    (tmp / "empty_dir").mkdir()
    return {name: tmp / name for name in [*files, "empty_dir", "missing.jsonl"]}


def preflight_verdict(path: Path) -> str | None:
    try:
        check_source(str(path), skip_bad_rows=False, seconds=60)
    except preflight.UserError as e:
        return str(e)
    return None


def loader_verdict(path: Path, streaming: bool = False) -> str | None:
    try:
        ds = load_rookworld_dataset(path, streaming=streaming)
        if streaming:
            list(ds)
    except (DataSourceError, ValueError) as e:
        return str(e)
    return None


def test_every_good_format_is_accepted_by_both(tmp_path, lines):
    for name, path in good_files(tmp_path, lines).items():
        assert preflight_verdict(path) is None, name
        assert loader_verdict(path) is None, name
        rows = load_rookworld_dataset(path)
        assert sorted(rows["text"]) == sorted(lines), name  # every line, as written


def test_every_bad_kind_is_refused_by_both_with_one_line_naming_the_file(tmp_path, lines):
    for name, path in bad_files(tmp_path, lines).items():
        said, loaded = preflight_verdict(path), loader_verdict(path)
        assert said is not None and loaded is not None, (name, said, loaded)
        for message in (said, loaded):
            assert str(path) in message and "\n" not in message, (name, message)
        if name.endswith((".jsonl", ".json", ".parquet")) or name == "empty_dir":  # the format's own line
            assert said == loaded, name


def test_the_bad_files_are_refused_streaming_too(tmp_path, lines):
    for name, path in bad_files(tmp_path, lines).items():
        if name not in ("missing.jsonl",):
            assert loader_verdict(path, streaming=True) is not None, name


def test_sniff_reads_the_first_bytes_where_a_suffix_is_shared(tmp_path, lines):
    files = good_files(tmp_path, lines)
    assert sniff(files["array_one_line.jsonl"]).name == "json-array"
    assert sniff(files["pairs.jsonl"]).name == "json-lines"
    assert sniff(files["ours.parquet"]).name == "parquet"
    assert sniff(files["text.csv"]).name == "text"
    assert len({f.name for f in FORMATS}) == len(FORMATS)
