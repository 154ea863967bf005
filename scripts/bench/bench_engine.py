"""Benchmark the Stockfish pool: positions/second, per worker, and EnginePool's overhead over chess.engine.

Positions come from seeded random legal play from the start. Four setups analyse the same positions, no cache:
  direct          one SimpleEngine, engine.analyse(board, Limit(depth=D), multipv=5); the hash carries over
                  from one position to the next, so its results depend on the order (not reproducible)
  direct+newgame  the same with game=object(): ucinewgame clears the hash first, as EnginePool does
  pool w=1        EnginePool(workers=1).analyse_many(fens)
  pool w=2        EnginePool(workers=2).analyse_many(fens)
Engines are started before the clock runs; the setups take turns for --repeats rounds and the best time
counts, which damps noise from other processes sharing the CPU. The `cpu s` column (this process plus the
engines, from /proc) is steadier than wall time on a busy machine.

Run (after scripts/setup.sh, or with PYTHONPATH=.):  .venv/bin/python scripts/bench/bench_engine.py --n 200
"""

import argparse
import contextlib
import os
import time

import chess
import chess.engine

from rookworld_trl.chess.engine import EngineLimit, EnginePool, find_stockfish
from rookworld_trl.chess.environment import random_boards


def random_positions(n: int, seed: int) -> list[str]:
    return [board.fen() for board in random_boards(n, seed)]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process plus the given engine processes (Linux /proc; else this process only).
    Less sensitive than wall time to other programs competing for the CPU."""
    total = time.process_time()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def timed(run, pids: list[int]):
    wall, cpu = time.perf_counter(), cpu_seconds(pids)
    results = run()
    return time.perf_counter() - wall, cpu_seconds(pids) - cpu, results


def analyse_direct(
    engine: chess.engine.SimpleEngine, fens: list[str], depth: int, multipv: int, newgame: bool
):
    limit, results = chess.engine.Limit(depth=depth), []
    for fen in fens:
        board = chess.Board(fen)
        game = object() if newgame else None
        results.append((board.turn, engine.analyse(board, limit, multipv=multipv, game=game)))
    return results


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="number of positions")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--multipv", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best time of each setup counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hash-mb", type=int, default=16, help="Stockfish Hash for every setup")
    args = parser.parse_args()

    fens = random_positions(args.n, args.seed)
    limit = EngineLimit(depth=args.depth)
    warmup = [chess.STARTING_FEN, "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"]
    with (
        chess.engine.SimpleEngine.popen_uci(find_stockfish()) as engine,
        EnginePool(workers=1, limit=limit, multipv=args.multipv, hash_mb=args.hash_mb) as pool1,
        EnginePool(workers=2, limit=limit, multipv=args.multipv, hash_mb=args.hash_mb) as pool2,
    ):
        engine.configure({"Threads": 1, "Hash": args.hash_mb})  # as in the pools
        engine.analyse(chess.Board(), chess.engine.Limit(depth=1))
        pool1.analyse_many(warmup)  # starts the processes (two distinct positions: both of pool2's engines)
        pool2.analyse_many(warmup)
        pid = [engine.transport.get_pid()]
        setups = {  # name: (workers, engine pids, run)
            "direct": (1, pid, lambda: analyse_direct(engine, fens, args.depth, args.multipv, False)),
            "direct+newgame": (1, pid, lambda: analyse_direct(engine, fens, args.depth, args.multipv, True)),
            "pool w=1": (1, pool1.pids(), lambda: pool1.analyse_many(fens)),
            "pool w=2": (2, pool2.pids(), lambda: pool2.analyse_many(fens)),
        }
        wall, cpu, results = {}, {}, {}
        for _ in range(args.repeats):
            for name, (_, pids, run) in setups.items():
                seconds, cpu_used, results[name] = timed(run, pids)
                wall[name] = min(wall.get(name, seconds), seconds)
                cpu[name] = min(cpu.get(name, cpu_used), cpu_used)

    # The pool must give exactly what a bare engine with a fresh game gives (same moves, same centipawns).
    bare = [
        [(i["pv"][0].uci(), i["score"].pov(turn).score(mate_score=100000)) for i in infos]
        for turn, infos in results["direct+newgame"]
    ]
    pooled = [[(e.move, e.cp) for e in evals] for evals in results["pool w=1"]]
    same = bare == pooled == [[(e.move, e.cp) for e in evals] for evals in results["pool w=2"]]

    print(
        f"{len(fens)} positions, depth {args.depth}, multipv {args.multipv}, Hash {args.hash_mb} MB, "
        f"best of {args.repeats}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    header = f"{'setup':<16}{'workers':>8}{'seconds':>9}{'pos/s':>8}{'pos/s/worker':>14}"
    print(header + f"{'time/direct':>13}{'cpu s':>8}")
    for name, (workers, _, _) in setups.items():
        rate = len(fens) / wall[name]
        print(
            f"{name:<16}{workers:>8}{wall[name]:>9.2f}{rate:>8.1f}{rate / workers:>14.1f}"
            f"{wall[name] / wall['direct']:>13.3f}{cpu[name]:>8.2f}"
        )
    for base in ("direct", "direct+newgame"):
        print(
            f"EnginePool w=1 overhead over {base + ':':<16} wall {wall['pool w=1'] / wall[base] - 1:+.1%}, "
            f"cpu {cpu['pool w=1'] / cpu[base] - 1:+.1%}"
        )
    print(f"speed-up of w=2 over w=1: {wall['pool w=1'] / wall['pool w=2']:.2f}x")
    print(f"pool results identical to direct+newgame: {same}")


if __name__ == "__main__":
    main()
