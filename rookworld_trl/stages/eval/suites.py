"""The evaluation suites on held-out items: policy, environment, mate-in-one, tactics (the games: game_suites.py).

Each suite takes a `generate` callable, `generate(prompts, *, max_new_tokens, do_sample, temperature,
top_k, seed) -> completions` (in practice `generation.generate_completions` with the model bound; in
tests a script of known answers), and returns `{name: Metric}` (rookworld_trl/stages/eval/stats.py: one value per
item, so a run reports a confidence interval and two models on the same items a paired one).
python-chess referees everything; Stockfish gives the policy truth (analyses passed in, best first).

    python -m rookworld_trl.stages.eval.evaluate --help      (the command that runs these: `rookworld eval`)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import chess
import chess.engine
from tqdm.auto import tqdm

from rookworld_trl.chess.engine import MATE_SCORE, EnginePool, MoveEval
from rookworld_trl.chess.environment import (
    ILLEGAL_KINDS,
    env_truth,
    illegal_kind,
    legal_best_move,
    legal_move,
    mating_moves,
)
from rookworld_trl.chess.formats import (
    FEN_WIDTH,
    ParsedPolicy,
    parse_env_completion,
    parse_policy_completion,
    policy_prompt,
    strip_eos,
)
from rookworld_trl.chess.tactics import KINDS, solves
from rookworld_trl.grpo.rewards.functions import score_env, similarity
from rookworld_trl.grpo.rewards.policy import (  # the training rewards, as eval figures
    PolicyGrader,
    answer_figures,
    best_move_loss,
    score_policy,
)
from rookworld_trl.stages.eval.stats import Metric

Generate = Callable[..., list[str]]
CHUNK = 256  # prompts per generate call: one progress-bar tick, still large enough to batch well


def generate_all(generate: Generate, prompts: list[str], desc: str, seed: int, **kwargs) -> list[str]:
    """`generate` over chunks of prompts behind a progress bar; chunk i samples with seed + i."""
    out: list[str] = []
    for i, start in enumerate(tqdm(range(0, len(prompts), CHUNK), desc=desc, unit="chunk", leave=False)):
        chunk = prompts[start : start + CHUNK]
        completions = generate(chunk, seed=seed + i, **kwargs)
        if len(completions) != len(chunk):
            raise ValueError(f"generate returned {len(completions)} completions for {len(chunk)} prompts")
        out += completions
    return out


@dataclass(frozen=True)
class SuiteDecoding:
    """How a generating suite decodes: each of `names` ("greedy"; "sampled": top-k `top_k` at `temperature`,
    ROOK's 5 and 0.6), up to `max_new_tokens`, seeded by `seed`; P: prompts padded to `fen_width`."""

    names: tuple[str, ...] = ("greedy",)
    temperature: float = 0.6
    top_k: int = 5
    max_new_tokens: int = 128
    seed: int = 0
    fen_width: int = FEN_WIDTH

    def kwargs(self, name: str) -> dict:
        """generate() settings of the decoding `name`."""
        if name == "greedy":
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        if name == "sampled":
            return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                    "top_k": self.top_k}  # fmt: skip
        raise ValueError(f"unknown decoding {name!r}: use 'greedy' or 'sampled'")

    def answers(self, generate: Generate, fens: Sequence[str], suite: str) -> Iterator[tuple[str, list[str]]]:
        """(decoding name, the completions of `fens`' P: prompts) for each decoding, with `suite`'s bar."""
        prompts = [policy_prompt(fen, self.fen_width) for fen in fens]
        for name in self.names:
            yield name, generate_all(generate, prompts, f"{suite}/{name}", self.seed, **self.kwargs(name))


GREEDY, SAMPLED = SuiteDecoding(), SuiteDecoding(("sampled",))  # the suites' defaults


# ----------------------------------------------------------------------------------------------- policy


def policy_figures(
    fen: str,
    completion: str,
    analysis: Sequence[MoveEval],
    eval_clip: float,
    move_cps: dict[str, int | None] | None = None,
) -> dict:
    """Per-position figures of one P: completion against the engine's best-first analysis; `move_cps`: the
    engine's evals of written moves outside it (best_move_cps)."""
    parsed = parse_policy_completion(completion)
    top = [e.move for e in analysis]
    said = dict(zip(parsed.moves, parsed.evals, strict=False))  # a short E: list pairs with the first moves

    def clip(x: float) -> float:  # mate scores (999.97) would swamp the mean error of ordinary positions
        return max(-eval_clip, min(eval_clip, x))

    errors = [abs(clip(said[e.move]) - clip(e.pawns)) for e in analysis if e.move in said]
    board = chess.Board(fen)
    why = illegal_kind(board, parsed.best)
    listed = dict.fromkeys(parsed.moves)
    watched = answer_figures(fen, parsed) if parsed.ok else {}
    return {
        "invalid": float(not parsed.ok),
        "layout": float(parsed.exact),  # strict: widths and numbers as the renderer writes them
        "legal_best_move": float(why is None),
        **{f"illegal/{kind}": float(why == kind) for kind in ILLEGAL_KINDS},
        "best_move_accuracy": float(parsed.best == top[0]),
        "top5_move_accuracy": float(parsed.best in top),  # the share of B: moves in the engine's top 5
        # B:'s expected-score loss against the engine's top move, as the reward computes it; lower is better.
        # An illegal or missing B: is the worst, 1.0: writing fewer legal moves cannot improve it.
        "best_move_loss": best_move_loss(fen, parsed, analysis, move_cps),
        "candidate_overlap": len(set(parsed.moves) & set(top)) / len(top),
        # distinct legal moves listed in M:, out of the five asked for (or all legal moves, if fewer)
        "legal_moves": sum(legal_move(board, m) is not None for m in listed)
        / max(len(parsed.moves), len(top)),
        "eval_mae": sum(errors) / len(errors) if errors else None,
        # the reward-hacking watch on held-out answers: precision of the list, B:'s choice among it
        **{f"watch/{k}": watched.get(k) for k in WATCHED},
        # The graduated training reward; a move outside the engine's top 5 is graded as the 5th line (an
        # upper bound: the eval has the root analysis only, training also searches that move).
        "reward": score_policy(fen, completion, analysis)[0],
    }


WATCHED = ("precision", "distinct", "selection", "b_best_e")
NOT_RATES = {
    "eval_mae",
    "reward_mae",
    "reward",
    "watch/distinct",
    "watch/selection",
    "best_move_loss",
}  # figures shown as numbers, not percentages
LOWER_IS_BETTER = {"best_move_loss"}  # marked so in the tables
POLICY_REFERENCE = {"best_move_accuracy": 0.166, "top5_move_accuracy": 0.392}


def policy_suite(
    generate: Generate,
    fens: Sequence[str],
    analyses: Sequence[Sequence[MoveEval]],
    *,
    decoding: SuiteDecoding = GREEDY,
    eval_clip: float = 10.0,
    engine: EnginePool | None = None,
) -> dict[str, Metric]:
    """P: on held-out positions; figures named "<decoding>/<figure>". Positions need a non-empty analysis.
    `engine` (multipv >= 5) searches a legal B: outside the analysis for best_move_loss, as the training
    reward does; without it that B: is graded as the last analysed line (a lower bound of its loss)."""
    if any(not a for a in analyses):
        raise ValueError("policy_suite: every position needs an engine analysis (no game-over positions)")
    out = {}
    for dec, completions in decoding.answers(generate, fens, "policy"):
        cps = best_move_cps(engine, fens, analyses, completions) if engine else [None] * len(fens)
        answers = zip(fens, completions, analyses, cps, strict=True)
        rows = [policy_figures(fen, c, a, eval_clip, m) for fen, c, a, m in answers]
        for name in rows[0] if rows else []:
            reference = POLICY_REFERENCE.get(name) if dec == "greedy" else None
            percent, lower = name not in NOT_RATES, name in LOWER_IS_BETTER
            out[f"{dec}/{name}"] = Metric(
                [r[name] for r in rows], percent=percent, reference=reference, lower_is_better=lower
            )
    return out


def best_move_cps(
    engine: EnginePool,
    fens: Sequence[str],
    analyses: Sequence[Sequence[MoveEval]],
    completions: Sequence[str],
) -> list[dict[str, int | None]]:
    """Per answer, {B:: the engine's eval, None if illegal} for a B: its analysis does not list, searched
    as the training reward searches it (PolicyGrader.move_cps; B: only, the M: list is not searched)."""
    parsed = [parse_policy_completion(c) for c in completions]
    only_best = [ParsedPolicy(best=p.best) if p.ok else p for p in parsed]
    return PolicyGrader(engine).move_cps(fens, analyses, only_best)


# ---------------------------------------------------------------------------------------------- environment


def env_figures(prompt: str, completion: str) -> dict:
    """Per-transition figures of one A: completion against python-chess's truth for the prompt."""
    truth = env_truth(prompt)
    parsed = parse_env_completion(completion)
    said_fen = strip_eos(completion).split("+")[0].strip()
    return {
        "invalid": float(not parsed.ok),
        "next_state_accuracy": float(parsed.new_fen == truth.new_fen),
        "next_state_similarity": similarity(said_fen, truth.new_fen),
        "reward_accuracy": float(parsed.reward is not None and math.isclose(parsed.reward, truth.reward)),
        "reward_mae": abs(parsed.reward - truth.reward) if parsed.reward is not None else None,
        "terminated_accuracy": float(parsed.terminated == truth.terminated),
        "truncated_accuracy": float(parsed.truncated == truth.truncated),
        "reward": score_env(prompt, completion, truth=truth)[0],  # the graduated training reward
    }


ENV_REFERENCE = {
    "invalid": 0.0,
    "next_state_accuracy": 0.9961,
    "next_state_similarity": 0.9999,
    "reward_accuracy": 0.9911,
    "reward_mae": 0.0084,
    "terminated_accuracy": 0.9913,
    "truncated_accuracy": 0.9998,
}


def env_suite(
    generate: Generate,
    prompts: Sequence[str],
    kinds: Sequence[str] | None = None,
    *,
    max_new_tokens: int = 128,
    seed: int = 0,
) -> dict[str, Metric]:
    """A: on held-out transitions (greedy), overall and, given `kinds`, as "kind=<kind>/<figure>"."""
    completions = generate_all(
        generate, list(prompts), "env", seed, max_new_tokens=max_new_tokens, do_sample=False
    )
    rows = [env_figures(p, c) for p, c in zip(prompts, completions, strict=True)]
    out = {}
    for name in rows[0] if rows else []:
        values = [r[name] for r in rows]
        out[name] = Metric(values, percent=name not in NOT_RATES, reference=ENV_REFERENCE.get(name))
        for kind in sorted(set(kinds or ())):
            by_kind = [v if k == kind else None for v, k in zip(values, kinds, strict=True)]
            out[f"kind={kind}/{name}"] = Metric(by_kind, percent=name not in NOT_RATES)
    return out


# ---------------------------------------------------------------------------------------------- mate in one


def find_mate_in_one(
    n: int,
    seed: int = 0,
    engine: EnginePool | None = None,
    min_ply: int = 8,
    max_plies: int = 300,
    max_games: int = 100_000,
) -> list[str]:
    """FENs of `n` positions with a mate in one, from seeded random games (one per game, the first found).

    python-chess finds the mating move; with `engine` (an EnginePool), Stockfish must agree that the
    position is mate in 1, else the position is dropped.
    """
    rng, fens = random.Random(seed), []
    for _ in range(max_games):
        if len(fens) == n:
            break
        board = chess.Board()
        for ply in range(max_plies):
            if board.is_game_over():
                break
            if ply >= min_ply and mating_moves(board):
                fens.append(board.fen())
                break
            board.push(rng.choice(list(board.legal_moves)))
    if engine is not None:
        analyses = engine.analyse_many(fens)
        fens = [fen for fen, a in zip(fens, analyses, strict=True) if a and a[0].cp == MATE_SCORE - 1]
    return fens


def mate_suite(
    generate: Generate,
    fens: Sequence[str],
    targets: Sequence[str] | None = None,
    *,
    decoding: SuiteDecoding = GREEDY,
    reference: float | None = None,
) -> dict[str, Metric]:
    """Mate in one through the P: answer (B:): right if it mates; with `targets`, also the exact target."""
    out = {}
    for dec, completions in decoding.answers(generate, fens, "mate"):
        moves = [legal_best_move(chess.Board(fen), c) for fen, c in zip(fens, completions, strict=True)]
        mates = [
            m is not None and m in mating_moves(chess.Board(fen)) for fen, m in zip(fens, moves, strict=True)
        ]
        out[f"{dec}/mate_accuracy"] = Metric([float(x) for x in mates], reference=reference)
        out[f"{dec}/legal_move"] = Metric([float(m is not None) for m in moves])
        if targets is not None:
            hits = [m is not None and m.uci() == t for m, t in zip(moves, targets, strict=True)]
            out[f"{dec}/target_accuracy"] = Metric([float(x) for x in hits])
    return out


# ---------------------------------------------------------------------------------------------- tactics

TACTIC_FIGURES = {"mate1": "mate_in_one", "mate2": "mate_in_two_first_move", "only": "only_move"}


def tactics_suite(
    generate: Generate,
    fens: Sequence[str],
    kinds: Sequence[str],
    bests: Sequence[str],
    *,
    decoding: SuiteDecoding = GREEDY,
) -> dict[str, Metric]:
    """Tactics through the P: answer's B: (chess/tactics.solves): per kind (`kinds`, KINDS) the share solved,
    "<decoding>/mate_in_one", "/mate_in_two_first_move" (B: forces mate in two), "/only_move" (B: is the
    engine's best, `bests`), each with a value on its kind's items only (None elsewhere: paired intervals
    compare the same items), and "/legal_move" over all."""
    out = {}
    for dec, completions in decoding.answers(generate, fens, "tactics"):
        boards = [chess.Board(fen) for fen in fens]
        moves = [legal_best_move(board, c) for board, c in zip(boards, completions, strict=True)]
        right = [
            float(solves(board, kind, move, best))
            for board, kind, move, best in zip(boards, kinds, moves, bests, strict=True)
        ]
        for kind in KINDS:
            values = [r if k == kind else None for r, k in zip(right, kinds, strict=True)]
            if any(v is not None for v in values):
                out[f"{dec}/{TACTIC_FIGURES[kind]}"] = Metric(values)
        out[f"{dec}/legal_move"] = Metric([float(m is not None) for m in moves])
    return out
