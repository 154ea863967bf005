"""A data folder's problems, said before anything reads it: a layout half-written or mixed from two writes
(`layout_problem`: the INCOMPLETE marker, Parquet row counts against stats.json), a folder of no data files or of
data files of several formats (`check_dir`). No `datasets` here: the preflight checks a folder through it.

    problem = layout_problem("data/mine")   # None, or the one line saying why and the fix
    check_dir(Path("data/mine"))            # a DataSourceError, or nothing
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rookworld_trl.data.errors import DATA_SOURCE_FIX, DataSourceError

INCOMPLETE = (
    ".rookworld_incomplete"  # a layout's files are being replaced (data/layout.py LayoutWriter.commit)
)
LAYOUT_SPLITS = ("train", "validation", "test")


def layout_problem(folder: str | os.PathLike) -> str | None:
    """Why a layout folder cannot be read as one dataset, or None: a write into it was stopped while replacing
    its files (the INCOMPLETE marker), or its Parquet files' row counts disagree with its stats.json (files of
    two writes; stats.json's `rows`). Reads Parquet footers only: milliseconds."""
    folder = Path(folder)
    if (folder / INCOMPLETE).exists():
        return (
            f"{folder} is half-written: a `rookworld data load --out` or `data generate` into it was stopped while "
            f"replacing its files ({INCOMPLETE} is there); run that command again, or remove the folder"
        )
    try:
        rows = json.loads((folder / "stats.json").read_text())["rows"]
        expected = {
            split: sum(int(n) for n in rows[split].values()) for split in LAYOUT_SPLITS if split in rows
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no stats.json of ours: nothing to compare with
    import pyarrow as pa  # here: the preflight imports this module, mostly for folders without stats.json
    import pyarrow.parquet as pq

    for split, n in expected.items():
        path = folder / f"{split}.parquet"
        if not path.exists():
            continue
        try:
            found = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException):
            return f"{path} is not a readable Parquet file; run the command that wrote {folder} again"
        if found != n:
            return (
                f"{folder} mixes files of two writes: {split}.parquet holds {found} rows, its stats.json says {n} "
                "(a write into it was stopped halfway, or two wrote at once); run the command that wrote it again, "
                "or remove the folder"
            )
    return None


FOLDER_FORMATS = {".txt": "text", ".text": "text", ".json": "JSON", ".jsonl": "JSON", ".parquet": "Parquet",
                  ".csv": "CSV", ".tsv": "CSV", ".arrow": "Arrow"}  # fmt: skip
NOT_DATA = {"stats.json", "dataset_info.json", "state.json", "dataset_dict.json"}  # metadata beside the data


def check_dir(path: Path) -> None:
    """A DataSourceError for a folder with no data files, a layout folder half-written or mixed from two
    writes (layout_problem), or another folder holding data files of several formats (datasets would read one
    format and drop the rest without a word)."""
    if (problem := layout_problem(path)) is not None:
        raise DataSourceError(problem)
    if not any(p.is_file() for p in path.rglob("*")):
        raise DataSourceError(f"{path}: the directory holds no data files; {DATA_SOURCE_FIX}")
    if (path / "train.parquet").exists() or (path / "stats.json").exists():
        return  # our layout: Parquet read, the .txt beside it is the same rows
    counts: dict[str, int] = {}
    for file in path.rglob("*"):
        kind = FOLDER_FORMATS.get(file.suffix.lower())
        hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
        if kind and file.is_file() and not hidden and file.name not in NOT_DATA:
            counts[kind] = counts.get(kind, 0) + 1
    if len(counts) > 1:
        held = ", ".join(f"{n} {kind} file{'s' * (n != 1)}" for kind, n in sorted(counts.items()))
        raise DataSourceError(
            f"{path} holds data files of several formats ({held}); a folder is read as one format, so the others "
            "would be dropped: keep one format per folder, or name each file as its own source"
        )
