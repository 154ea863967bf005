"""The evaluation suites: on held-out items policy, environment, mate-in-one, tactics; the games self-play (the model
against itself through P:) and a match against Stockfish.

Each suite takes `generate(prompts, *, max_new_tokens, do_sample, temperature, top_k, seed) -> completions`
(generation.generate_completions with the model bound) and returns `{name: Metric}`: one value per item, so a
figure has a 95% interval and two models on the same items a paired interval of their difference. python-chess
referees everything; Stockfish gives the policy truth. Run by `rookworld eval` (stages/eval/evaluate.py).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import chess
import chess.engine
import numpy as np
from tqdm.auto import tqdm

from rookworld_trl.chess.engine import MATE_SCORE, EngineLimit, EnginePool, MoveEval, find_stockfish
from rookworld_trl.chess.environment import (
    ILLEGAL_KINDS,
    env_truth,
    illegal_kind,
    legal_best_move,
    legal_move,
    mating_moves,
    play_games,
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

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_RESAMPLES = 1000


@dataclass
class Metric:
    """One figure: the (weighted) mean of `values[i]`, item i's (None: undefined there). `percent`: a rate
    shown in %; `reference`: the published figure, if one applies."""

    values: list[float | None]
    weights: list[float] | None = None
    percent: bool = True
    reference: float | None = None
    lower_is_better: bool = False

    def defined(self) -> tuple[np.ndarray, np.ndarray]:
        keep = [i for i, v in enumerate(self.values) if v is not None]
        w = self.weights or [1.0] * len(self.values)
        return np.array([self.values[i] for i in keep], float), np.array([w[i] for i in keep], float)

    @property
    def n(self) -> int:
        return sum(v is not None for v in self.values)

    @property
    def value(self) -> float | None:
        x, w = self.defined()
        return float(np.sum(x * w) / np.sum(w)) if len(x) and np.sum(w) > 0 else None

    def interval(self, seed: int = 0) -> tuple[float, float] | None:
        """95% interval: Wilson for an unweighted 0/1 rate, else a percentile bootstrap over items."""
        x, w = self.defined()
        if not len(x):
            return None
        if self.weights is None and np.isin(x, (0.0, 1.0)).all():
            return wilson(int(x.sum()), len(x))
        idx = np.random.default_rng(seed).integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))
        means = resampled_means(x, w, idx)
        return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def resampled_means(x: np.ndarray, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The weighted mean of each bootstrap resample (a row of item indices `idx`)."""
    return np.sum(x[idx] * w[idx], axis=1) / np.maximum(np.sum(w[idx], axis=1), 1e-12)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (well behaved at 0% and 100%, unlike the normal one)."""
    p, z2 = successes / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def delta_interval(a: Metric, b: Metric, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of a.value - b.value: paired over the items both define when both have as many
    (for games, pairing independent games is harmless), else each side resampled alone."""
    paired = len(a.values) == len(b.values)
    if paired:  # the items both define
        both = [i for i, (x, y) in enumerate(zip(a.values, b.values, strict=True)) if None not in (x, y)]
        a, b = (
            Metric([m.values[i] for i in both], m.weights and [m.weights[i] for i in both]) for m in (a, b)
        )
    (xa, va), (xb, vb) = a.defined(), b.defined()
    if not len(xa) or not len(xb):
        return None
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(xa), (BOOTSTRAP_RESAMPLES, len(xa)))
    ib = ia if paired else rng.integers(0, len(xb), (BOOTSTRAP_RESAMPLES, len(xb)))
    delta = resampled_means(xa, va, ia) - resampled_means(xb, vb, ib)
    return float(np.quantile(delta, 0.025)), float(np.quantile(delta, 0.975))


# ---------------------------------------------------------------------------------------------- decoding

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


EVAL_CLIP = 10.0  # pawns: mate scores (999.97) would swamp the mean error of ordinary positions


def policy_figures(
    fen: str, completion: str, analysis: Sequence[MoveEval], move_cps: dict[str, int | None] | None = None
) -> dict:
    """Per-position figures of one P: completion against the engine's best-first analysis; `move_cps`: the
    engine's evals of written moves outside it (policy_suite)."""
    parsed = parse_policy_completion(completion)
    top = [e.move for e in analysis]
    said = dict(zip(parsed.moves, parsed.evals, strict=False))  # a short E: list pairs with the first moves

    def clip(x: float) -> float:
        return max(-EVAL_CLIP, min(EVAL_CLIP, x))

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
# figures shown as numbers, not percentages
NOT_RATES = {"eval_mae", "reward_mae", "reward", "watch/distinct", "watch/selection", "best_move_loss"}
LOWER_IS_BETTER = {"best_move_loss"}  # marked so in the tables
POLICY_REFERENCE = {"best_move_accuracy": 0.166, "top5_move_accuracy": 0.392}


def policy_suite(
    generate: Generate,
    fens: Sequence[str],
    analyses: Sequence[Sequence[MoveEval]],
    *,
    decoding: SuiteDecoding = GREEDY,
    engine: EnginePool | None = None,
) -> dict[str, Metric]:
    """P: on held-out positions (each with an analysis); figures "<decoding>/<figure>". `engine` searches a
    legal B: outside the analysis for best_move_loss, as the reward does; without it, the last analysed line."""
    if any(not a for a in analyses):
        raise ValueError("policy_suite: every position needs an engine analysis (no game-over positions)")
    out = {}
    for dec, completions in decoding.answers(generate, fens, "policy"):
        # per answer, {B:: the engine's eval, None if illegal} for a B: its analysis does not list, searched as
        # the training reward searches it (PolicyGrader.move_cps; B: only, the M: list is not searched)
        parsed = [parse_policy_completion(c) for c in completions]
        only_best = [ParsedPolicy(best=p.best) if p.ok else p for p in parsed]
        cps = PolicyGrader(engine).move_cps(fens, analyses, only_best) if engine else [None] * len(fens)
        answers = zip(fens, completions, analyses, cps, strict=True)
        rows = [policy_figures(fen, c, a, m) for fen, c, a, m in answers]
        for name in rows[0] if rows else []:
            reference = POLICY_REFERENCE.get(name) if dec == "greedy" else None
            percent, lower = name not in NOT_RATES, name in LOWER_IS_BETTER
            out[f"{dec}/{name}"] = Metric(
                [r[name] for r in rows], percent=percent, reference=reference, lower_is_better=lower
            )
    return out


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


ENV_REFERENCE = {"invalid": 0.0, "next_state_accuracy": 0.9961, "next_state_similarity": 0.9999,
                 "reward_accuracy": 0.9911, "reward_mae": 0.0084, "terminated_accuracy": 0.9913,
                 "truncated_accuracy": 0.9998}  # fmt: skip


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


def find_mate_in_one(n: int, seed: int = 0, engine: EnginePool | None = None) -> list[str]:
    """FENs of `n` positions with a mate in one, the first of each seeded random game from ply 8 (at most
    100,000 games); with `engine`, only those Stockfish also scores mate in 1."""
    rng, fens = random.Random(seed), []
    for _ in range(100_000):
        if len(fens) == n:
            break
        board = chess.Board()
        for ply in range(300):
            if board.is_game_over():
                break
            if ply >= 8 and mating_moves(board):
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
    """Tactics through the P: answer's B: (chess/tactics.solves): per kind the share solved (TACTIC_FIGURES,
    defined on its kind's items only), and "<decoding>/legal_move" over all."""
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


# ---------------------------------------------------------------------------------------------- games


def selfplay_suite(
    generate: Generate, *, games: int = 50, max_plies: int = 300, decoding: SuiteDecoding = SAMPLED
) -> dict[str, Metric]:
    """The model plays itself from the start through P: (sampled) until its first illegal move, the game's
    end or `max_plies`: legal half-moves per game and illegal moves / moves tried (ROOK: 36.3, 2.7%)."""
    plies = itertools.count()

    def policy(prompts: list[str]) -> list[str]:  # one call per ply, each ply its own seed
        bar.update()
        return generate(prompts, seed=decoding.seed + next(plies), **decoding.kwargs("sampled"))

    with tqdm(desc="selfplay", unit="ply", leave=False) as bar:
        played = play_games(policy, [chess.STARTING_FEN] * games, max_plies, decoding.fen_width)
    legal = [len(game.moves) for game in played]
    illegal = [int(game.ended_illegal) for game in played]
    tried = [a + b for a, b in zip(legal, illegal, strict=True)]
    return {
        "legal_half_moves": Metric([float(x) for x in legal], percent=False, reference=36.3),
        "illegal_rate": Metric(
            [b / t if t else 0.0 for b, t in zip(illegal, tried, strict=True)], weights=tried, reference=0.027
        ),
        "games_ended_illegal": Metric([float(b) for b in illegal]),
    }


def match_suite(
    generate: Generate,
    *,
    games: int = 20,
    skill_level: int = 0,
    limit: EngineLimit | None = None,
    stockfish_path: str | None = None,
    max_plies: int = 300,
    decoding: SuiteDecoding = SAMPLED,
) -> dict[str, Metric]:
    """Games against Stockfish at `skill_level`, the model White in even games, moving by its P: answer: an
    illegal move loses, a game past `max_plies` is a draw. Skill levels below 20 use Stockfish's clock-seeded
    randomness: match figures are not exactly reproducible."""
    limit = limit or EngineLimit(depth=8)
    boards = [chess.Board() for _ in range(games)]
    colours = [chess.WHITE if i % 2 == 0 else chess.BLACK for i in range(games)]
    score: list[float | None] = [None] * games
    illegal = [0.0] * games
    kwargs = decoding.kwargs(decoding.names[0])
    with chess.engine.SimpleEngine.popen_uci(find_stockfish(stockfish_path)) as engine:
        engine.configure({"Skill Level": skill_level, "Threads": 1})
        for rnd in tqdm(range(max_plies), desc="match", unit="round", leave=False):
            active = [i for i in range(games) if score[i] is None]
            if not active:
                break
            ours = [i for i in active if boards[i].turn == colours[i]]
            prompts = [policy_prompt(boards[i].fen(), decoding.fen_width) for i in ours]
            completions = generate(prompts, seed=decoding.seed + rnd, **kwargs) if ours else []
            for i, completion in zip(ours, completions, strict=True):
                move = legal_best_move(boards[i], completion)
                if move is None:
                    score[i], illegal[i] = 0.0, 1.0
                else:
                    boards[i].push(move)
            for i in active:  # Stockfish answers in every game where it is now to move
                board = boards[i]
                if score[i] is None and board.turn != colours[i] and not board.is_game_over():
                    board.push(engine.play(board, limit.to_chess()).move)
                outcome = board.outcome()
                if score[i] is None and outcome is not None:
                    score[i] = 0.5 if outcome.winner is None else float(outcome.winner == colours[i])
                elif score[i] is None and board.ply() >= max_plies:
                    score[i] = 0.5  # adjudicated
    score = [0.5 if s is None else s for s in score]
    return {
        "score": Metric(score),
        "win_rate": Metric([float(s == 1.0) for s in score]),
        "draw_rate": Metric([float(s == 0.5) for s in score]),
        "loss_rate": Metric([float(s == 0.0) for s in score]),
        "illegal_move_losses": Metric(illegal),
    }
