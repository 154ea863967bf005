"""Opening what a user names as data: a file (Parquet, JSONL/JSON with a `text` column or `prompt` +
`completion`, a JSON array of lines or objects), a dataset directory, or a hub dataset id; raw text files
are read line by line by data_load. A source that cannot be read is one DataSourceError saying what was
tried, what was found and what is expected.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import datasets

from rookworld_trl.entry import DATA_SOURCE_FIX, hub_id_like, missing_source
from rookworld_trl.quiet_logs import dropping


class DataSourceError(ValueError):
    """A source that cannot be loaded; the message says what was tried and how to fix it."""


def hub_error(source: str, error: Exception) -> DataSourceError:
    offline = datasets.config.HF_HUB_OFFLINE
    return DataSourceError(
        f"could not load {source!r}: it is not a local file or directory, so it was tried as a Hugging Face hub "
        f"dataset id, which failed{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
        f"{type(error).__name__}: {error}\n"
        f"Fix: if {source!r} is meant to be a local path, make it (`rookworld data generate --out {source}`) or "
        f"pass an existing local source (a `rookworld data generate` output dir, a .parquet/.jsonl/.txt file); "
        f"for a hub dataset, on a machine with internet run `hf download {source} --repo-type dataset "
        f"--local-dir DIR` and pass DIR."
    )


def open_source(source: str, split: str, streaming: bool):
    """datasets.load_dataset on what `source` names (a file's split is the file); None for raw text."""
    path = Path(source)
    kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(path.suffix)
    try:
        if path.is_dir():
            ours = path / f"{split}.parquet"
            if ours.exists():
                return datasets.load_dataset(
                    "parquet", data_files=str(ours), split="train", streaming=streaming
                )
            return datasets.load_dataset(str(path), split=split, streaming=streaming)
        if path.is_file():
            if kind is None:
                return None
            if kind == "json" and _starts_with(path, "["):  # a JSON array of lines or of objects
                return datasets.Dataset.from_list(json_array_rows(path))
            try:
                with dropping(f"datasets.packaged_modules.{kind}.{kind}", "Failed to read"):  # ours says it
                    return datasets.load_dataset(
                        kind, data_files=str(path), split="train", streaming=streaming
                    )
            except Exception as e:  # datasets' json builder: StopIteration (empty), ArrowInvalid, ...
                if kind == "json":
                    raise DataSourceError(bad_jsonl(path) or f"could not load {source!r}: {e}") from None
                raise
    except DataSourceError:
        raise
    except (ValueError, OSError) as e:
        raise DataSourceError(
            f"could not load {source!r} (split {split!r}): {type(e).__name__}: {str(e).rstrip('.')}; "
            f"{DATA_SOURCE_FIX} (docs/FORMATS.md)"
        ) from None
    if not hub_id_like(source):
        raise DataSourceError(missing_source(source))
    try:
        return datasets.load_dataset(source, split=split, streaming=streaming)
    except Exception as e:  # the hub raises many types (offline, not found, gated, ...): one clear message
        raise hub_error(source, e) from None


def bad_jsonl(path: Path) -> str | None:
    """What is wrong with a JSON Lines file, naming its first bad line (1-based) and the fix; None if every
    line is a JSON object. Read only after datasets failed on the file, so a good file costs nothing."""
    fix = 'fix or delete that line (each line one JSON object, e.g. {"text": "P: ..."})'
    with open(path, "rb") as f:
        lines = 0
        for lines, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return f"{path}: line {lines} is not UTF-8 text (a binary file?); pass a JSON Lines file of P:/A: rows"
            except json.JSONDecodeError as e:
                return f"{path}: line {lines} is not valid JSON ({e.msg} at column {e.colno}); {fix}"
            if not isinstance(row, dict):
                return f"{path}: line {lines} is a JSON {type(row).__name__}, not an object; {fix}"
    if lines == 0 or path.stat().st_size == 0 or not path.read_bytes().strip():
        return f"{path}: the file is empty; pass a JSON Lines file with one P:/A: row per line"
    return None


def _starts_with(path: Path, char: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(64).lstrip().startswith(char)


def json_array_rows(path: Path) -> list[dict]:
    """The rows of a JSON array file: strings become {"text": line}, objects stay as they are."""
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    if not isinstance(items, list) or not all(isinstance(x, str | dict) for x in items):
        found = sorted({type(x).__name__ for x in items}) if isinstance(items, list) else type(items).__name__
        raise DataSourceError(
            f"{path}: a JSON array of {found}; expected one of P:/A: lines (strings) or of objects with a 'text' "
            "column or 'prompt' and 'completion'"
        )
    return [{"text": x} if isinstance(x, str) else x for x in items]


@contextlib.contextmanager
def json_lines_errors(source: str):
    """A JSON Lines file that datasets fails to read (it reads lazily: an empty file, a binary one, a bad line)
    becomes one DataSourceError naming its first bad line."""
    try:
        with dropping("datasets.packaged_modules.json.json", "Failed to load JSON"):  # ours names the line
            yield
    except DataSourceError:
        raise
    except Exception as e:  # StopIteration, pyarrow's ArrowInvalid, DatasetGenerationError, ...
        path = Path(source)
        if not (path.is_file() and path.suffix in (".jsonl", ".json")):
            raise
        raise DataSourceError(bad_jsonl(path) or f"could not read {source!r}: {e}") from None


def text_lines(ds, source: str) -> Iterator[str]:
    """The raw lines of a loaded source: its `text` column, or `prompt` + `completion` joined; else one line
    naming the file, what it has and what it expects."""
    with json_lines_errors(source):
        yield from _text_lines(ds, source)


def _text_lines(ds, source: str) -> Iterator[str]:
    names = ds.column_names or list(next(iter(ds), {}))  # a streamed JSON file names its columns when read
    if "text" in names:
        for example in ds.select_columns(["text"]):
            yield example["text"]
    elif {"prompt", "completion"} <= set(names):
        for example in ds.select_columns(["prompt", "completion"]):
            yield example["prompt"] + example["completion"]
    else:
        raise DataSourceError(
            f"{source}: has columns {sorted(names)}; expected a 'text' column of P:/A: lines, 'prompt' and "
            "'completion' columns, or our dataset columns (rookworld data load --out)"
        )
