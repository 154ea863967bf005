"""Raw P:/A: lines -> rows of FEATURES at scale: in batches, over the machine's cores, cached by the source's
fingerprint, on disk (memory-mapped Arrow), with the first malformed line named exactly.

    rows = parse_table(raw, "big.txt", LoadReport("big.txt"), num_proc=None)   # raw: a `text` column

How: `raw` is a file-backed table of lines (datasets' text, JSON or Parquet builder wrote it as Arrow in
HF_DATASETS_CACHE; read.py `text_table` reads a text file so). One `Dataset.map(parse_batch,
batched=True, num_proc=N)` parses it: each line through rows.py `row_from_line` (python-chess builds one
board per line, the load's cost: docs/PERFORMANCE.md "Loading at scale"), each row with its error ("" when
well-formed). map caches the result beside `raw` under datasets' own fingerprint of the map: `raw`'s (the
file's path, size and modification time) and its arguments, among them PARSER (a hash of the parsing code), so
the same unchanged source is parsed once: a second load reads the cached rows; a changed file, or a changed
parser, is parsed again. The errors are
read after the map, in line order: the first malformed line is the file's first, whatever the batch or the
process that read it, and `skip_bad_rows` counts them by reason as rows.py's `rows_from_lines` does. A big
source's first lines are checked before the map, so a wrong file stops at once (`check_first_lines`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import chess
import datasets
import pyarrow as pa
import pyarrow.compute as pc

from rookworld_trl.chess import environment, formats
from rookworld_trl.chess.formats import FormatError
from rookworld_trl.data import rows as rows_module
from rookworld_trl.data.layout import FEATURES
from rookworld_trl.data.rows import EMPTY_LINE, LoadReport, row_from_line

# Each row's `reason` (the count key: "" when well-formed) and `error` (the whole message of a bad line).
PARSED = datasets.Features(
    {**FEATURES, "reason": datasets.Value("string"), "error": datasets.Value("string")}
)
# Rows a process gets at least: below this, starting processes costs more than it saves.
ROWS_PER_PROC = 20_000
# Sources of this many lines show the parse's progress bar (lines/s); a smaller one's error stays one line.
PROGRESS_ROWS = 100_000
# A source that large has its first lines parsed before the map: a file that is not P:/A: lines stops at once.
FIRST_LINES = 1_000
# A malformed line's row: its values are never read (checked_rows drops it), one Arrow type per column.
EMPTY_ROW = {name: [] if isinstance(feature, datasets.List) else None for name, feature in FEATURES.items()}


@contextlib.contextmanager
def no_bars():
    """datasets' progress bars off within the block: a source's Arrow copy is written in seconds, and a bad
    file's error stays the one line on stderr (the parse's bar shows lines/s)."""
    was_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.utils.enable_progress_bars()


def parser_version() -> str:
    """A hash of the code that turns a line into a row (and python-chess's version): datasets names a map's
    cache by the function's name, not its code, so a changed parser is told apart by this argument."""
    code = (Path(module.__file__).read_bytes() for module in (formats, environment, rows_module))
    text = chess.__version__ + "".join(map(repr, code)) + Path(__file__).read_text()
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


PARSER = parser_version()


def default_num_proc() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_batch(batch: dict, parser: str = PARSER) -> dict[str, list]:
    """The rows of a batch of raw lines (`text`, or `prompt` + `completion`), each with its reason and error.
    `parser`: PARSER, read by datasets' cache key only."""
    lines = (
        batch["text"]
        if "text" in batch
        else [p + c for p, c in zip(batch["prompt"], batch["completion"], strict=True)]
    )
    out: dict[str, list] = {name: [] for name in PARSED}
    for line in lines:
        if not line.strip():
            row, reason, error = None, EMPTY_LINE, EMPTY_LINE
        else:
            try:
                row, reason, error = row_from_line(line), "", ""
            except FormatError as e:
                row, reason, error = None, e.reason, str(e)
        row = row or EMPTY_ROW
        for name in FEATURES:
            out[name].append(row[name])
        out["reason"].append(reason)
        out["error"].append(error)
    return out


def parse_table(raw: datasets.Dataset, source: str, report: LoadReport, num_proc: int | None = None):
    """The rows of the lines of `raw` (see the module docstring); a malformed line stops with its one line
    (file:line, the fix) unless `report.skip_bad_rows`, which counts it."""
    if not len(raw):  # map gives a table of no columns
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    if len(raw) >= PROGRESS_ROWS and not report.skip_bad_rows:
        check_first_lines(raw, report)
    procs = num_proc or min(default_num_proc(), max(1, len(raw) // ROWS_PER_PROC))
    with contextlib.nullcontext() if len(raw) >= PROGRESS_ROWS else no_bars():
        parsed = raw.map(
            parse_batch,
            batched=True,
            remove_columns=raw.column_names,
            features=PARSED,
            num_proc=procs if procs > 1 and len(raw) > 1 else None,
            fn_kwargs={"parser": PARSER},  # in datasets' cache key, beside the source's fingerprint
            desc=f"parsing {Path(source).name}",  # datasets adds "(num_proc=N)"
        )
    return checked_rows(parsed, report)


def check_first_lines(raw: datasets.Dataset, report: LoadReport) -> None:
    """Stop at the first malformed line among `raw`'s first FIRST_LINES (its file:line, the fix) before the
    parse of the whole source: a wrong file or format is said in a second, not after minutes of parsing."""
    head = parse_batch(raw[:FIRST_LINES])
    for line_no, (reason, error) in enumerate(zip(head["reason"], head["error"], strict=True), start=1):
        if reason and reason != EMPTY_LINE:
            report.bad(reason, line_no, error)


def checked_rows(parsed: datasets.Dataset, report: LoadReport) -> datasets.Dataset:
    """`parsed` without its malformed lines, counted in `report` in line order (the first one raised unless
    skip_bad_rows)."""
    report.lines += len(parsed)
    reasons = parsed.data.column("reason")
    bad = pc.indices_nonzero(pc.not_equal(reasons, "")).to_numpy()
    if len(bad):
        picked = parsed.data.table.select(["reason", "error"]).take(pa.array(bad))
        reasons_and_errors = (picked.column(name).to_pylist() for name in ("reason", "error"))
        for index, reason, error in zip(bad.tolist(), *reasons_and_errors, strict=True):
            report.bad(reason, index + 1, error)  # a line's number: its row's index + 1
    rows = parsed.remove_columns(["reason", "error"])
    if len(bad):  # an index over the rows kept (no copy of them)
        rows = rows.select(pc.indices_nonzero(pc.equal(reasons, "")).to_numpy().astype("int64"))
    report.rows += len(rows)
    return rows
