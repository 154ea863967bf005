"""The evaluation suites by name, and the items they run on. `rookworld eval` (evaluate.py), the before/after eval
of a run and the in-training EvalCallback all run the suites through SUITES, in its order.

A new suite is its `*_suite` function in suites.py (held-out items) or game_suites.py (games), returning
`{figure: Metric}`, and one `Suite` entry here: `run(generate, items, args, engine)` -> {result name: figures};
optionally `prepare(items, args, engine, data)` (data: a RunData, data/load.py) to draw its items once (every model answers the same ones),
`needs_data` (it reads the held-out data's drawn rows) and `sizes` (what eval.json records of its size).
`args` is evaluate.EvalSettings: the decoding, game and engine settings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rookworld_trl.chess.engine import EngineLimit, EnginePool, MoveEval
from rookworld_trl.chess.formats import FEN_WIDTH, parse_policy_prompt
from rookworld_trl.chess.tactics import KINDS
from rookworld_trl.data.puzzles import load_bigbench_checkmate
from rookworld_trl.grpo.rewards.policy import label_analysis
from rookworld_trl.stages.eval.game_suites import match_suite, selfplay_suite
from rookworld_trl.stages.eval.suites import (
    SuiteDecoding,
    env_suite,
    find_mate_in_one,
    mate_suite,
    policy_suite,
    tactics_suite,
)

BIGBENCH_REFERENCE = 0.137  # RookWorld-LM on BIG-bench checkmate_in_one (docs/FORMATS.md)


@dataclass
class EvalItems:
    """What the suites run on, drawn once so that every model answers the same items."""

    policy_fens: list[str] = field(default_factory=list)
    policy_analyses: list[list[MoveEval]] = field(default_factory=list)
    env_prompts: list[str] = field(default_factory=list)
    env_kinds: list[str] | None = None
    mate_fens: list[str] = field(default_factory=list)
    bigbench: list[tuple[str, str]] = field(default_factory=list)
    tactics: list[tuple[str, str, str]] = field(default_factory=list)  # (FEN, kind, engine's best)
    drawn_fens: list[str] = field(default_factory=list)  # P: positions drawn from the data, before analysis
    fen_width: int = FEN_WIDTH  # P: prompts are padded as the data was written


def draw_items(
    dataset, policy_samples: int, env_samples: int, seed: int
) -> tuple[list[str], list[str], list | None]:
    """(P: FENs, A: prompts, A: transition kinds or None), sampled without replacement from a dataset."""
    from rookworld_trl.data.layout import column, task_rows  # datasets' tooling: only where a dataset is

    rng = random.Random(seed)
    p_rows, a_rows = task_rows(dataset)
    p_rows = sorted(rng.sample(p_rows, min(policy_samples, len(p_rows))))
    a_rows = sorted(rng.sample(a_rows, min(env_samples, len(a_rows))))
    prompts = column(dataset, "prompt")
    fens = [parse_policy_prompt(prompts[i]) for i in p_rows]
    kinds = column(dataset, "kind") if "kind" in dataset.column_names else None
    kinds = [kinds[i] for i in a_rows] if kinds is not None else None
    return fens, [prompts[i] for i in a_rows], kinds


def analysed(
    fens: Sequence[str], engine: EnginePool, labels: dict | None = None
) -> tuple[list[str], list[list[MoveEval]]]:
    """The engine's best-first analyses, dropping positions where the game is over (nothing to play).
    `labels`: {fen: analysis} from the data, made at the engine's own limit: a cache, searched no more."""
    labels = labels or {}
    todo = [f for f in fens if f not in labels]
    searched = dict(zip(todo, engine.analyse_many(todo, progress=True), strict=True))
    analyses = [labels[f] if f in labels else searched[f] for f in fens]
    keep = [i for i, a in enumerate(analyses) if a]
    return [fens[i] for i in keep], [analyses[i] for i in keep]


def data_labels(dataset, engine: EnginePool) -> dict:
    """{fen: analysis} of the dataset's P: labels made at the engine's limit (the policy reward's cache rule)."""
    if not {"fen", "moves", "evals", "limit"} <= set(dataset.column_names):
        return {}
    from rookworld_trl.data.layout import columns  # datasets' tooling: only where a dataset is

    key, out = engine.limit.key(), {}
    for task, fen, moves, evals, limit in zip(
        *columns(dataset, "task", "fen", "moves", "evals", "limit"), strict=True
    ):
        if task == "P" and limit == key and (label := label_analysis(fen, moves, evals)):
            out[fen] = label
    return out


# ------------------------------------------------------------------------------------------- the suites


def decoding(args, items: EvalItems, names: str | None = None) -> SuiteDecoding:
    """How every generating suite decodes (`names`: args.decodings); P: prompts at the items' FEN width."""
    return SuiteDecoding(tuple((names or args.decodings).split(",")), args.temperature, args.top_k,
                         args.max_new_tokens, args.seed, items.fen_width)  # fmt: skip


def run_policy(generate, items: EvalItems, args, engine):
    return {"policy": policy_suite(generate, items.policy_fens, items.policy_analyses,
                                   decoding=decoding(args, items), engine=engine)}  # fmt: skip


def prepare_policy(items: EvalItems, args, engine: EnginePool, data) -> None:
    items.policy_fens, items.policy_analyses = analysed(
        items.drawn_fens, engine, data_labels(data.held_out, engine)
    )


def run_env(generate, items: EvalItems, args, engine):
    return {"env": env_suite(generate, items.env_prompts, items.env_kinds, max_new_tokens=args.max_new_tokens,
                             seed=args.seed)}  # fmt: skip


def run_mate(generate, items: EvalItems, args, engine):
    settings = decoding(args, items)
    out = {"mate": mate_suite(generate, items.mate_fens, decoding=settings)}
    if items.bigbench:
        fens, targets = zip(*items.bigbench, strict=True)
        out["mate_bigbench"] = mate_suite(
            generate, fens, targets, reference=BIGBENCH_REFERENCE, decoding=settings
        )
    return out


def prepare_mate(items: EvalItems, args, engine: EnginePool, data) -> None:
    items.mate_fens = find_mate_in_one(args.mate_samples, args.seed, engine)
    if args.bigbench:
        items.bigbench = load_bigbench_checkmate(args.bigbench, args.bigbench_samples)


def run_tactics(generate, items: EvalItems, args, engine):
    fens, kinds, bests = zip(*items.tactics, strict=True) if items.tactics else ((), (), ())
    return {"tactics": tactics_suite(generate, fens, kinds, bests, decoding=decoding(args, items))}


def prepare_tactics(items: EvalItems, args, engine: EnginePool, data) -> None:
    """Up to args.tactics_samples positions of the tactics data's test split (`data.tactics_test`, of
    args.tactics), drawn with args.seed, in the data's order: (FEN, kind, engine's best)."""
    if not args.tactics or data.tactics_test is None:
        raise ValueError(
            "the tactics suite needs tactics data: pass --tactics (rookworld data generate --tactics)"
        )
    from rookworld_trl.data.layout import columns  # here: data pulls in the dataset tooling

    rows = columns(data.tactics_test, "task", "fen", "kind", "best")
    found = [
        (fen, kind, best)
        for task, fen, kind, best in zip(*rows, strict=True)
        if task == "P" and kind in KINDS
    ]
    if not found:
        raise ValueError(f"{args.tactics}: its test split holds no tactics (kind mate1, mate2 or only)")
    keep = sorted(random.Random(args.seed).sample(range(len(found)), min(args.tactics_samples, len(found))))
    items.tactics = [found[i] for i in keep]


def run_selfplay(generate, items: EvalItems, args, engine):
    return {"selfplay": selfplay_suite(generate, games=args.selfplay_games, max_plies=args.max_plies,
                                       decoding=decoding(args, items, "sampled"))}  # fmt: skip


def run_match(generate, items: EvalItems, args, engine):
    return {"match": match_suite(generate, games=args.match_games, skill_level=args.skill_level,
                                 limit=EngineLimit(depth=args.depth, nodes=args.nodes), stockfish_path=args.stockfish,
                                 max_plies=args.max_plies, decoding=decoding(args, items, "sampled"))}  # fmt: skip


@dataclass(frozen=True)
class Suite:
    """One evaluation suite (see the module docstring)."""

    name: str
    run: Callable[..., dict]
    sizes: Callable[[EvalItems, object], dict[str, int]]
    prepare: Callable[..., None] | None = None
    needs_data: bool = False


SUITES = {  # in the order they run and are reported
    suite.name: suite
    for suite in (
        Suite("policy", run_policy, lambda items, args: {"policy_positions": len(items.policy_fens)},
              prepare_policy, needs_data=True),
        Suite("env", run_env, lambda items, args: {"env_transitions": len(items.env_prompts)}, needs_data=True),
        Suite("mate", run_mate, lambda items, args: {"mate_positions": len(items.mate_fens),
                                                     "bigbench_positions": len(items.bigbench)}, prepare_mate),
        Suite("tactics", run_tactics, lambda items, args: {"tactics_positions": len(items.tactics)},
              prepare_tactics),
        Suite("selfplay", run_selfplay, lambda items, args: {"selfplay_games": args.selfplay_games}),
        Suite("match", run_match, lambda items, args: {"match_games": args.match_games}),
    )
}  # fmt: skip
