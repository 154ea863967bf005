"""Opening what a user names as data: a file (Parquet, JSONL/JSON with a `text` column or `prompt` +
`completion`, a JSON array of lines or objects), a dataset directory, or a hub dataset id; raw text files
are read line by line by data_load. A source that cannot be read is one DataSourceError saying what was
tried, what was found and what is expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import datasets


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
            return datasets.load_dataset(kind, data_files=str(path), split="train", streaming=streaming)
    except DataSourceError:
        raise
    except (ValueError, OSError) as e:
        raise DataSourceError(
            f"could not load {source!r} (split {split!r}): {type(e).__name__}: {e}"
        ) from None
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise DataSourceError(
            f"no such file or directory: {source!r} (nor a hub dataset id like 'owner/name')"
        )
    try:
        return datasets.load_dataset(source, split=split, streaming=streaming)
    except Exception as e:  # the hub raises many types (offline, not found, gated, ...): one clear message
        raise hub_error(source, e) from None


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


def text_lines(ds, source: str) -> Iterator[str]:
    """The raw lines of a loaded source: its `text` column, or `prompt` + `completion` joined; else one line
    naming the file, what it has and what it expects."""
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
