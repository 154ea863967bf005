"""What a model writes for P: prompts, read with python-chess: its greedy answers to a split's positions, side by
side for several models, beside the labels' own habits (the Stockfish lines the models learned from).

    python scripts/read_answers.py rookworld_trl/assets/model build/stage7/cooldown-1600 --split test
    python scripts/read_answers.py rookworld_trl/assets/model runs/grpo_tiny_cpu/final --engine   # does B: choose better?

Per answer: B: legal, and why not (environment.illegal_kind); B: = the engine's top move; B: copies M:'s first
slot (the labels list M: in a shuffled order, so the engine's B: is M:'s first slot ~1 time in 5); B: among the
listed moves; B: = the listed move with the highest E:; distinct moves of the five slots; answers that repeat a
slot; listed moves that are legal. With --engine, Stockfish (depth 8, the labels' depth) also searches each answer's
listed legal moves and B: together: B: = the best of its own listed moves, and B:'s expected-score loss against
the engine's top move (illegal: 1, as the eval counts it); and for every model after the first, the answers whose
B: differs from the first model's: what the change gained (a better move among the listed ones, or a reshuffle).
"""

from __future__ import annotations

import argparse
from collections import Counter

import chess
import chess.engine
import pyarrow.parquet as pq

from rookworld_trl.chess.engine import MATE_SCORE, find_stockfish
from rookworld_trl.chess.environment import ILLEGAL_KINDS, illegal_kind, legal_move
from rookworld_trl.chess.formats import parse_policy_completion, policy_prompt
from rookworld_trl.grpo.rewards.policy import expected_score_loss
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


def choices(engine, fen: str, top_cp: int, text: str) -> tuple[float, bool]:
    """(B:'s expected-score loss against the engine's top move, B: = the best of the listed legal moves), one
    search over the listed legal moves and B: (an illegal B: loses 1 and is not the best)."""
    board, p = chess.Board(fen), parse_policy_completion(text)
    b = legal_move(board, p.best) if p.best else None
    moves = {m for m in (legal_move(board, u) for u in p.moves) if m is not None} | ({b} if b else set())
    if b is None:
        return 1.0, False
    infos = engine.analyse(board, chess.engine.Limit(depth=8), multipv=len(moves), root_moves=list(moves))
    cps = {i["pv"][0]: i["score"].pov(board.turn).score(mate_score=MATE_SCORE) for i in infos}
    loss = max(0.0, expected_score_loss(top_cp, cps[b]))  # as the reward and the eval compute it
    return loss, cps[b] >= max(cps.values())


def engine_table(fens: list[str], top_cps: list[int], answers: dict[str, list[str]]) -> None:
    """Per model: mean B: loss and B: = the best listed; then each model's changed answers against the first's."""
    with chess.engine.SimpleEngine.popen_uci(find_stockfish()) as engine:
        graded = {
            name: [choices(engine, *row) for row in zip(fens, top_cps, texts, strict=True)]
            for name, texts in answers.items()
        }
    names, n = list(graded), len(fens)
    print("\n| with Stockfish | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    losses = [f"{sum(loss for loss, _ in graded[m]) / n:.4f}" for m in names]
    print("| B: expected-score loss (illegal: 1) | " + " | ".join(losses) + " |")
    bests = [f"{100 * sum(best for _, best in graded[m]) / n:.1f}%" for m in names]
    print("| B: = the best of its listed moves | " + " | ".join(bests) + " |")
    first = names[0]
    for name in names[1:]:
        pairs = [
            (graded[first][i], graded[name][i])
            for i in range(n)
            if parse_policy_completion(answers[first][i]).best
            != parse_policy_completion(answers[name][i]).best
        ]
        if not pairs:
            continue
        k = len(pairs)
        print(
            f"\n{name}: B: changed in {k} of {n} answers; among them B: loss "
            f"{sum(b[0] for b, _ in pairs) / k:.4f} -> {sum(a[0] for _, a in pairs) / k:.4f}, "
            f"B: = the best listed {sum(b[1] for b, _ in pairs)} -> {sum(a[1] for _, a in pairs)}; "
            f"a better B: in {sum(a[0] < b[0] - 1e-9 for b, a in pairs)}, a worse one in "
            f"{sum(a[0] > b[0] + 1e-9 for b, a in pairs)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="rookworld_trl/assets/data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=None, help="the first N P: positions (default: all)")
    ap.add_argument(
        "--engine", action="store_true", help="grade B:'s choice among the listed moves (Stockfish)"
    )
    args = ap.parse_args()
    rows = pq.read_table(
        f"{args.data}/{args.split}.parquet", columns=["task", "fen", "best", "evals", "completion"]
    )
    rows = [r for r in rows.to_pylist() if r["task"] == "P"][: args.n]
    fens, best = [r["fen"] for r in rows], [r["best"] for r in rows]
    table, answers = {"labels": habits(fens, best, [r["completion"] for r in rows])}, {}
    for name in args.models:
        model, tokenizer = load_model_and_tokenizer(name)
        prompts = [policy_prompt(fen, model.config.rookworld_fen_width) for fen in fens]
        answers[name] = generate_completions(model, tokenizer, prompts, max_new_tokens=128)
        table[name] = habits(fens, best, answers[name])
    keys = list(dict.fromkeys(k for t in table.values() for k in t))
    print(f"{len(fens)} P: positions of {args.data}/{args.split}, greedy\n")
    print("| habit | " + " | ".join(table) + " |\n|---|" + "---|" * len(table))
    for k in keys:
        cells = [f"{t[k]:.2f}" if k == DISTINCT else f"{t.get(k, 0):.1f}%" for t in table.values()]
        print(f"| {k} | " + " | ".join(cells) + " |")
    if args.engine:
        top_cps = [round(r["evals"][0] * 100) for r in rows]  # the labels' top line, best first
        engine_table(fens, top_cps, answers)


if __name__ == "__main__":
    main()
