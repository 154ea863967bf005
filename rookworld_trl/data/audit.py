"""Audit RookWorld lines: re-verify every label with python-chess and Stockfish.

    rookworld data audit data/rookworld/test.txt --depth 8 --failures failing.txt --report audit.json

P: lines: the moves are `legal`, distinct and min(multipv, legal moves) (`count`); B: is among them
(`best_in_moves`); the set of moves is Stockfish's top-k (`moves`); each eval is within --eval_tolerance pawns of
the engine's (`evals`); B: is the engine's best or within --best_tolerance of it (`best`). A: lines: `history`
ends with the move and holds at most 10 plies; `new_fen`, `reward`, `terminated`, `truncated` equal
environment.transition. Apart from content, `layout`: the line is exactly what formats renders (any P: FEN width).
Lines that do not parse are `unparseable`, counted by reason and in the denominators. Rates are per task and side
to move; failing lines go unchanged to --failures.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, islice

import chess
from tqdm.auto import tqdm

from rookworld_trl.chess.engine import MULTIPV, EngineLimit, EnginePool, MoveEval
from rookworld_trl.chess.environment import parse_board, transition
from rookworld_trl.chess.formats import (
    FEN_WIDTH,
    HISTORY_PLIES,
    EnvSample,
    FormatError,
    PolicySample,
    normalize_line,
    parse_line,
    policy_completion,
    policy_prompt,
    prompt_fen_width,
    render_env,
    split_prompt_completion,
)
from rookworld_trl.data.read import source_lines

EVAL_CLIP = 10.0  # pawns: eval errors are measured on clipped evals, as the eval suite's (evaluate.py)
BATCH_LINES = 256  # lines per engine batch: enough to keep every worker busy


@dataclass
class AuditConfig:
    source: str
    split: str = "train"  # of a dataset dir or hub dataset
    depth: int | None = 8
    nodes: int | None = None
    multipv: int = MULTIPV
    eval_tolerance: float = 0.3  # pawns
    best_tolerance: float = 0.0  # pawns; 0 still accepts a move the engine scores exactly like its best
    failures: str | None = None  # write failing lines here
    report: str | None = None  # write the report as JSON here
    max_lines: int | None = None
    workers: int = 1
    cache: str | None = None
    stockfish: str | None = None
    progress: bool = True

    def __post_init__(self):
        if min(self.eval_tolerance, self.best_tolerance) < 0:
            raise ValueError("--eval_tolerance and --best_tolerance must be >= 0")
        self.limit = EngineLimit(depth=self.depth, nodes=self.nodes)


P_FIELDS = ("legal", "count", "best_in_moves", "moves", "evals", "best")  # content, against the engine
A_FIELDS = ("history", "new_fen", "reward", "terminated", "truncated")  # content, against python-chess
RANKS = ("1", "2", "3", "4", "5", "not listed")  # where a P: label's B: move is in the engine's list


@dataclass
class AuditReport:
    """Counts by group ("P w", "P b", "A w", "A b"; unparseable lines in "P ?", "A ?", "? ?"): lines, failures,
    layout and each field."""

    source: str
    limit: str
    lines: int = 0
    failed: int = 0  # content disagrees, or the line does not parse
    groups: dict[str, Counter] = field(default_factory=dict)
    ranks: dict[str, Counter] = field(default_factory=dict)  # side -> RANKS entry -> P: labels
    reasons: Counter = field(default_factory=Counter)  # why lines do not parse
    reason_lines: dict[str, list[int]] = field(default_factory=dict)  # reason -> its first line numbers
    fen_widths: Counter = field(default_factory=Counter)  # P: lines by the width their FEN is padded to
    # (line number, fields), the first few
    examples: list[tuple[int, list[str]]] = field(default_factory=list)

    def add(self, line_no: int, group: str, failures: list[str], layout: bool = True) -> None:
        self.lines += 1
        counts = self.groups.setdefault(group, Counter())
        counts["lines"] += 1
        counts.update(failures)
        counts["layout"] += not layout
        if failures:
            self.failed += 1
            counts["failed"] += 1
        if (failures or not layout) and len(self.examples) < 20:
            self.examples.append((line_no, failures + ([] if layout else ["layout"])))

    def task_lines(self, task: str) -> int:
        return sum(c["lines"] for g, c in self.groups.items() if g[0] == task)

    def field_counts(self) -> dict[str, int]:
        """ "P: best" -> lines of the task where that field disagrees ("P: unparseable", "P: layout" too)."""
        out = Counter()
        for group, counts in self.groups.items():
            task = group[0]
            names = ("layout", *(P_FIELDS if task == "P" else A_FIELDS)) if group[2] != "?" else ()
            out.update({f"{task}: {n}": counts[n] for n in names if counts[n]})
            if group[2] == "?":
                out[f"{task}: unparseable"] += counts["lines"]
        return dict(out)

    def to_dict(self) -> dict:
        rate = self.failed / max(self.lines, 1)
        fields = {f: {"count": n, "rate": n / max(self.task_lines(f[0]), 1)} for f, n in sorted(self.field_counts().items())}  # fmt: skip
        return dict(
            source=self.source, limit=self.limit, lines=self.lines, failed=self.failed, rate=rate,
            groups={g: {**c, "rate": c["failed"] / c["lines"]} for g, c in sorted(self.groups.items())},
            fields=fields, unparseable=dict(self.reasons), unparseable_lines=self.reason_lines, label_rank={s: dict(c) for s, c in self.ranks.items()},
            fen_widths=dict(sorted(self.fen_widths.items())),
            examples=[{"line": n, "fields": f} for n, f in self.examples],
        )  # fmt: skip

    def summary(self) -> str:
        out = [f"audit of {self.source} at {self.limit}: {self.lines} lines, {self.failed} disagree in content "
               f"or do not parse ({self.failed / max(self.lines, 1):.2%}); rates per side to move:"]  # fmt: skip
        for task, names in (("P", P_FIELDS), ("A", A_FIELDS)):
            if self.task_lines(task):
                out += self._task_table(task, names)
        if self.fen_widths:  # the layout, apart from the content: any of these widths reads alike
            n = sum(self.fen_widths.values())
            widths = ", ".join(f"{w}: {c} ({c / n:.1%})" for w, c in sorted(self.fen_widths.items()))
            out.append(f"  P: lines by FEN field width: {widths}")
        if self.ranks:
            out.append("  P: label's B: move, its rank in the engine's list (1 = the engine's best):")
            out.append("  " + " " * 7 + "".join(f"{r:>11}" for r in RANKS))  # the columns of the rows below
            for side in sorted(self.ranks, reverse=True):  # w before b
                c, n = self.ranks[side], max(sum(self.ranks[side].values()), 1)
                out.append(f"  {SIDES[side]:<7}" + "".join(f"{c[r] / n:>11.1%}" for r in RANKS))
        for reason, n in self.reasons.most_common(5):
            at = ", ".join(f"{self.source}:{i}" for i in self.reason_lines[reason])
            out.append(f"  unparseable: {n} {reason} (first at {at})")
        out += [f"  first: {self.source}:{n} {', '.join(f)}" for n, f in self.examples[:5]]
        return "\n".join(out)

    def _task_table(self, task: str, names: tuple[str, ...]) -> list[str]:
        cols = ("lines", "layout", *names)
        out = [f"  {task + ':':<11}" + "".join(f"{c:>14}" for c in cols) + (f"{'eval MAE':>14}" if task == "P" else "")]  # fmt: skip
        for side in ("w", "b", "?"):
            counts = self.groups.get(f"{task} {side}")
            if not counts:
                continue
            if side == "?":
                share = counts["lines"] / self.task_lines(task)
                out.append(f"  {'unparseable':<11}{counts['lines']:>14}  ({share:.2%} of the task's lines)")
                continue
            n = counts["lines"]
            row = f"  {SIDES[side]:<11}{n:>14}" + "".join(f"{counts[c] / n:>14.2%}" for c in cols[1:])
            if task == "P":  # how far the written evaluations are from the engine's, in pawns
                row += f"{counts['eval_error'] / max(counts['evals_compared'], 1):>14.2f}"
            out.append(row)
        return out


SIDES = {"w": "white", "b": "black", "?": "unknown"}


def label_rank(best: str, analysis: list[MoveEval]) -> str:
    """Where `best` is in the engine's best-first list: "1".."5", or "not listed"."""
    engine = [e.move for e in analysis]
    return str(engine.index(best) + 1) if best in engine else "not listed"


def check_policy(
    s: PolicySample, analysis: list[MoveEval], board: chess.Board, config: AuditConfig
) -> list[str]:
    """The P: content fields on which the line disagrees with python-chess and the engine."""
    bad = []
    legal = {m.uci() for m in board.legal_moves}
    if any(m not in legal for m in s.moves):
        bad.append("legal")
    if len(set(s.moves)) != len(s.moves) or len(s.moves) != min(config.multipv, len(legal)):
        bad.append("count")
    if s.best not in s.moves:
        bad.append("best_in_moves")
    engine = {e.move: e.pawns for e in analysis}
    if set(s.moves) != set(engine):
        bad.append("moves")
    tolerance = config.eval_tolerance + 1e-9  # evals are written with two decimals: no float-noise failures
    if any(m in engine and abs(e - engine[m]) > tolerance for m, e in zip(s.moves, s.evals, strict=True)):
        bad.append("evals")
    best = analysis[0] if analysis else None
    near_best = best and s.best in engine and best.pawns - engine[s.best] <= config.best_tolerance + 1e-9
    if best is None or (s.best != best.move and not near_best):
        bad.append("best")
    return bad


def eval_errors(s: PolicySample, analysis: list[MoveEval]) -> dict[str, float]:
    """The summed |written eval - the engine's| in pawns over the moves the engine lists (clipped, so that a mate
    score does not swamp the rest), and how many were compared."""
    engine, clip = {e.move: e.pawns for e in analysis}, lambda x: max(-EVAL_CLIP, min(EVAL_CLIP, x))
    errors = [abs(clip(e) - clip(engine[m])) for m, e in zip(s.moves, s.evals, strict=True) if m in engine]
    return {"eval_error": sum(errors), "evals_compared": len(errors)}


def check_env(s: EnvSample) -> list[str]:
    """The A: content fields on which the line disagrees with python-chess."""
    bad = []
    if not s.history or s.history[-1] != s.move or len(s.history) > HISTORY_PLIES:
        bad.append("history")
    truth = dict(
        zip(("new_fen", "reward", "terminated", "truncated"), transition(s.fen, s.move), strict=True)
    )
    written = dict(new_fen=s.new_fen, reward=s.reward, terminated=s.terminated, truncated=s.truncated)
    return bad + [name for name, value in truth.items() if written[name] != value]


def laid_out(sample: PolicySample | EnvSample, text: str) -> bool:
    """Whether the line is exactly what formats renders for its content (any published P: FEN width)."""
    if isinstance(sample, EnvSample):
        return render_env(sample) == text
    width = prompt_fen_width(split_prompt_completion(text)[0]) or FEN_WIDTH
    return (
        policy_prompt(sample.fen, width) + policy_completion(sample.moves, sample.evals, sample.best) == text
    )


def audit_batch(batch, pool: EnginePool, config: AuditConfig, report: AuditReport, failures) -> None:
    parsed = []
    for line_no, line in batch:
        text = normalize_line(line).strip()
        task = text[:1] if text[:2] in ("P:", "A:") else "?"
        try:
            sample = parse_line(text)
            board = parse_board(sample.fen)
        except ValueError as e:  # FormatError, or a readable FEN that is no legal position
            reason = (e if isinstance(e, FormatError) else FormatError(f"{task}: fen: {e}")).reason
            parsed.append((line_no, line, f"{task} ?", [f"unparseable ({reason})"], None, text, None))
            report.reasons[reason] += 1
            if len(first := report.reason_lines.setdefault(reason, [])) < 3:
                first.append(line_no)
            continue
        parsed.append((line_no, line, f"{task} {'w' if board.turn else 'b'}", [], sample, text, board))
    policy_fens = [p[4].fen for p in parsed if isinstance(p[4], PolicySample)]
    analyses = dict(zip(policy_fens, pool.analyse_many(policy_fens), strict=True))
    for line_no, line, group, bad, sample, text, board in parsed:
        layout = sample is None or laid_out(sample, text)
        if isinstance(sample, PolicySample):
            report.fen_widths[prompt_fen_width(split_prompt_completion(text)[0]) or len(sample.fen)] += 1
            bad = check_policy(sample, analyses[sample.fen], board, config)
            report.groups.setdefault(group, Counter()).update(eval_errors(sample, analyses[sample.fen]))
            report.ranks.setdefault(group[2], Counter())[label_rank(sample.best, analyses[sample.fen])] += 1
        elif isinstance(sample, EnvSample):
            bad = check_env(sample)
        report.add(line_no, group, bad, layout)
        if (bad or not layout) and failures is not None:
            failures.write(line + "\n")


def audit(config: AuditConfig) -> AuditReport:
    """Audit config.source (see the module docstring), print the summary and return the report."""
    report = AuditReport(config.source, config.limit.key())
    numbered = enumerate(source_lines(config.source, config.split), 1)
    first = list(islice(numbered, 1))  # a missing or unreadable source is one line before Stockfish or a bar
    lines = islice(chain(first, numbered), config.max_lines)
    failures = open(config.failures, "w", encoding="utf-8") if config.failures else None  # noqa: SIM115
    pool = EnginePool(
        config.workers, config.limit, config.multipv, cache=config.cache, stockfish_path=config.stockfish
    )
    try:
        with pool, tqdm(unit="line", desc="audit", disable=not config.progress) as bar:
            for batch in iter(lambda: list(islice(lines, BATCH_LINES)), []):  # lists of BATCH_LINES
                audit_batch(batch, pool, config, report, failures)
                bar.update(len(batch))
    finally:
        if failures is not None:
            failures.close()
    if config.report:
        with open(config.report, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    print(report.summary())
    return report
