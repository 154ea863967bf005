"""What a run does to the rows it read (after --exclude, data/exclude.py): one task, the P:/A: mix, one FEN width,
the cap.
Each is a pure function of the rows and its settings that returns (rows, its own report); data/load.py runs
them in that order and says the reports.

    rows, mixed = mix(rows, 0.3, seed=0)            # mixed: {"P": n, "A": m}, the rows of each task kept
    rows, padded = pad_fen_width(rows, None, "data/x")  # padded.width; padded.one_line() when it re-padded
    rows, kept = cap(rows, 1000)                    # kept: the rows left
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow.compute as pc

from rookworld_trl.chess.formats import FEN_WIDTH, policy_prompt, prompt_fen_width
from rookworld_trl.data.layout import arrow_batches, task_rows


def only_task(ds, task: str | None) -> tuple[object, None]:
    """(the rows of `task`, "P" or "A"; None: `ds` as it is) and no report: nothing to say."""
    if task is None:
        return ds, None
    return ds.filter(lambda t: t == task, input_columns="task"), None


# ------------------------------------------------------------------------------------------------- mix


def check_ratio(mix_env_ratio: float) -> None:
    if not 0.0 <= mix_env_ratio <= 1.0:
        raise ValueError(f"mix_env_ratio must be in [0, 1], got {mix_env_ratio}")


def mix_counts(n_policy: int, n_env: int, mix_env_ratio: float) -> tuple[int, int]:
    """The most (P:, A:) rows, out of those available, whose A: fraction is `mix_env_ratio` (rounded down)."""
    check_ratio(mix_env_ratio)
    if mix_env_ratio in (0.0, 1.0):
        counts = (0, n_env) if mix_env_ratio == 1.0 else (n_policy, 0)
    else:
        total = min(n_policy / (1 - mix_env_ratio), n_env / mix_env_ratio)
        counts = (int(total * (1 - mix_env_ratio) + 1e-9), int(total * mix_env_ratio + 1e-9))
    if sum(counts) == 0:
        alone = "0 to train on its P: rows alone" if n_policy else "1 to train on its A: rows alone"
        raise ValueError(
            f"mix_env_ratio={mix_env_ratio}: the source has {n_policy} P: and {n_env} A: rows; "
            f"set --mix_env_ratio {alone}"
        )
    return counts


def mix(ds: datasets.Dataset, mix_env_ratio: float | None, seed: int) -> tuple[datasets.Dataset, dict | None]:
    """(exactly the fraction `mix_env_ratio` of A: rows, as many rows as that allows, shuffled by `seed`; the
    rows of each task kept). None: `ds` as it is."""
    if mix_env_ratio is None:
        return ds, None
    policy, env = task_rows(ds)
    n_policy, n_env = mix_counts(len(policy), len(env), mix_env_ratio)
    rng = random.Random(seed)
    chosen = rng.sample(policy, n_policy) + rng.sample(env, n_env)
    rng.shuffle(chosen)
    # an array: datasets hashes it for the fingerprint at once, a list item by item (3 s for 478k)
    return ds.select(np.array(chosen, dtype=np.int64)), {"P": n_policy, "A": n_env}


# ------------------------------------------------------------------------------------------- FEN width


def fen_widths(prompts: Iterable[str]) -> Counter:
    """How many P: prompts among `prompts` are padded to each FEN field width."""
    return Counter(w for prompt in prompts if (w := prompt_fen_width(prompt)))


def rows_fen_widths(ds: datasets.Dataset) -> Counter:
    """fen_widths of a dataset's prompts, counted by Arrow a batch at a time (millions of rows in a second or
    two); a batch holding non-ASCII text is counted by fen_widths itself (Arrow's lengths are in bytes)."""
    counts = Counter()
    for _, batch in arrow_batches(ds, "prompt"):
        prompts = batch.column("prompt")
        if not pc.all(pc.string_is_ascii(prompts)).as_py():
            counts.update(fen_widths(prompts.to_pylist()))
            continue
        length = pc.binary_length(prompts)  # prompt_fen_width: "P: " + a body ending in a space + "M:"
        padded = pc.and_(
            pc.and_(pc.starts_with(prompts, "P: "), pc.greater_equal(length, 6)),
            pc.equal(pc.utf8_slice_codeunits(prompts, -3, -2), " "),
        )
        for item in pc.value_counts(pc.filter(pc.subtract(length, 5), padded)).to_pylist():
            counts[item["values"]] += item["counts"]
    return counts


def rows_fen_width(ds: datasets.Dataset) -> int | None:
    """chess/formats.py fen_width_of a dataset's prompts (rows_fen_widths)."""
    counts = rows_fen_widths(ds)
    return counts.most_common(1)[0][0] if counts else None


@dataclass(frozen=True)
class Padded:
    """What `pad_fen_width` did: the width it padded to, and the P: prompts it found at each width."""

    source: str
    width: int
    found: Counter = field(default_factory=Counter)

    def one_line(self) -> str | None:
        """What it re-padded (None: every P: prompt was at `width` already)."""
        if set(self.found) <= {self.width}:
            return None
        others = ", ".join(f"{n} at width {w}" for w, n in sorted(self.found.items()) if w != self.width)
        return f"{self.source}: P: prompts re-padded to FEN width {self.width} ({others}; set fen_width to choose)"


def pad_fen_width(
    ds, width: int | None, source: str, prompts: Iterable[str] | None = None
) -> tuple[object, Padded]:
    """(`ds` with every P: prompt (and its text) padded to `width`, what it did). `width` None: the most common
    width among `prompts` (a sample of ds's; None: all of ds's), the way the data was written."""
    found = rows_fen_widths(ds) if prompts is None else fen_widths(prompts)
    report = Padded(source, width or (found.most_common(1)[0][0] if found else FEN_WIDTH), found)
    if report.one_line() is None:
        return ds, report

    def pad(row):
        if row["task"] != "P":
            return row
        prompt = policy_prompt(row["fen"], report.width)
        return {**row, "prompt": prompt, "text": prompt + row["completion"]}

    return ds.map(pad), report


# ------------------------------------------------------------------------------------------------- cap


def cap(ds, max_samples: int | None) -> tuple[object, int | None]:
    """(the first `max_samples` rows of `ds`, how many rows are left; None: all, uncounted). A streamed dataset
    is capped as it is read."""
    if max_samples is None:
        return ds, None
    if not hasattr(ds, "__len__"):
        return ds.take(max_samples), None
    return ds.select(range(min(max_samples, len(ds)))), min(max_samples, len(ds))
