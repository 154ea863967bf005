"""`rookworld eval`: run the evaluation suites on a model (and a baseline) and write JSON, markdown and a PNG.

    rookworld eval runs/grpo_tiny_cpu/final          # the embedded test split (--data), figures on the console
    rookworld eval jrahn/RookWorld-LM-124M --data DATA --suites policy,env,mate,selfplay,match \\
        --bigbench path/to/checkmate_in_one/task.json --baseline runs/grpo/final --out eval/run1

Suites (stages/eval/suites.py): policy (held-out P: against Stockfish at --depth), env (held-out A:), mate (mate in
one from random games; BIG-bench `checkmate_in_one` with --bigbench), tactics (the test split of --tactics data),
selfplay, match (against Stockfish at --skill_level). Items are drawn once with --seed, so model and baseline answer
the same ones; each figure has a 95% interval and, with a baseline, a paired interval of the difference, beside the
published RookWorld-LM figure (docs/FORMATS.md).

A new suite: its `*_suite` function in suites.py returning `{figure: Metric}`, its name in SUITES, its branch in
`run_suites` (and in `prepare_items` when it draws items, in `sizes` for eval.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import shutil
import tempfile
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import chess
import chess.engine

from rookworld_trl import __version__
from rookworld_trl.chess.engine import MULTIPV, EngineLimit, EnginePool, MoveEval, find_stockfish
from rookworld_trl.chess.formats import FEN_WIDTH, fen_width_of, parse_env_prompt, parse_policy_prompt
from rookworld_trl.chess.tactics import KINDS
from rookworld_trl.common.errors import UserError
from rookworld_trl.common.flags import FlagParser, helped
from rookworld_trl.common.paths import out_folder_problem, resolve_paths
from rookworld_trl.data.files import fen4
from rookworld_trl.data.puzzles import load_bigbench_checkmate
from rookworld_trl.grpo.rewards.policy import label_analysis
from rookworld_trl.stages.eval.suites import (
    EVAL_CLIP,
    Metric,
    SuiteDecoding,
    delta_interval,
    env_suite,
    find_mate_in_one,
    match_suite,
    mate_suite,
    policy_suite,
    selfplay_suite,
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
    """The engine's best-first analyses, dropping game-over positions; `labels`: {fen: analysis} already made
    at the engine's limit."""
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


SUITES = ("policy", "env", "mate", "tactics", "selfplay", "match")  # in the order they run and are reported
DATA_SUITES = ("policy", "env")  # the suites that read the held-out data's drawn rows
NEEDS_DATA = "the policy and env suites need held-out data: pass --data (see `rookworld data`)"
ENGINE_SUITES = ("policy", "match")  # the suites that ask Stockfish


@dataclass
class EvalSettings:
    """What an evaluation runs and how: `rookworld eval`'s flags, also the GRPO run's evals' settings."""

    model: str | None = helped(None, "hub id or local model directory (None: the in-training eval's model)")
    baseline: str | None = helped(None, "a second model, on the same items, side by side")
    data: str | None = helped(None, "held-out data for the policy/env suites (rookworld data)")
    split: str = "test"
    fen_width: int | None = helped(
        None, "P: prompts' FEN field width (None: the model's config.json record, else the data's, else 90)"
    )
    suites: str = helped("policy,env,mate,selfplay", f"comma list of {','.join(SUITES)}")
    out: str = helped("eval_results", "directory for eval.json, eval.md, eval.png")
    seed: int = helped(0, "item draws, sampling and bootstrap")
    policy_samples: int = 500
    env_samples: int = 500
    mate_samples: int = helped(200, "mate-in-one positions from random games")
    bigbench: str | None = helped(None, "BIG-bench checkmate_in_one task.json (your copy)")
    tactics: str | None = helped(
        None, "tactics data (rookworld data generate --tactics): the tactics suite's test split"
    )
    tactics_samples: int = helped(2000, "tactics test positions (all kinds)")
    bigbench_samples: int | None = helped(None, "first N BIG-bench examples (None: all)")
    selfplay_games: int = 50
    match_games: int = 20
    skill_level: int = helped(0, "Stockfish 'Skill Level' (0-20) in the match")
    max_plies: int = helped(300, "half-moves before a game is stopped")
    decodings: str = helped("greedy", "policy and mate decodings: greedy, sampled or both")
    temperature: float = helped(0.6, "sampling temperature (sampled, selfplay, match)")
    top_k: int = helped(5, "sampling top-k (ROOK: 5)")
    max_new_tokens: int = 128
    batch_size: int = 64
    device: str | None = helped(None, "cuda, cpu, ... (None: cuda if available)")
    depth: int = helped(8, "Stockfish depth of the policy truth and the match")
    nodes: int | None = helped(None, "Stockfish node limit (with or instead of depth)")
    engine_workers: int = 1
    cache: str | None = helped(None, "sqlite file caching engine analyses between runs")
    stockfish: str | None = helped(None, "Stockfish binary ($STOCKFISH_PATH, PATH)")
    train_data: str | None = helped(
        None,
        "the model's training data (any --data source or puzzle file): the outputs say how many items of each suite occur in it, by position (first four FEN fields)",
    )
    train_split: str = helped("train", "split of --train_data")

    def suite_list(self) -> list[str]:
        """The chosen suites; ValueError naming the unknown ones."""
        suites = [x.strip() for x in self.suites.split(",") if x.strip()]
        if unknown := set(suites) - set(SUITES):
            raise ValueError(f"unknown suites {sorted(unknown)}; choose from {','.join(SUITES)}")
        return suites


def run_suites(
    generate, items: EvalItems, suites: Sequence[str], args: EvalSettings, engine: EnginePool | None = None
) -> dict[str, dict[str, Metric]]:
    """{suite: {figure: Metric}} of one model, in SUITES' order; `engine`: policy_suite's."""
    # how every generating suite decodes; P: prompts at the items' FEN width; the games sample
    settings = SuiteDecoding(tuple(args.decodings.split(",")), args.temperature, args.top_k, args.max_new_tokens,
                             args.seed, items.fen_width)  # fmt: skip
    sampled = dataclasses.replace(settings, names=("sampled",))
    out = {}
    if "policy" in suites:
        out["policy"] = policy_suite(
            generate, items.policy_fens, items.policy_analyses, decoding=settings, engine=engine
        )
    if "env" in suites:
        out["env"] = env_suite(
            generate, items.env_prompts, items.env_kinds, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
    if "mate" in suites:
        out["mate"] = mate_suite(generate, items.mate_fens, decoding=settings)
        if items.bigbench:
            fens, targets = zip(*items.bigbench, strict=True)
            out["mate_bigbench"] = mate_suite(
                generate, fens, targets, reference=BIGBENCH_REFERENCE, decoding=settings
            )
    if "tactics" in suites:
        fens, kinds, bests = zip(*items.tactics, strict=True) if items.tactics else ((), (), ())
        out["tactics"] = tactics_suite(generate, fens, kinds, bests, decoding=settings)
    if "selfplay" in suites:
        out["selfplay"] = selfplay_suite(generate, games=args.selfplay_games, max_plies=args.max_plies,
                                         decoding=sampled)  # fmt: skip
    if "match" in suites:
        out["match"] = match_suite(generate, games=args.match_games, skill_level=args.skill_level,
                                   limit=EngineLimit(depth=args.depth, nodes=args.nodes),
                                   stockfish_path=args.stockfish, max_plies=args.max_plies, decoding=sampled)  # fmt: skip
    return out


def sizes(items: EvalItems, args: EvalSettings) -> dict[str, int]:
    """What eval.json records of each suite's size."""
    return {"policy_positions": len(items.policy_fens), "env_transitions": len(items.env_prompts),
            "mate_positions": len(items.mate_fens), "bigbench_positions": len(items.bigbench),
            "tactics_positions": len(items.tactics), "selfplay_games": args.selfplay_games,
            "match_games": args.match_games}  # fmt: skip


# ---------------------------------------------------------------------------------------------- outputs
# figures with intervals as JSON, a markdown table and a bar chart:
#     summary = summarize(results, baseline, seed)          # {suite: {figure: {model, baseline, delta, ...}}}
#     write_outputs(summary, settings, "eval/run1")         # eval.json, eval.md, eval.png


def figure(metric: Metric, seed: int) -> dict:
    ci = metric.interval(seed)
    return {"value": metric.value, "ci": list(ci) if ci else None, "n": metric.n}


def summarize(results: dict, baseline: dict | None, seed: int) -> dict:
    """JSON-able {suite: {figure: {model, baseline, delta, reference, percent}}}."""
    out = {}
    for suite, metrics in results.items():
        out[suite] = {}
        for name, metric in metrics.items():
            row = {"percent": metric.percent, "reference": metric.reference, "model": figure(metric, seed)}
            if metric.lower_is_better:
                row["lower_is_better"] = True
            other = (baseline or {}).get(suite, {}).get(name)
            if other is not None:
                row["baseline"] = figure(other, seed)
                both = metric.value is not None and other.value is not None
                ci = delta_interval(metric, other, seed)
                row["delta"] = {
                    "value": metric.value - other.value if both else None,
                    "ci": list(ci) if ci else None,
                }
            out[suite][name] = row
    return out


def fmt(x: float | None, percent: bool) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if percent else f"{x:.4g}"


def fmt_ci(ci: list | None, percent: bool) -> str:
    return f"[{fmt(ci[0], percent)}, {fmt(ci[1], percent)}]" if ci else "-"


PUBLISHED_NOTE = (
    "`published (124M)`: RookWorld-LM-124M's published figures (docs/FORMATS.md), a reference for that "
    "124M-parameter model only; a smaller model such as the embedded 2.9M one is not expected to reach them."
)


def markdown(summary: dict, settings: dict) -> str:
    """One table per suite; by-kind environment figures in their own table. `*`: the 95% CI excludes 0."""
    has_base = settings.get("baseline") is not None
    lines = [f"# RookWorld evaluation: `{settings['model']}`", ""]
    if has_base:
        lines += [
            f"Baseline: `{settings['baseline']}`. Δ = model - baseline; `*`: its 95% CI excludes 0.",
            "",
        ]
    lines += [PUBLISHED_NOTE, ""]
    if found := settings.get("in_training_data"):
        lines += [f"Items in the training data (`{found['source']}`, by position): {counted(found)}.", ""]
    head = ["figure", "model", "95% CI", "n"] + (["baseline", "Δ", "Δ 95% CI"] if has_base else [])
    head += ["published (124M)"]
    for suite, rows in summary.items():
        for title, part in ((suite, False), (f"{suite} by transition kind", True)):
            selected = {k: r for k, r in rows.items() if k.startswith("kind=") == part}
            if not selected:
                continue
            lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for name, r in selected.items():
                p, m = r["percent"], r["model"]
                label = name + (" (lower is better)" if r.get("lower_is_better") else "")
                cells = [label, fmt(m["value"], p), fmt_ci(m["ci"], p), str(m["n"])]
                if has_base:
                    b, d = r.get("baseline", {}), r.get("delta", {})
                    star = "*" if d.get("ci") and (d["ci"][0] > 0 or d["ci"][1] < 0) else ""
                    cells += [fmt(b.get("value"), p), fmt(d.get("value"), p) + star, fmt_ci(d.get("ci"), p)]
                lines.append("| " + " | ".join(cells + [fmt(r["reference"], p)]) + " |")
            lines.append("")
    lines += ["## settings", "", "```json", json.dumps(settings, indent=1), "```", ""]
    return "\n".join(lines)


def bars(rows: dict, side: str) -> tuple[list[float], list[list[float]]]:
    """Values in % of one side ("model"/"baseline") and their CI as matplotlib xerr (below, above)."""
    vals, low, high = [], [], []
    for r in rows.values():
        entry = r.get(side) or {}
        v = 100 * (entry.get("value") or 0.0)
        lo, hi = (100 * x for x in entry["ci"]) if entry.get("ci") else (v, v)
        vals.append(v)
        low.append(max(v - lo, 0.0))  # a percentile bootstrap interval need not contain the mean
        high.append(max(hi - v, 0.0))
    return vals, [low, high]


def chart(summary: dict, settings: dict, path: str) -> None:
    """Bars of the rate figures (not by kind), a panel per suite, 95% CI whiskers, 124M's published figures as x."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = {}
    for suite, rows in summary.items():
        # the breakdowns (by transition kind, by why a move is illegal) stay in the tables
        if rates := {k: r for k, r in rows.items() if r["percent"] and not ("kind=" in k or "illegal/" in k)}:
            panels[suite] = rates
    sides = ["model"] + (["baseline"] if settings.get("baseline") else [])
    n_rows = sum(len(rows) for rows in panels.values())
    fig, axes = plt.subplots(
        max(len(panels), 1), 1, figsize=(9, 1 + 0.4 * n_rows + 0.8 * len(panels)), squeeze=False
    )
    height = 0.8 / len(sides)
    for ax, (suite, rows) in zip(axes[:, 0], panels.items(), strict=False):
        for j, side in enumerate(sides):
            vals, err = bars(rows, side)
            ys = [i + (j - (len(sides) - 1) / 2) * height for i in range(len(rows))]
            ax.barh(ys, vals, height=height, xerr=err, capsize=2, label=f"{side}: {settings[side]}")
        refs = [(i, 100 * r["reference"]) for i, r in enumerate(rows.values()) if r["reference"] is not None]
        if refs:
            ys, xs = zip(*refs, strict=True)
            ax.scatter(xs, ys, marker="x", color="black", zorder=3, label="published (RookWorld-LM 124M)")
        ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        ax.set_title(suite, fontsize=10)
    handles = {
        label: h for ax in axes[:, 0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=3, fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("%")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the legend on top
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(summary: dict, settings: dict, out_dir: str) -> dict[str, str]:
    """eval.json, eval.md and eval.png in out_dir, each moved in from a staging folder by one rename, eval.json
    last: a stopped eval leaves the previous files whole."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"eval.{ext}") for ext in ("json", "md", "png")}
    stage = tempfile.mkdtemp(prefix=".incoming-", dir=out_dir)
    try:
        staged = {ext: os.path.join(stage, os.path.basename(path)) for ext, path in paths.items()}
        with open(staged["json"], "w") as f:
            json.dump({"settings": settings, "suites": summary}, f, indent=1)
        with open(staged["md"], "w") as f:
            f.write(markdown(summary, settings))
        chart(summary, settings, staged["png"])
        for ext in ("png", "md", "json"):
            os.replace(staged[ext], paths[ext])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return paths


def check_out_dir(out_dir: str) -> None:
    """ValueError, before an eval starts, when out_dir cannot take its files (common/paths.py)."""
    if problem := out_folder_problem(out_dir, "for eval.json/md/png, e.g. --out eval/run1"):
        raise ValueError(problem)


# ---------------------------------------------------------------------------------------------- command


def versions(stockfish_path: str | None) -> dict:
    import torch
    import transformers
    import trl

    with chess.engine.SimpleEngine.popen_uci(find_stockfish(stockfish_path)) as engine:
        stockfish = engine.id.get("name", "?")
    packages = {m.__name__: m.__version__ for m in (torch, transformers, trl, chess)}
    return {"rookworld_trl": __version__, **packages, "stockfish": stockfish}


def read_data(args: EvalSettings, suites: Sequence[str]):
    """The RunData `rookworld eval` reads when no run hands it its data (data/load.py eval_data)."""
    from rookworld_trl.data.load import eval_data  # here: data pulls in the dataset tooling

    needs_data = any(name in suites for name in DATA_SUITES)
    if needs_data and not args.data:
        raise ValueError(NEEDS_DATA)
    return eval_data(args.data if needs_data else None, args.split, args.fen_width,
                     args.tactics if "tactics" in suites else None, args.train_data, args.train_split)  # fmt: skip


def prepare_items(args: EvalSettings, suites: Sequence[str], engine: EnginePool, data=None) -> EvalItems:
    """Draw each suite's items once with args.seed from `data` (a RunData; None: read_data); analyse the P:
    positions with the engine."""
    data = data if data is not None else read_data(args, suites)
    items = EvalItems(fen_width=args.fen_width or FEN_WIDTH)
    if any(name in suites for name in DATA_SUITES):
        if data.held_out is None:
            raise ValueError(NEEDS_DATA)
        from rookworld_trl.data.layout import iter_column  # here: data pulls in the dataset tooling

        items.fen_width = fen_width_of(iter_column(data.held_out, "prompt")) or FEN_WIDTH  # the data's own
        items.drawn_fens, items.env_prompts, items.env_kinds = draw_items(
            data.held_out, args.policy_samples, args.env_samples, args.seed
        )
    if "policy" in suites:
        items.policy_fens, items.policy_analyses = analysed(
            items.drawn_fens, engine, data_labels(data.held_out, engine)
        )
    if "mate" in suites:
        items.mate_fens = find_mate_in_one(args.mate_samples, args.seed, engine)
        if args.bigbench:
            items.bigbench = load_bigbench_checkmate(args.bigbench, args.bigbench_samples)
    if "tactics" in suites:
        items.tactics = tactics_items(args, data)
    return items


def tactics_items(args: EvalSettings, data) -> list[tuple[str, str, str]]:
    """Up to args.tactics_samples (FEN, kind, engine's best) of the tactics test split, drawn with args.seed."""
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
    return [found[i] for i in keep]


def items_in_training(items: EvalItems, data) -> dict:
    """How many of each suite's items occur in the training data, by position: {suite: {"in": k, "of": n}}."""
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


def counted(found: dict) -> str:
    """items_in_training's counts: 'policy 2 of 5, env 1 of 2', or 'none'."""
    return ", ".join(f"{name} {c['in']} of {c['of']}" for name, c in found["items"].items()) or "none"


def training_line(found: dict) -> str:
    """The items-in-training-data figures in one line."""
    return f"items in the training data ({found['source']}, split {found['split']}, by position): {counted(found)}"


class EvalResult(dict):
    """The paths of eval.json/md/png by kind (`result["md"]`), `figures` as in eval.json; `str(result)`: the
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

    `args`: EvalSettings, or the model's path or hub id with `settings` as EvalSettings fields (defaults:
    `rookworld eval`'s). `run_data`: a run's RunData (data/load.py); None: read as args say. From Python:

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
    resolve_paths(args, "model", "baseline", "data", "train_data", "tactics")  # as given, else bundled
    suites = args.suite_list()
    from rookworld_trl.model.source import model_source

    for name in filter(None, (args.model, args.baseline)):  # a wrong name: one line before Stockfish starts
        model_source(name)
    check_out_dir(args.out)  # a read-only --out: now, not after the whole eval
    if (args.device or "").startswith("cuda"):  # torch would fail at the first tensor
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: no CUDA device is visible here; leave --device out (cuda when "
                            "there is one, else cpu) or pass --device cpu")  # fmt: skip
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
            import torch

            from rookworld_trl.model.generation import generate_completions
            from rookworld_trl.model.loading import load_model_and_tokenizer, trained_fen_width

            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model, tokenizer = load_model_and_tokenizer(name, device=device)
            generate = functools.partial(generate_completions, model, tokenizer, batch_size=args.batch_size)
            widths[name] = args.fen_width or trained_fen_width(model) or items.fen_width
            return run_suites(
                generate, dataclasses.replace(items, fen_width=widths[name]), suites, args, engine
            )

        results = run(args.model)
        baseline = run(args.baseline) if args.baseline else None
    given = lambda *names: {name: getattr(args, name) for name in names}  # noqa: E731
    settings = {**given("model", "baseline", "data", "split"), "fen_width": widths, "suites": suites,
                "seed": args.seed, "engine_limit": limit.key(), "multipv": MULTIPV,
                **given("decodings", "temperature", "top_k", "max_new_tokens"), "sizes": sizes(items, args),
                "bigbench": args.bigbench, "in_training_data": found, **given("tactics", "max_plies", "skill_level"),
                "eval_clip_pawns": EVAL_CLIP, "versions": versions(args.stockfish)}  # fmt: skip
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
    return EvalSettings(**vars(p.parse_args(argv)))  # its paths: resolved by `evaluate`


CLI_DEFAULTS = {"data": "rookworld_trl/assets/data"}  # `rookworld eval MODEL`: the embedded test split


def main(argv: list[str] | None = None) -> int:
    print(evaluate(parse_args(argv)))  # the figures (eval.md) on the console too, not only in the files
    return 0


if __name__ == "__main__":
    from rookworld_trl.common.entry import run_stage

    raise SystemExit(run_stage("eval", main))
