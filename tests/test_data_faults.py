"""Datasets written as a whole by one writer, and hostile or mixed data files: a stopped or killed load loses
nothing, a folder in use or left mixed by an old writer is refused, each bad file is one line.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_data_faults.py
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fault_cli import hold_elsewhere, lines_of, one_line, run, text_file

from rookworld_trl.common import locks
from rookworld_trl.common.errors import UserError
from rookworld_trl.data import layout
from rookworld_trl.data.commands import convert
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.data.rows import DataSourceError


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


# ---- hostile and mixed data files ----


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
