"""`rookworld data`: generate, load (and convert) and audit RookWorld P:/A: datasets.

    rookworld data generate --out data/rookworld --selfplay 100 --random 20 --depth 8 --workers 2
    rookworld data load rookworld.txt --out data/converted       # report malformed lines, convert to our layout
    rookworld data load lichess_db_puzzle.csv --puzzle_rating 1000-1800 --puzzle_themes mateIn1 --out data/puzzles
    rookworld data load data/mine --exclude path/to/checkmate_in_one/task.json --out data/clean   # decontaminate
    rookworld data audit data/rookworld/test.txt --depth 8 --failures failing.txt

The work lives in generate.py, load.py and audit.py; this module is their command line.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from rookworld_trl.chess.engine import MULTIPV, EngineLimit
from rookworld_trl.chess.formats import prompt_fen_width
from rookworld_trl.common.errors import UserError
from rookworld_trl.common.flags import FlagParser
from rookworld_trl.common.locks import holding
from rookworld_trl.data.audit import AuditConfig, AuditReport, audit
from rookworld_trl.data.files import DataSourceError, Exclusion
from rookworld_trl.data.generate import GenerateConfig, generate
from rookworld_trl.data.layout import (
    COLUMNS,
    FEATURES,
    SPLITS,
    LayoutWriter,
    arrow_batches,
    check_out,
    iter_rows,
    say_replaced,
    split_of,
    split_text,
)
from rookworld_trl.data.load import LoadReport, Spec, load, load_rookworld_dataset
from rookworld_trl.data.puzzles import PuzzleFilter, PuzzleSource

__all__ = ["COLUMNS", "FEATURES", "SPLITS", "AuditConfig", "AuditReport", "DataSourceError", "GenerateConfig",
           "LoadReport", "audit", "convert", "generate", "load_rookworld_dataset", "main", "split_of"]  # fmt: skip


# zstd level of a converted layout: 1M rows in seconds, not minutes (layout.py LayoutWriter)
CONVERT_LEVEL = 3


def convert(source: str, out: str, split: str, validation_fraction: float, test_fraction: float,
            skip_bad_rows: bool = False, puzzles: PuzzleSource | None = None, exclude: Exclusion | None = None,
            num_proc: int | None = None) -> dict:  # fmt: skip
    """Write `source` (anything load_rookworld_dataset reads) in our layout, re-split by position hash. OUT is
    locked from before the read and replaced as a whole at the end: an interrupted load leaves the old dataset."""
    check_out(out)
    with holding(out, "rookworld data load --out", "wait for that load to finish or stop it"):
        say_replaced(out)
        report = LoadReport(source, skip_bad_rows)
        # read whole through the one pipeline: exclude, then one FEN width (the most common); no mix, no cap
        loaded = load(Spec(source, split, exclusion=exclude or Exclusion(), skip_bad_rows=skip_bad_rows,
                           num_proc=num_proc, puzzles=puzzles, report=report))  # fmt: skip
        rows = loaded.rows
        writer = LayoutWriter(out, validation_fraction, test_fraction, compression_level=CONVERT_LEVEL)
        try:
            for table in arrow_batches(rows, *COLUMNS):
                writer.add_table(table)
            stats = writer.close()
            check_train_split(out, stats["rows"], validation_fraction, test_fraction)
        except BaseException:  # Ctrl-C, a full disk, no train rows: the old dataset stays as it was
            writer.abort()
            raise
        settings = dict(
            source=source, split=split, validation_fraction=validation_fraction, test_fraction=test_fraction
        )
        if puzzles is not None and puzzles.report is not None:
            stats.update(settings=settings, puzzles=puzzles.report.to_dict())
        else:
            stats.update(settings=settings, load_report=report.to_dict())
        if loaded.reports["exclude"]:
            stats["excluded"] = loaded.reports["exclude"].to_dict()
        writer.commit(stats)
    if not report.malformed and (puzzles is None or puzzles.report is None):  # load said the rest
        print(report.summary())
    print(f"wrote {out}: " + ", ".join(f"{s} {split_text(stats['rows'][s])}" for s in SPLITS))
    return stats


def check_train_split(out: str, rows: dict, validation_fraction: float, test_fraction: float) -> None:
    """UserError when the train split came out empty (a few rows can all hash to validation/test): training on
    OUT would fail later in datasets."""
    if sum(rows["train"].values()):
        return
    held = sum(sum(counts.values()) for counts in rows.values())
    raise UserError(
        f"{out}: no rows for the train split ({held} rows in all went to validation/test by position hash, "
        f"fractions {validation_fraction}/{test_fraction}); convert more rows, or keep all in train with "
        "--validation_fraction 0 --test_fraction 0"
    )


def describe(source: str, split: str, max_samples: int | None, skip_bad_rows: bool = False,
             puzzles: PuzzleSource | None = None, exclude: Exclusion | None = None, num_proc: int | None = None):  # fmt: skip
    """Print what a source holds: the load report, rows by task (P: by FEN width) and A: rows by kind; its first
    `max_samples` rows are streamed."""
    report = LoadReport(source, skip_bad_rows)
    streamed = max_samples is not None  # a puzzle file is labelled whole, in memory
    loaded = load(Spec(source, split, exclusion=exclude or Exclusion(), max_samples=max_samples,
                       skip_bad_rows=skip_bad_rows, num_proc=num_proc, puzzles=puzzles, report=report,
                       streaming=streamed))  # fmt: skip
    if streamed:
        fields = ((row["task"], row["kind"], row["prompt"]) for row in loaded.rows)
    else:
        if not report.malformed and (puzzles is None or puzzles.report is None):  # load said the rest
            print(report.summary())
        fields = iter_rows(loaded.rows, "task", "kind", "prompt")
    tasks, kinds, widths = Counter(), Counter(), Counter()
    for task, kind, prompt in fields:
        tasks[task] += 1
        if task == "A":
            kinds[kind] += 1
        else:
            widths[prompt_fen_width(prompt)] += 1
    excluded = loaded.reports["exclude"]
    if streamed and (puzzles is None or puzzles.report is None):  # a puzzle file said it as it was labelled
        print(report.summary())
        if excluded and excluded.exclusion:
            print(excluded.one_line())
    at = ", ".join(f"{n} at FEN width {w}" for w, n in sorted(widths.items(), key=str))
    print(f"  P: {tasks['P']} rows{f' ({at})' if at else ''}, A: {tasks['A']} rows")
    if kinds:
        print("  A: kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


def parser() -> argparse.ArgumentParser:
    # fmt: off
    p = FlagParser(prog="rookworld data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    helpful = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # --help shows the defaults
    g = sub.add_parser("generate", help="generate P:/A: samples from games (engine-labelled)", **helpful,
                       epilog="example: rookworld data generate --out data/mine --selfplay 100 --random 100 --depth 8")
    d = GenerateConfig  # defaults come from the config dataclass: one place
    g.add_argument("--out", required=True, default=argparse.SUPPRESS,
                   help="output directory (re-run the same to resume)")
    g.add_argument("--selfplay", dest="selfplay_games", metavar="N", type=int, default=0, help="engine self-play games")
    g.add_argument("--random", dest="random_games", metavar="N", type=int, default=0, help="random legal-play games")
    g.add_argument("--pgn", nargs="+", default=[], help="PGN files (plain or .gz; e.g. a Lichess dump)")
    g.add_argument("--pgn_games", type=int, default=None, help="use at most this many PGN games (None: all)")
    g.add_argument("--games_per_chunk", type=int, default=d.games_per_chunk, help="games per resumable shard")
    g.add_argument("--opening_plies", type=int, default=d.opening_plies, help="self-play: up to N random first plies")
    g.add_argument("--random_move_prob", type=float, default=d.random_move_prob, help="self-play: random move odds")
    g.add_argument("--max_plies", type=int, default=d.max_plies, help="stop a generated game after N plies")
    g.add_argument("--plies_per_game", type=int, default=d.plies_per_game, help="random/PGN games: sampled plies")
    g.add_argument("--illegal_fraction", type=float, default=d.illegal_fraction, help="A: odds of an illegal move")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the games and the samples")
    g.add_argument("--tactics", action="store_true",
                   help="P: rows of tactics only (mate in one, mate in two, only move; kind column), split by game")
    g.add_argument("--tactics_per_game", type=int, default=d.tactics_per_game,
                   help="tactics: positions of a kind per game")
    add_engine_args(g)
    add_split_args(g)
    g.add_argument("--cache", default=None, help="analysis cache (sqlite; None: OUT/analysis.sqlite)")
    add_exclude_arg(g)

    lo = sub.add_parser("load", **helpful, epilog="example: rookworld data load published_p.txt.gz --out data/published",
                        help="load a source (stops at a malformed line unless --skip_bad_rows), describe it or "
                        "convert it to our layout")
    lo.add_argument("source", help="dataset dir, .parquet/.jsonl/.txt file, hub id (jrahn/rookworld_7m), or a puzzle "
                    "file: a Lichess puzzle .csv or an .epd suite (labelled by Stockfish)")
    lo.add_argument("--split", default="train", help="split of a dataset dir or hub id")
    lo.add_argument("--out", default=None, help="write our layout (parquet + txt + stats.json) here")
    lo.add_argument("--max_samples", type=int, default=None, help="describe only the first N rows")
    lo.add_argument("--skip_bad_rows", action="store_true",
                    help="skip malformed lines and count them (off: stop at the first, naming it)")
    add_split_args(lo)
    lo.add_argument("--puzzle_rating", default=None, metavar="LOW-HIGH", help="puzzle .csv: keep this rating range")
    lo.add_argument("--puzzle_themes", default=None, metavar="T1,T2",
                    help="puzzle .csv: keep puzzles with any of these themes")
    add_engine_args(lo)
    lo.add_argument("--cache", default=None, help="puzzle files: analysis cache (sqlite; None: memory only)")
    add_exclude_arg(lo)
    lo.add_argument("--num_proc", type=int, default=None,
                    help="processes that parse raw lines (None: this machine's cores); the rows are cached by the "
                    "source's fingerprint in HF_DATASETS_CACHE, so a second load of the same file is read, not parsed")

    a = sub.add_parser("audit", help="re-verify every line with python-chess and Stockfish", **helpful,
                       epilog="example: rookworld data audit published_p.txt.gz --max_lines 2000 --failures bad.txt")
    a.add_argument("source", help="any source `load` reads: text (.txt/.gz), .jsonl/.json, .parquet, dir, hub id")
    a.add_argument("--split", default="train", help="split of a dataset dir or hub id")
    a.add_argument("--failures", default=None, help="write the failing lines here")
    a.add_argument("--report", default=None, help="write the report as JSON here")
    a.add_argument("--eval_tolerance", type=float, default=AuditConfig.eval_tolerance, help="pawns")
    a.add_argument("--best_tolerance", type=float, default=AuditConfig.best_tolerance, help="pawns")
    a.add_argument("--max_lines", type=int, default=None, help="audit the first N lines (None: all)")
    a.add_argument("--cache", default=None, help="analysis cache (sqlite)")
    add_engine_args(a)
    # fmt: on
    return p


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=int, default=8, help="engine search depth (reproducible)")
    p.add_argument("--nodes", type=int, default=None, help="engine node limit (with --depth 0: nodes only)")
    p.add_argument("--multipv", type=int, default=MULTIPV, help="moves per P: sample")
    p.add_argument("--workers", type=int, default=1, help="Stockfish processes")
    p.add_argument("--stockfish", default=None, help="Stockfish binary (None: $STOCKFISH_PATH, else PATH)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="a progress bar")


def add_exclude_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", nargs="+", default=[], metavar="FILE",
                   help="drop every row whose position (first four FEN fields) is in FILE: a FEN list, an .epd file, "
                   "a Lichess puzzle .csv or a BIG-bench checkmate_in_one task.json (docs/FORMATS.md)")  # fmt: skip


def add_split_args(p: argparse.ArgumentParser) -> None:
    for name in ("validation_fraction", "test_fraction"):
        p.add_argument(
            f"--{name}", type=float, default=getattr(GenerateConfig, name), help="of the positions (by hash)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    options = {k: v for k, v in vars(args).items() if k != "command"}
    if "depth" in options:
        options["depth"] = options["depth"] or None  # --depth 0: a node limit alone
    if args.command == "generate":
        generate(GenerateConfig(**options))
    elif args.command == "audit":
        report = audit(AuditConfig(**options))
        if report.lines == 0 or sum(report.reasons.values()) >= report.lines:  # no line parses: exit 2
            found = f"all {report.lines} lines are unparseable" if report.lines else "it holds no lines"
            raise UserError(
                f"nothing audited in {report.source}: {found}; expected P:/A: lines (docs/FORMATS.md), a "
                f"`rookworld data generate` output dir or a .parquet/.jsonl file of them"
            )
        if report.failed:  # a check that finds failures must say so to scripts too
            where = "; --failures FILE writes them" if not args.failures else f" (written to {args.failures})"
            print(
                f"rookworld data: {report.failed} of {report.lines} lines fail the audit{where}",
                file=sys.stderr,
            )
            return 1
    else:
        exclude = Exclusion.of(args.exclude)  # read before any labelling: a bad file fails first
        puzzles = PuzzleSource(
            keep=PuzzleFilter.parse(args.puzzle_rating, args.puzzle_themes),
            limit=EngineLimit(depth=options["depth"], nodes=args.nodes),
            multipv=args.multipv,
            workers=args.workers,
            cache=args.cache,
            stockfish=args.stockfish,
            progress=args.progress,
        )
        if args.out:
            convert(*(options[k] for k in ("source", "out", "split", "validation_fraction", "test_fraction")),
                    args.skip_bad_rows, puzzles, exclude, args.num_proc)  # fmt: skip
        else:
            describe(args.source, args.split, args.max_samples, args.skip_bad_rows, puzzles, exclude,
                     args.num_proc)  # fmt: skip
    return 0


if __name__ == "__main__":
    from rookworld_trl.common.entry import run_stage  # bad input: one clear line, not a traceback

    sys.exit(run_stage("data", main))
