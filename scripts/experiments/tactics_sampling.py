"""How often a model's sampled answers solve tactics positions, by temperature: the exploration GRPO has on them
(a group whose samples never solve a position has nothing to push towards the solution).

    python scripts/experiments/tactics_sampling.py rookworld_trl/assets/model                     # mate1, 150 positions x 8
    python scripts/experiments/tactics_sampling.py runs/grpo_tiny_cpu/final --kind only --temperatures 0.25,0.5

Per temperature, on `--positions` positions of `--kind` from the tactics data's `--split` (seeded draw), each
sampled `--samples` times as a GRPO group would be: the share of answers whose B: is legal, the share whose B:
solves the position (chess/tactics.solves: it mates, forces mate in two, or is the engine's best), and the share
of groups with at least one solution.
"""

from __future__ import annotations

import argparse

import chess

from rookworld_trl.chess.environment import legal_best_move
from rookworld_trl.chess.tactics import solves
from rookworld_trl.data.layout import column
from rookworld_trl.data.load import load_rookworld_dataset
from rookworld_trl.model.generation import generate_completions
from rookworld_trl.model.loading import load_model_and_tokenizer, trained_fen_width


def rates(model, tokenizer, rows: dict, samples: int, temperature: float, seed: int) -> dict[str, float]:
    prompts = [p for p in rows["prompt"] for _ in range(samples)]
    outs = generate_completions(model, tokenizer, prompts, max_new_tokens=80, do_sample=True,
                                temperature=temperature, seed=seed)  # fmt: skip
    legal = solved = groups = 0
    for i, (fen, kind, best) in enumerate(zip(rows["fen"], rows["kind"], rows["best"], strict=True)):
        board = chess.Board(fen)
        moves = [legal_best_move(board, o) for o in outs[i * samples : (i + 1) * samples]]
        legal += sum(m is not None for m in moves)
        hits = sum(solves(board, kind, m, best) for m in moves)
        solved, groups = solved + hits, groups + (hits > 0)
    return {
        "legal": legal / len(prompts),
        "solved": solved / len(prompts),
        "groups": groups / len(rows["fen"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--tactics", default="rookworld_trl/assets/tactics")
    p.add_argument("--split", default="train")
    p.add_argument("--kind", default="mate1", choices=["mate1", "mate2", "only"])
    p.add_argument("--positions", type=int, default=150)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--temperatures", default="0.25,0.5,0.75,1.0,1.25")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model, tokenizer = load_model_and_tokenizer(a.model)
    ds = load_rookworld_dataset(a.tactics, split=a.split, fen_width=trained_fen_width(model)).filter(
        lambda k: k == a.kind, input_columns="kind"
    )
    ds = ds.shuffle(seed=a.seed).select(range(min(a.positions, len(ds))))
    rows = {name: column(ds, name) for name in ("prompt", "fen", "kind", "best")}
    print(f"{a.model}: {len(ds)} {a.kind} positions of {a.tactics} ({a.split}) x {a.samples} samples")
    for t in (float(x) for x in a.temperatures.split(",")):
        r = rates(model, tokenizer, rows, a.samples, t, a.seed + 1)
        print(
            f"T={t:<5} B: legal {r['legal']:6.1%}  B: solves {r['solved']:6.1%}  groups with a solution {r['groups']:6.1%}"
        )


if __name__ == "__main__":
    main()
