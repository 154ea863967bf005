"""`rookworld eval`: run the evaluation suites on a model (and a baseline) and write JSON, markdown and a PNG.

    rookworld eval runs/grpo_tiny_cpu/final          # the embedded test split (--data), figures on the console
    rookworld eval jrahn/RookWorld-LM-124M --data DATA --suites policy,env,mate,selfplay,match \\
        --bigbench path/to/checkmate_in_one/task.json --baseline runs/grpo/final --out eval/run1

Suites (rookworld_trl/stages/eval/suites.py): policy (held-out P: positions against Stockfish at --depth),
env (held-out A: transitions, also by transition kind), mate (mate-in-one positions from seeded random
games; BIG-bench `checkmate_in_one` too when --bigbench names its task.json), tactics (the test split of
`rookworld data generate --tactics` data named by --tactics: mate in one, mate in two's first move and only-move
accuracy, from games no training tactic comes from), selfplay, match (against Stockfish at --skill_level). Items are drawn once with --seed, so model and baseline answer the same
positions; each figure comes with a 95% interval and, with a baseline, a paired interval of the difference.
The published RookWorld-LM figures (docs/FORMATS.md) appear beside the figures they correspond to.
B:'s quality beside its legality: top5_move_accuracy (B: is one of the engine's top 5 moves) and
best_move_loss (B:'s expected-score loss against the engine's best move, as the policy reward computes it;
lower is better; an illegal or missing B: counts as the worst loss, 1.0, so writing fewer legal moves
cannot improve it).

The in-training eval (a small policy + environment evaluation every N steps) is rookworld_trl/stages/eval/callback.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import chess
import chess.engine

from rookworld_trl import __version__
from rookworld_trl.chess.engine import MULTIPV, EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.formats import FEN_WIDTH, fen_width_of, parse_env_prompt
from rookworld_trl.common.errors import UserError
from rookworld_trl.common.flags import FlagParser
from rookworld_trl.common.paths import resolve_paths
from rookworld_trl.data.files import fen4
from rookworld_trl.stages.eval.outputs import check_out_dir, summarize, write_outputs
from rookworld_trl.stages.eval.registry import SUITES, EvalItems, analysed, draw_items
from rookworld_trl.stages.eval.stats import Metric

__all__ = [
    "SUITES",
    "EvalItems",
    "EvalResult",
    "EvalSettings",
    "analysed",
    "draw_items",
    "evaluate",
    "run_suites",
]


@dataclass
class EvalSettings:
    """What an evaluation runs and how: `rookworld eval` (its flags are these fields), the before/after eval
    of a GRPO run and the in-training EvalCallback share it."""

    model: str | None = field(
        default=None,
        metadata={"help": "hub id or local model directory (None: the in-training eval's model)"},
    )
    baseline: str | None = field(
        default=None, metadata={"help": "a second model, on the same items, side by side"}
    )
    data: str | None = field(
        default=None, metadata={"help": "held-out data for the policy/env suites (rookworld data)"}
    )
    split: str = "test"
    fen_width: int | None = field(
        default=None,
        metadata={
            "help": "P: prompts' FEN field width (None: the model's config.json record, else the data's, else 90)"
        },
    )
    suites: str = field(
        default="policy,env,mate,selfplay", metadata={"help": f"comma list of {','.join(SUITES)}"}
    )
    out: str = field(default="eval_results", metadata={"help": "directory for eval.json, eval.md, eval.png"})
    seed: int = field(default=0, metadata={"help": "item draws, sampling and bootstrap"})
    policy_samples: int = 500
    env_samples: int = 500
    mate_samples: int = field(default=200, metadata={"help": "mate-in-one positions from random games"})
    bigbench: str | None = field(
        default=None, metadata={"help": "BIG-bench checkmate_in_one task.json (your copy)"}
    )
    tactics: str | None = field(
        default=None,
        metadata={"help": "tactics data (rookworld data generate --tactics): the tactics suite's test split"},
    )
    tactics_samples: int = field(default=2000, metadata={"help": "tactics test positions (all kinds)"})
    bigbench_samples: int | None = field(
        default=None, metadata={"help": "first N BIG-bench examples (None: all)"}
    )
    selfplay_games: int = 50
    match_games: int = 20
    skill_level: int = field(default=0, metadata={"help": "Stockfish 'Skill Level' (0-20) in the match"})
    max_plies: int = field(default=300, metadata={"help": "half-moves before a game is stopped"})
    decodings: str = field(
        default="greedy", metadata={"help": "policy and mate decodings: greedy, sampled or both"}
    )
    temperature: float = field(
        default=0.6, metadata={"help": "sampling temperature (sampled, selfplay, match)"}
    )
    top_k: int = field(default=5, metadata={"help": "sampling top-k (ROOK: 5)"})
    max_new_tokens: int = 128
    batch_size: int = 64
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ... (None: cuda if available)"})
    depth: int = field(default=8, metadata={"help": "Stockfish depth of the policy truth and the match"})
    nodes: int | None = field(
        default=None, metadata={"help": "Stockfish node limit (with or instead of depth)"}
    )
    engine_workers: int = 1
    cache: str | None = field(
        default=None, metadata={"help": "sqlite file caching engine analyses between runs"}
    )
    stockfish: str | None = field(default=None, metadata={"help": "Stockfish binary ($STOCKFISH_PATH, PATH)"})
    train_data: str | None = field(
        default=None,
        metadata={
            "help": "the model's training data (any --data source or puzzle file): the outputs say how many "
            "items of each suite occur in it, by position (first four FEN fields)"
        },
    )
    train_split: str = field(default="train", metadata={"help": "split of --train_data"})

    def suite_list(self) -> list[str]:
        """The chosen suites; ValueError naming the unknown ones."""
        suites = [x.strip() for x in self.suites.split(",") if x.strip()]
        if unknown := set(suites) - set(SUITES):
            raise ValueError(f"unknown suites {sorted(unknown)}; choose from {','.join(SUITES)}")
        return suites


def run_suites(
    generate, items: EvalItems, suites: Sequence[str], args: EvalSettings, engine: EnginePool | None = None
) -> dict[str, dict[str, Metric]]:
    """{suite: {figure: Metric}} of one model, the suites in SUITES' order; `args` carries the decoding and game
    settings; `engine` searches a legal B: outside a position's analysis (policy_suite)."""
    out = {}
    for name, suite in SUITES.items():
        if name in suites:
            out.update(suite.run(generate, items, args, engine))
    return out


# ---------------------------------------------------------------------------------------------- command


def versions(stockfish_path: str | None) -> dict:
    import torch
    import transformers
    import trl

    with chess.engine.SimpleEngine.popen_uci(find_stockfish(stockfish_path)) as engine:
        stockfish = engine.id.get("name", "?")
    return {
        "rookworld_trl": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "chess": chess.__version__,
        "stockfish": stockfish,
    }


def read_data(args: EvalSettings, suites: Sequence[str]):
    """What `rookworld eval` reads when no run hands it its data (data/load.py eval_data): the held-out split when
    a suite needs it, the tactics test split, the training data's positions."""
    from rookworld_trl.data.load import eval_data  # here: data pulls in the dataset tooling

    chosen = [suite for name, suite in SUITES.items() if name in suites]
    needs_data = any(suite.needs_data for suite in chosen)
    if needs_data and not args.data:
        needing = " and ".join(name for name, suite in SUITES.items() if suite.needs_data)
        raise ValueError(f"the {needing} suites need held-out data: pass --data (see `rookworld data`)")
    return eval_data(args.data if needs_data else None, args.split, args.fen_width,
                     args.tactics if "tactics" in suites else None, args.train_data, args.train_split)  # fmt: skip


def prepare_items(args: EvalSettings, suites: Sequence[str], engine: EnginePool, data=None) -> EvalItems:
    """Draw the positions and transitions once, with args.seed, from `data` (a RunData: its held-out rows and
    tactics test rows; None: read_data); analyse the P: positions with the engine."""
    data = data if data is not None else read_data(args, suites)
    items = EvalItems(fen_width=args.fen_width or FEN_WIDTH)
    chosen = [suite for name, suite in SUITES.items() if name in suites]
    if any(suite.needs_data for suite in chosen):
        if data.held_out is None:
            raise ValueError(
                "the policy and env suites need held-out data: pass --data (see `rookworld data`)"
            )
        from rookworld_trl.data.layout import iter_column  # here: data pulls in the dataset tooling

        items.fen_width = (
            fen_width_of(iter_column(data.held_out, "prompt")) or FEN_WIDTH
        )  # the data's own width
        items.drawn_fens, items.env_prompts, items.env_kinds = draw_items(
            data.held_out, args.policy_samples, args.env_samples, args.seed
        )
    for suite in chosen:
        if suite.prepare is not None:
            suite.prepare(items, args, engine, data)
    return items


def items_in_training(items: EvalItems, data) -> dict:
    """How many of each suite's items occur in the run's training data (`data.training_keys`), by position:
    {suite: {"in": k, "of": n}}."""
    seen = data.training_keys
    suites = {
        "policy": items.policy_fens,
        "env": [parse_env_prompt(prompt)[0] for prompt in items.env_prompts],
        "mate": items.mate_fens,
        "mate_bigbench": [fen for fen, _ in items.bigbench],
    }
    counts = {
        name: {"in": sum(fen4(f) in seen for f in fens), "of": len(fens)}
        for name, fens in suites.items()
        if fens
    }
    return {"source": data.source, "split": data.train_split, "positions": len(seen), "items": counts}


def training_line(found: dict) -> str:
    """The items-in-training-data figures in one line."""
    parts = ", ".join(f"{name} {c['in']} of {c['of']}" for name, c in found["items"].items())
    return f"items in the training data ({found['source']}, split {found['split']}, by position): {parts or 'none'}"


def model_generate(name: str, args: EvalSettings):
    """(generate(prompts, **settings) of a loaded model: the project's one generation path, bound; the FEN
    width to prompt it at, --fen_width or the one its config.json records, None if neither says)."""
    import torch

    from rookworld_trl.model.generation import generate_completions
    from rookworld_trl.model.loading import load_model_and_tokenizer, trained_fen_width

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(name, device=device)
    generate = functools.partial(generate_completions, model, tokenizer, batch_size=args.batch_size)
    return generate, args.fen_width or trained_fen_width(model)


def check_device(device: str | None) -> None:
    """A UserError for --device cuda where no CUDA device is visible (torch would fail at the first tensor)."""
    if device and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is visible here; leave --device out (cuda when "
                            "there is one, else cpu) or pass --device cpu")  # fmt: skip


class EvalResult(dict):
    """What `evaluate` returns: the paths of eval.json/md/png by kind (`result["md"]`), and `figures`: {suite:
    {figure: {"model": {"value", "ci", "n"}, "baseline", "delta", ...}}} as in eval.json; `str(result)`: the
    markdown table."""

    def __init__(self, paths: dict[str, str], figures: dict):
        super().__init__(paths)
        self.figures = figures

    def value(self, suite: str, figure: str, of: str = "model") -> float | None:
        """One figure of `of` ("model" or "baseline"), e.g. value("policy", "best_move_legal")."""
        return self.figures[suite][figure][of]["value"]

    def __str__(self) -> str:
        with open(self["md"]) as f:
            return f.read().rstrip()


def evaluate(args: EvalSettings | str | None = None, /, run_data=None, **settings) -> EvalResult:
    """Run the selected suites on a model (and a baseline); write eval.json/md/png; return them (EvalResult).

    `args`: EvalSettings, or the model's path or hub id with `settings` as EvalSettings fields; the defaults are
    `rookworld eval`'s (held-out data: the embedded test split). `run_data`: a run's RunData (data/load.py: its
    held-out rows, tactics test rows and training positions, read once by the run); None: read from args.data,
    args.tactics and args.train_data. From Python:

        from rookworld_trl import evaluate
        result = evaluate("runs/grpo_tiny_cpu/final", baseline=assets.MODEL, suites="policy", policy_samples=200)
        result.value("policy", "best_move_legal"), result["md"]
    """
    if not isinstance(args, EvalSettings):
        args = EvalSettings(**({"model": str(args)} if args else {}), **settings)
    elif settings:
        args = dataclasses.replace(args, **settings)
    if not args.model:
        raise ValueError("evaluate: name the model to evaluate (EvalSettings.model)")
    if args.data is None:  # as `rookworld eval`: the embedded test split
        args = dataclasses.replace(args, data=CLI_DEFAULTS["data"])
    resolve_paths(args, "model", "baseline", "data", "train_data", "tactics")
    suites = args.suite_list()
    from rookworld_trl.model.source import model_source

    for name in filter(None, (args.model, args.baseline)):  # a wrong name: one line before Stockfish starts
        model_source(name)
    check_out_dir(args.out)  # a read-only --out: now, not after the whole eval
    check_device(args.device)
    data = run_data if run_data is not None else read_data(args, suites)
    limit = EngineLimit(depth=args.depth, nodes=args.nodes)
    with EnginePool(
        args.engine_workers, limit, multipv=MULTIPV, cache=args.cache, stockfish_path=args.stockfish
    ) as engine:
        if any(name in suites for name in ENGINE_SUITES):
            engine.check()  # a broken STOCKFISH_PATH: one line now, not after the model's generations
        items = prepare_items(args, suites, engine, data)
        found = items_in_training(items, data) if data.training_keys is not None else None
        if found:
            print(f"rookworld eval: {training_line(found)}")
        widths = {}  # each model is prompted as it was trained; the data's width when its config does not say

        def run(name: str):
            generate, width = model_generate(name, args)
            widths[name] = width or items.fen_width
            return run_suites(
                generate, dataclasses.replace(items, fen_width=widths[name]), suites, args, engine
            )

        results = run(args.model)
        baseline = run(args.baseline) if args.baseline else None
    settings = {
        "model": args.model,
        "baseline": args.baseline,
        "data": args.data,
        "split": args.split,
        "fen_width": widths,
        "suites": suites,
        "seed": args.seed,
        "engine_limit": limit.key(),
        "multipv": MULTIPV,
        "decodings": args.decodings,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "sizes": {key: n for suite in SUITES.values() for key, n in suite.sizes(items, args).items()},
        "bigbench": args.bigbench,
        "in_training_data": found,
        "tactics": args.tactics,
        "max_plies": args.max_plies,
        "skill_level": args.skill_level,
        "eval_clip_pawns": 10.0,
        "versions": versions(args.stockfish),
    }
    figures = summarize(results, baseline, args.seed)
    paths = write_outputs(figures, settings, args.out)
    print(f"rookworld eval: wrote {', '.join(paths.values())}")
    return EvalResult(paths, figures)


def parse_args(argv: list[str] | None) -> EvalSettings:
    """`rookworld eval` flags: the EvalSettings fields (the model is positional), with their defaults."""
    p = FlagParser(
        prog="rookworld eval",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="B:'s quality: top5_move_accuracy (in the engine's top 5) and best_move_loss (expected-score "
        "loss against the engine's best, as the policy reward computes it; lower is better; an illegal or "
        "missing B: counts as the worst loss, 1.0). "
        "example: rookworld eval runs/grpo_tiny_cpu/final --baseline rookworld_trl/assets/model "
        "--data rookworld_trl/assets/data --suites policy,env --policy_samples 200 --out eval/run1",
    )
    hints = typing.get_type_hints(EvalSettings)
    for f in fields(EvalSettings):
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        name = f.name if f.name == "model" else f"--{f.name}"
        p.add_argument(
            name,
            type=kind,
            help=f.metadata.get("help", f.name.replace("_", " ")),
            **({} if f.name == "model" else {"default": CLI_DEFAULTS.get(f.name, f.default)}),
        )
    settings = EvalSettings(**vars(p.parse_args(argv)))
    resolve_paths(
        settings, "model", "baseline", "data", "train_data", "tactics"
    )  # as given (the working directory), else bundled
    return settings


ENGINE_SUITES = ("policy", "match")  # the suites that ask Stockfish
CLI_DEFAULTS = {"data": "rookworld_trl/assets/data"}  # `rookworld eval MODEL`: the embedded test split


def main(argv: list[str] | None = None) -> int:
    paths = evaluate(parse_args(argv))
    with open(paths["md"]) as f:  # the figures on the console too, not only in the files
        print(f.read().rstrip())
    return 0


if __name__ == "__main__":
    from rookworld_trl.common.entry import run_stage

    raise SystemExit(run_stage("eval", main))
