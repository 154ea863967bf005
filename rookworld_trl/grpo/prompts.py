"""Mixing positions into a generation batch's P: prompts (self-play, the curriculum, tactics): each P: row replaced
at some odds, drawn by a hash that every copy of a prompt (a GRPO group) on every process draws alike.
"""

from __future__ import annotations

import hashlib

from rookworld_trl.chess.formats import task_of


def unit_hash(*parts) -> float:
    """A number in [0, 1) from `parts`, the same on every process and run (Python's hash() is salted)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def replace_policy_rows(
    rows: list[dict], ratio: float, key: tuple, tags: tuple[str, str], pick
) -> tuple[list, int, int]:
    """`rows` with each P: row replaced, at odds `ratio`, by `pick(row, u)` (u uniform in [0, 1)); the number of
    P: rows and of replaced ones. Both draws hash (*key, prompt, tag), so every copy of a prompt (a GRPO group) on
    every rank gets the same replacement."""
    out, policy_rows, replaced = [], 0, 0
    for row in rows:
        if task_of(row["prompt"], row.get("task")) == "P":
            policy_rows += 1
            if unit_hash(*key, row["prompt"], tags[0]) < ratio:
                row = pick(row, unit_hash(*key, row["prompt"], tags[1]))
                replaced += 1
        out.append(row)
    return out, policy_rows, replaced
