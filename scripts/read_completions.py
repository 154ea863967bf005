"""Read what the policy wrote: listed-move precision, B:'s choice and the common openings of the P: answers a run
sampled, straight from its completions/*.parquet (independent of the figures the run logged).

    python scripts/read_completions.py runs/grpo_tiny_cpu              # the last 30 steps
    python scripts/read_completions.py runs/grpo_tiny_cpu --steps 1-10
    python scripts/read_completions.py runs/tactics --tactics rookworld_trl/assets/tactics   # + per tactic kind

Per answer that parses (python-chess only): precision = distinct legal / distinct listed; B: legal; selection =
B: legal minus the legal share of the distinct listed moves, on lists that mix legal and illegal moves; B: = the
listed move with the highest E:; and the five most common first-listed moves with their share. With --tactics
(the run's tactics data), the answers to its train positions by kind: solved (chess/tactics.solves), B: legal,
the solution among the listed moves.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
from collections import Counter

import chess
import pandas as pd

from rookworld_trl.chess.environment import legal_best_move
from rookworld_trl.chess.formats import parse_policy_completion, parse_policy_prompt
from rookworld_trl.chess.tactics import solves


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


def tactics_figures(frame: pd.DataFrame, tactics: str) -> pd.DataFrame:
    """Per tactic kind: the answers to the tactics train positions, the share solved, B: legal, solution listed."""
    rows = pd.read_parquet(os.path.join(tactics, "train.parquet"), columns=["fen", "kind", "best"])
    kind, best = dict(zip(rows.fen, rows.kind, strict=True)), dict(zip(rows.fen, rows.best, strict=True))
    out = []
    for prompt, completion in zip(frame["prompt"], frame["completion"], strict=True):
        fen = parse_policy_prompt(prompt)
        if fen in kind:
            board, parsed = chess.Board(fen), parse_policy_completion(completion)
            move = legal_best_move(board, completion)
            right = solves(board, kind[fen], move, best[fen])
            out.append({"kind": kind[fen], "solved": right, "b_legal": move is not None,
                        "listed": best[fen] in parsed.moves})  # fmt: skip
    table = pd.DataFrame(out, columns=["kind", "solved", "b_legal", "listed"])
    return table.groupby("kind").agg(answers=("solved", "size"), solved=("solved", "mean"),
                                      b_legal=("b_legal", "mean"), listed=("listed", "mean"))  # fmt: skip


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
    parser.add_argument("--tactics", help="the run's tactics data: answers to its positions by kind")
    args = parser.parse_args()
    first, last = map(int, args.steps.split("-")) if args.steps else (None, None)
    frame = read(args.run, first, last, args.tail)
    for name, value in figures(frame).items():
        print(f"{name:<12} {value:.3f}" if isinstance(value, float) else f"{name:<12} {value}")
    if args.tactics:
        print(tactics_figures(frame, args.tactics).round(3).to_string())


if __name__ == "__main__":
    main()
