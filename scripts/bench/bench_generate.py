"""Benchmark `rookworld data generate`: analysed positions per second with 1 and 2 Stockfish workers.

    .venv/bin/python scripts/bench/bench_generate.py [--depth 8] [--games 8] [--max_plies 60] [--workers 1 2]

Self-play games (every ply analysed with MultiPV 5) into a fresh temporary directory each time, so no
cached analysis is reused. The figures depend on the CPU and on what else runs on it.
"""

import argparse
import tempfile
import time

from rookworld_trl.data.generate import GenerateConfig, generate


def bench(depth: int, games: int, max_plies: int, workers: int) -> tuple[int, int, float]:
    """(positions analysed, rows written, seconds) for one generation run."""
    with tempfile.TemporaryDirectory() as out:
        config = GenerateConfig(
            out=out, selfplay_games=games, depth=depth, max_plies=max_plies, workers=workers, progress=False
        )
        start = time.perf_counter()
        stats = generate(config)
        seconds = time.perf_counter() - start
    rows = sum(sum(split.values()) for split in stats["rows"].values())
    return stats["sources"]["selfplay"]["sampled_plies"], rows, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--games", type=int, default=8)
    p.add_argument("--max_plies", type=int, default=60)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    for workers in args.workers:
        positions, rows, seconds = bench(args.depth, args.games, args.max_plies, workers)
        print(
            f"depth {args.depth}, {workers} worker(s): {positions} positions in {seconds:.1f}s = "
            f"{positions / seconds:.1f} positions/s, {rows / seconds:.1f} rows/s"
        )


if __name__ == "__main__":
    main()
