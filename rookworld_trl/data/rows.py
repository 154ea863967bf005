"""One raw P:/A: line -> one row of FEATURES, and `rows_from_lines`, which counts the malformed ones by reason
(`LoadReport`). No `datasets` here: the preflight checks lines through it before accelerate starts. Every data
problem is worded here too: `DataSourceError` (problem, file, fix), `line_error`, `empty_error`.

    report = LoadReport("mine.txt", skip_bad_rows=True)
    rows = list(rows_from_lines(read_lines("mine.txt"), report)); print(report.summary())
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections import Counter
from collections.abc import Iterable, Iterator

from rookworld_trl.chess.environment import kind_on, sample_and_board
from rookworld_trl.chess.formats import EnvSample, FormatError, split_prompt_completion
from rookworld_trl.common.errors import UserError

# ---------------------------------------------------------------------------------------------- errors

FORMATS_DOC = "docs/FORMATS.md"
# the fix a malformed data line's one-line error ends with (data loading, the stages, the preflight)
BAD_LINE_FIX = "fix or delete that line, or pass --skip_bad_rows to skip malformed lines (they are counted)"
# what a data source's one-line error ends with when the source cannot be read at all (the preflight, data loading)
DATA_SOURCE_FIX = "pass a `rookworld data generate` output dir or a .parquet/.jsonl/.txt file of P:/A: rows"


class DataSourceError(UserError, ValueError):
    """A source that cannot be loaded; the message says what was tried and how to fix it."""


def line_error(path, line_no: int, problem: str, fix: str = BAD_LINE_FIX) -> DataSourceError:
    """The one wording of a bad record: `file:line: problem; fix`."""
    return DataSourceError(f"{path}:{line_no}: {problem}; {fix}")


def empty_error(path) -> DataSourceError:
    return DataSourceError(
        f"{path}: the file is empty; pass a file with one P:/A: row per line ({FORMATS_DOC})"
    )


def open_text(path: str | os.PathLike):
    """A text file for reading, gzip if it ends in .gz; bad bytes become U+FFFD, a UTF-8 byte-order mark goes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", errors="replace")


# ------------------------------------------------------------------------------------------------ rows


def make_row(text: str, **fields) -> dict:
    """A row of FEATURES: the line, its prompt/completion split, `fields`, and empty values for the rest."""
    prompt, completion = split_prompt_completion(text)
    empty = {"moves": [], "evals": [], "best": "", "limit": "", "move": "", "history": [], "new_fen": ""}
    empty.update(reward=0.0, terminated=False, truncated=False, kind="")
    return {"text": text, "prompt": prompt, "completion": completion, **empty, **fields}


def policy_row(text: str, fen: str, moves, evals, best: str, limit: str) -> dict:
    evals = [float(e) for e in evals]
    return make_row(text, task="P", fen=fen, moves=list(moves), evals=evals, best=best, limit=limit)


def env_row(text: str, sample: EnvSample, kind: str) -> dict:
    return make_row(
        text, task="A", fen=sample.fen, move=sample.move, history=list(sample.history), new_fen=sample.new_fen,
        reward=float(sample.reward), terminated=sample.terminated, truncated=sample.truncated, kind=kind,
    )  # fmt: skip


def row_from_line(line: str) -> dict:
    """A row from one raw line; FormatError if it is malformed. P: moves/evals stay in written order."""
    text, sample, board = sample_and_board(line)  # one board per line: the load's cost (docs/PERFORMANCE.md)
    if isinstance(sample, EnvSample):
        return env_row(text, sample, kind_on(board, sample.move))
    return policy_row(text, sample.fen, sample.moves, sample.evals, sample.best, limit="")


# ------------------------------------------------------------------------------------------------ lines


EMPTY_LINE = "empty line"


@dataclasses.dataclass
class LoadReport:
    """What a pass over raw lines found: lines, rows, malformed lines by reason (first line numbers). Unless
    `skip_bad_rows`, the first malformed line (not a blank one) is a DataSourceError naming it."""

    source: str
    skip_bad_rows: bool = False
    lines: int = 0
    rows: int = 0
    malformed: Counter = dataclasses.field(default_factory=Counter)
    first_lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    max_examples: int = 5

    def bad(self, reason: str, line_no: int, message: str | None = None) -> None:
        """Count a malformed line by `reason`; without skip_bad_rows stop at it, citing it whole (`message`)."""
        if not self.skip_bad_rows and reason != EMPTY_LINE:
            raise line_error(self.source, line_no, message or reason)
        self.malformed[reason] += 1
        examples = self.first_lines.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(line_no)

    def check_rows(self, rows: int, split: str) -> None:
        """A DataSourceError when a source's split gave no `rows`: what it held and what is expected."""
        if rows:
            return
        source = self.source
        # a generated dir may leave a split empty
        if os.path.isfile(os.path.join(source, f"{split}.parquet")):
            raise DataSourceError(
                f"{source}: its {split!r} split has no rows; name another split (--dataset_train_split / "
                f"--dataset_test_split; `rookworld data load {source} --split SPLIT` counts each)"
            )
        raise DataSourceError(
            f"{source} (split {split!r}) holds no P:/A: rows: {self.one_line()}. Expected `P: <FEN> ...` / `A: ...` "
            f"lines (docs/FORMATS.md), a `rookworld data generate` output dir, or a .parquet/.jsonl file with prompt "
            f"and completion columns; `rookworld data load {source}` shows what it holds"
        )

    def summary(self) -> str:
        if self.lines == 0 and self.rows:  # a table in our columns: read by column, no line parsed
            return f"{self.source}: {self.rows} rows"
        bad = sum(self.malformed.values())
        lines = [f"{self.source}: {self.lines} lines, {self.rows} rows, {bad} malformed lines skipped"]
        for reason, count in self.malformed.most_common():
            at = ", ".join(f"{self.source}:{n}" for n in self.first_lines[reason])
            lines.append(f"  {count:>8}  {reason}  (first at {at})")
        return "\n".join(lines)

    def one_line(self) -> str:
        """The summary in one line: lines read, rows, and the commonest reason a line was skipped."""
        bad = sum(self.malformed.values())
        text = f"{self.lines} lines, {self.rows} rows, {bad} malformed"
        if bad:
            reason, count = self.malformed.most_common(1)[0]
            text += f" ({count} x {reason}, first at {self.source}:{self.first_lines[reason][0]})"
        return text

    def to_dict(self) -> dict:
        return {"source": self.source, "lines": self.lines, "rows": self.rows, "malformed": dict(self.malformed),
                "first_lines": self.first_lines}  # fmt: skip


def row_or_error(line: str) -> tuple[dict | None, str, str]:
    """(the row of a raw line, "", ""), or (None, why it is malformed, its whole message)."""
    if not line.strip():
        return None, EMPTY_LINE, EMPTY_LINE
    try:
        return row_from_line(line), "", ""
    except FormatError as e:
        return None, e.reason, str(e)


def rows_from_lines(lines: Iterable[str], report: LoadReport) -> Iterator[dict]:
    """Rows of the well-formed lines; the others are counted in `report` by reason."""
    for line_no, line in enumerate(lines, 1):
        report.lines += 1
        row, reason, error = row_or_error(line)
        if row is None:
            report.bad(reason, line_no, error)
        else:
            report.rows += 1
            yield row
