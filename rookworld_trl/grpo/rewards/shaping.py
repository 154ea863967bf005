"""Reward shaping shared by both tasks: the scale's constants and `shape`, which turns a completion's pass/fail
checks and smooth quality into its reward under each shaping (docs/FORMATS.md, rookworld_trl/grpo/rewards/functions.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from rookworld_trl.chess.engine import WIN_K, expected_score  # noqa: F401 (the scale's, re-exported here)

LAYOUT_PENALTY = 0.2  # a P: answer that parses but is not laid out in the fixed widths
PENALTY = -0.3  # unparseable: mild, the seeds found -1.0 destabilised training
SHAPINGS = ("graduated", "linear", "continuous", "dense", "decisive", "precise", "binary")
BEST_ZERO_AT = 0.2  # best move: a loss of 0.2 expected score (~230 cp from equality; lichess: a mistake) is 0
EVAL_ZERO_AT = 0.2  # evaluation: an error of 0.2 expected score scores 0
EVAL_CLOSE = 0.75  # evals check: mean score >= 0.75, i.e. errors of ~0.05 expected score (~50 cp at equality)


def shape(checks: Mapping[str, bool], quality: float, shaping: str) -> float:
    """The reward of a parseable completion from its pass/fail checks and its smooth quality in [0, 1].

    >>> shape({"a": True, "b": True, "c": False}, 0.9, "graduated"), shape({"a": True}, 1.0, "binary")
    (0.6, 1.0)
    """
    passed = sum(checks.values()) / len(checks)
    if shaping == "graduated":
        if passed == 1:
            return 1.0  # perfect
        if passed >= 0.8:
            return 0.8  # near perfect
        return 0.6 if passed > 0.5 else 0.4 if passed > 0 else 0.2  # most / some / format only
    if shaping == "linear":
        return 0.2 + 0.8 * passed
    if shaping in ("continuous", "dense", "decisive", "precise"):  # the callers pass their own quality
        return 0.2 + 0.8 * quality
    if shaping == "binary":
        return float(passed == 1)
    raise ValueError(f"unknown shaping {shaping!r}, expected one of {SHAPINGS}")


def check_shaping(shaping: str) -> str:
    if shaping not in SHAPINGS:
        raise ValueError(f"unknown shaping {shaping!r}, expected one of {SHAPINGS}")
    return shaping
