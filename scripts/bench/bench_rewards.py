"""Throughput of the reward functions, as TRL calls them (batches of prompts x generations).

    .venv/bin/python scripts/bench/bench_rewards.py                        # defaults: 128 positions, 8 generations
    .venv/bin/python scripts/bench/bench_rewards.py --depth 8 --workers 2 --positions 256

Figures printed (completions per second):
- A: env_reward on one CPU core (the process is pinned), each prompt repeated per generation as in GRPO
  (--generations, and 2: TRL's minimum), and with every prompt distinct (the python-chess truth, about
  three quarters of the cost, is then computed once per completion).
- P cold: policy_reward with an empty memo and no disk cache: every position (and every position after a
  written move the engine did not list) is searched by the pool, in parallel over --workers engines.
- P warm: the same batches again, plus engine-answer variants, on one core: memo hits only.
Targets from the issue: A >= 5,000/s, P warm >= 2,000/s on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import time

import chess

from rookworld_trl.chess.engine import EngineLimit, EnginePool
from rookworld_trl.chess.environment import env_sample, random_boards
from rookworld_trl.chess.formats import env_completion, env_prompt, policy_completion, policy_prompt
from rookworld_trl.grpo.rewards.functions import make_env_reward, make_policy_reward


def random_games(n: int, seed: int) -> list[tuple[str, list[str]]]:
    """n distinct (fen, moves played to reach it) from random play; finished games skipped."""
    return [(b.fen(), [m.uci() for m in b.move_stack]) for b in random_boards(n, seed)]


@contextlib.contextmanager
def one_core():
    """Pin this process to one CPU for a single-core figure (engines started earlier keep their own)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def env_batch(fen: str, history: list[str], rng: random.Random, k: int) -> tuple[list[str], list[str]]:
    """One A: prompt x k completions: true ones, a wrong square, wrong flags, truncated, garbage."""
    board = chess.Board(fen)
    move = rng.choice(list(board.legal_moves)).uci() if rng.random() < 0.9 else "a1a1"
    sample = env_sample(fen, move, history)
    prompt = env_prompt(sample.fen, sample.move, sample.history)
    true = env_completion(sample.new_fen, sample.reward, sample.terminated, sample.truncated)
    placement = sample.new_fen.split()[0]
    wrong_square = true.replace(placement, placement[::-1], 1)
    variants = [
        true,
        true,
        true,
        wrong_square,
        true.replace("+0+0", "+1+0"),
        true[: len(true) // 2],
        "e4 e5 Nf3",
    ]
    return [prompt] * k, [rng.choice(variants) for _ in range(k)]


def policy_batch(fen: str, rng: random.Random, k: int) -> tuple[list[str], list[str]]:
    """One P: prompt x k completions as an early model writes them: random distinct legal moves."""
    legal = [m.uci() for m in chess.Board(fen).legal_moves]
    completions = []
    for i in range(k):
        moves = rng.sample(legal, min(5, len(legal)))
        evals = [round(rng.uniform(-3, 3), 2) for _ in moves]
        completions.append(policy_completion(moves, evals, moves[0]) if i % 8 != 7 else " e2e4 E: ? B:")
    return [policy_prompt(fen)] * k, completions


def rate(func, batches) -> tuple[float, float, list]:
    """Completions per second of `func` over the batches (wall clock, and per CPU-second of this process:
    the fair single-core figure on a shared machine), and all rewards."""
    wall, cpu, out = time.perf_counter(), time.process_time(), []
    for prompts, completions in batches:
        out += func(prompts=prompts, completions=completions)
    n = sum(len(p) for p, _ in batches)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu), out


def one_core_figure(wall: float, cpu: float) -> str:
    return f"{cpu:,.0f} completions per CPU-second ({wall:,.0f}/s wall) on one core"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, default=128)
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (GRPO's G)")
    parser.add_argument("--prompts-per-batch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, k, per = random.Random(args.seed), args.generations, args.prompts_per_batch
    games = random_games(args.positions, args.seed)

    def batched(pairs):  # join per-prompt (prompts, completions) into TRL-sized batches
        return [
            ([p for ps, _ in pairs[i : i + per] for p in ps], [c for _, cs in pairs[i : i + per] for c in cs])
            for i in range(0, len(pairs), per)
        ]

    env_reward = make_env_reward()
    env_out = []
    for g in (k, 2, 1):  # completions per prompt; the same number of completions each time
        env_batches = batched([env_batch(fen, moves[-9:], rng, g) for fen, moves in games * (k // g)])
        with one_core():
            wall, cpu, out = rate(env_reward, env_batches)
        env_out += out
        print(f"A: {one_core_figure(wall, cpu)}, {len(out)} completions, {g} per prompt")
    print(f"A: mean reward {sum(env_out) / len(env_out):.3f} over the mix")

    with EnginePool(workers=args.workers, limit=EngineLimit(depth=args.depth)) as pool:
        policy_reward = make_policy_reward(engine=pool)
        batches = batched([policy_batch(fen, rng, k) for fen, _ in games])
        cold_rate, _, _ = rate(policy_reward, batches)
        n = sum(len(p) for p, _ in batches)
        print(
            f"P cold (depth {args.depth}, {args.workers} engines): {cold_rate:,.1f} completions/s, "
            f"{pool.engine_calls} positions searched ({pool.engine_calls / (n / cold_rate):,.1f}/s) for {n} "
            f"completions over {len(games)} prompts"
        )
        # Warm: the same batches, and answers built from the engine's own analyses (memo hits only).
        analyses = policy_reward.grader.analyses([fen for fen, _ in games])
        answers, with_top = [], []
        for (fen, _), analysis in zip(games, analyses, strict=True):
            lines, texts = analysis[:5], []
            for i in range(k):
                shuffled = rng.sample(lines, len(lines))
                best = lines[0].move if i % 2 == 0 else shuffled[0].move
                with_top.append(best == lines[0].move)
                texts.append(
                    policy_completion([m.move for m in shuffled], [m.cp / 100 for m in shuffled], best)
                )
            answers.append(([policy_prompt(fen)] * k, texts))
        calls = pool.engine_calls
        with one_core():
            warm = rate(policy_reward, batches)
            answer = rate(policy_reward, batched(answers))
        top = [r for r, t in zip(answer[2], with_top, strict=True) if t]
        assert pool.engine_calls == calls, "warm runs must not search"
        print(f"P warm: {one_core_figure(*warm[:2])}, random legal moves (their searches memoized)")
        print(f"P warm: {one_core_figure(*answer[:2])}, engine answers (half with another best move)")
        print(f"P: mean reward of engine answers with the top move {sum(top) / len(top):.3f}")


if __name__ == "__main__":
    main()
