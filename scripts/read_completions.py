"""Read what the policy wrote: listed-move precision, B:'s choice and the common openings of the P: answers a run
sampled, straight from its completions/*.parquet (independent of the figures the run logged).

    python scripts/read_completions.py runs/grpo_tiny_cpu              # the last 30 steps
    python scripts/read_completions.py runs/grpo_tiny_cpu --steps 1-10

Per answer that parses (python-chess only): precision = distinct legal / distinct listed; B: legal; selection =
B: legal minus the legal share of the distinct listed moves, on lists that mix legal and illegal moves; B: = the
listed move with the highest E:; and the five most common first-listed moves with their share.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
from collections import Counter

import chess
import pandas as pd

from rookworld_trl.chess.formats import parse_policy_completion, parse_policy_prompt


def read(run: str, first: int | None, last: int | None, tail: int) -> pd.DataFrame:
    files = sorted(glob.glob(os.path.join(run, "completions", "completions_*.parquet")))
    frame = pd.concat([pd.read_parquet(f, columns=["step", "prompt", "completion"]) for f in files])
    frame = frame[frame["prompt"].str.startswith("P:")]
    steps = sorted(frame["step"].unique())
    if first is None:
        first, last = steps[-min(tail, len(steps))], steps[-1]  # a run shorter than the tail: all of it
    return frame[(frame["step"] >= first) & (frame["step"] <= last)]


def figures(frame: pd.DataFrame) -> dict:
    precision, b_legal, selection, best_e, distinct, firsts = [], [], [], [], [], Counter()
    for prompt, completion in zip(frame["prompt"], frame["completion"], strict=True):
        parsed = parse_policy_completion(completion)
        if parsed.moves:
            firsts[parsed.moves[0]] += 1
        if not parsed.ok:
            continue
        board = chess.Board(parse_policy_prompt(prompt))
        listed = list(dict.fromkeys(parsed.moves))
        legal = [_legal(board, m) for m in listed]
        share = sum(legal) / len(legal)
        best_legal = _legal(board, parsed.best)
        precision.append(share)
        distinct.append(len(listed))
        b_legal.append(best_legal)
        if 0 < sum(legal) < len(legal):
            selection.append(best_legal - share)
        evals = dict(zip(parsed.moves, parsed.evals, strict=False))
        best_e.append(evals.get(parsed.best) == max(evals.values()))
    mean = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
    total = sum(firsts.values())
    return {
        "answers": len(frame),
        "parsed": len(precision),
        "precision": mean(precision),
        "distinct": mean(distinct),
        "b_legal": mean(b_legal),
        "selection": mean(selection),
        "mixed lists": len(selection),
        "b_best_e": mean(best_e),
        "first moves": ", ".join(f"{m} {n / total:.1%}" for m, n in firsts.most_common(5)),
    }


def _legal(board: chess.Board, move: str) -> bool:
    try:
        return chess.Move.from_uci(move) in board.legal_moves
    except ValueError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a GRPO output_dir with completions/")
    parser.add_argument("--steps", help="FIRST-LAST (default: the last --tail steps)")
    parser.add_argument("--tail", type=int, default=30)
    args = parser.parse_args()
    first, last = map(int, args.steps.split("-")) if args.steps else (None, None)
    for name, value in figures(read(args.run, first, last, args.tail)).items():
        print(f"{name:<12} {value:.3f}" if isinstance(value, float) else f"{name:<12} {value}")


if __name__ == "__main__":
    main()
