"""What a model writes for P: prompts, read with python-chess: its greedy answers to a split's positions, side by
side for several models, beside the labels' own habits (the Stockfish lines the models learned from).

    python scripts/read_answers.py rookworld_trl/assets/model build/stage7/cooldown-1600 --split test

Per answer: B: legal, and why not (environment.illegal_kind); B: = the engine's top move; B: copies M:'s first
slot (the labels list M: in a shuffled order, so the engine's B: is M:'s first slot ~1 time in 5); B: among the
listed moves; B: = the listed move with the highest E:; distinct moves of the five slots; answers that repeat a
slot; listed moves that are legal.
"""

from __future__ import annotations

import argparse
from collections import Counter

import chess
import pyarrow.parquet as pq

from rookworld_trl.chess.environment import ILLEGAL_KINDS, illegal_kind, legal_move
from rookworld_trl.chess.formats import parse_policy_completion, policy_prompt
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import load_model_and_tokenizer

DISTINCT = "distinct moves listed (of 5)"  # a mean; every other habit is a share of the answers


def habits(fens: list[str], best: list[str], completions: list[str]) -> dict[str, float]:
    """The share of answers with each habit (percent), and the mean distinct moves listed."""
    n, c = len(fens), Counter()
    for fen, truth, text in zip(fens, best, completions, strict=True):
        board, p = chess.Board(fen), parse_policy_completion(text)
        kind = illegal_kind(board, p.best) if p.best else "no_move"
        c[f"B: illegal, {kind}" if kind else "B: legal"] += 1
        c["B: = engine's top move"] += p.best == truth
        c["B: = M:'s first slot"] += bool(p.moves) and p.best == p.moves[0]
        c["B: among the listed moves"] += p.best in p.moves
        if p.evals and len(p.evals) == len(p.moves):
            c["B: = the listed move of highest E:"] += p.best == p.moves[p.evals.index(max(p.evals))]
        c["answers that repeat a slot"] += len(set(p.moves)) < len(p.moves)
        c[DISTINCT] += len(set(p.moves))
        legal = [m for m in p.moves if legal_move(board, m)]
        c["listed moves legal"] += len(legal) / max(len(p.moves), 1)
    order = ["B: legal", *(f"B: illegal, {k}" for k in ("no_move", *ILLEGAL_KINDS))]
    order += [k for k in c if k not in order]
    return {k: c[k] / n * (1 if k == DISTINCT else 100) for k in order if k in c}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="rookworld_trl/assets/data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=None, help="the first N P: positions (default: all)")
    args = ap.parse_args()
    rows = pq.read_table(f"{args.data}/{args.split}.parquet", columns=["task", "fen", "best", "completion"])
    rows = [r for r in rows.to_pylist() if r["task"] == "P"][: args.n]
    fens, best = [r["fen"] for r in rows], [r["best"] for r in rows]
    table = {"labels": habits(fens, best, [r["completion"] for r in rows])}
    for name in args.models:
        model, tokenizer = load_model_and_tokenizer(name)
        prompts = [policy_prompt(fen, model.config.rookworld_fen_width) for fen in fens]
        table[name] = habits(fens, best, generate_completions(model, tokenizer, prompts, max_new_tokens=128))
    keys = list(dict.fromkeys(k for t in table.values() for k in t))
    print(f"{len(fens)} P: positions of {args.data}/{args.split}, greedy\n")
    print("| habit | " + " | ".join(table) + " |\n|---|" + "---|" * len(table))
    for k in keys:
        cells = [f"{t[k]:.2f}" if k == DISTINCT else f"{t.get(k, 0):.1f}%" for t in table.values()]
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
