"""Loading at scale: an N-line source built from the embedded data, loaded by `rookworld data load` and by the
start of `rookworld train`, each cold (a private, empty datasets cache) and cached (the same command again).

    .venv/bin/python scripts/bench/bench_load.py 100000                  # ~1 min on 2 cores
    .venv/bin/python scripts/bench/bench_load.py 1000000 --skip_train    # the load alone
    .venv/bin/python scripts/bench/bench_load.py 2000 --num_proc 2       # the test's size (tests/test_run_scripts.py)

The source: the embedded train split's lines (rookworld_trl/assets/data) repeated to N, as a text file (for
`rookworld data load SRC --out DIR`) and as a Parquet folder in the published hub layout (one `text` column,
data/train-*.parquet, for `rookworld train --dataset_name DIR --max_steps 1`). Each command runs in a child
process with HF_DATASETS_CACHE in the bench's own folder, so "cold" parses and "cached" reads the parse back.
Printed per run: wall seconds, CPU seconds of the command's process tree, lines/s (wall) and lines per CPU
second (per core), and peak RSS: of its largest process (GNU /usr/bin/time's %M, as `time -v` says it) and of
the whole tree summed (sampled every 0.2 s; counts pages shared by forked workers more than once), and the largest
anonymous RSS (sampled: memory a process holds itself; the rest of its RSS is mostly pages of the memory-mapped
Arrow cache, which the kernel drops under pressure and which grow with the rows a pass touches). For train,
"start" is the time until the trainer's first step begins (its 0/1 progress line).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "rookworld_trl" / "assets" / "data" / "train.parquet"
TRAIN_STARTED = re.compile(rb"\b0/1 \[")  # the trainer's progress bar at step 0 of 1
ROWS_PER_FILE = 500_000
TIME = "/usr/bin/time"  # GNU time: -f %M, the peak RSS of the command's largest process (as `time -v` says)


def embedded_lines() -> list[str]:
    return pq.read_table(DATA, columns=["text"]).column("text").to_pylist()


def build_sources(n: int, work: Path) -> tuple[Path, Path]:
    """(a text file of n lines, a hub-layout Parquet folder of the same lines)."""
    lines = itertools.islice(itertools.cycle(embedded_lines()), n)
    text, hub = work / "source.txt", work / "hub"
    (hub / "data").mkdir(parents=True)
    files = -(-n // ROWS_PER_FILE)
    with open(text, "w", encoding="utf-8") as out:
        for i in range(files):
            chunk = list(itertools.islice(lines, ROWS_PER_FILE))
            out.write("".join(line + "\n" for line in chunk))
            table = pa.table({"text": pa.array(chunk, pa.string())})
            pq.write_table(
                table, hub / "data" / f"train-{i:05d}-of-{files:05d}.parquet", row_group_size=100_000
            )
    return text, hub


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """(RSS of a process and its children summed, the largest anonymous RSS among them): anonymous memory is
    what the process holds itself; the rest of RSS is mostly pages of memory-mapped files (the Arrow cache),
    which the kernel drops under pressure. (0, 0) once it is gone."""
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total, anon = 0, 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):  # gone since
            total += p.memory_info().rss
            found = re.search(r"RssAnon:\s+(\d+) kB", Path(f"/proc/{p.pid}/status").read_text())
            anon = max(anon, int(found[1]) * 1024 if found else 0)  # a zombie has no memory lines
    return total, anon


def timed(argv: list[str], env: dict, work: Path, marker: re.Pattern | None = None) -> dict:
    """Run argv; wall and CPU seconds, peak RSS (largest process, tree sum) and the seconds until `marker` first
    appears in its output (None: never). Exits with its output when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    rss_file = work / "maxrss"
    argv = [TIME, "-f", "%M", "-o", str(rss_file), *argv]  # its largest process's peak, this run's alone
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    out, seen = bytearray(), {}

    def read():
        for chunk in iter(lambda: child.stdout.read1(65536), b""):
            out.extend(chunk)
            if marker is not None and "at" not in seen and marker.search(out[-70000:]):
                seen["at"] = time.perf_counter() - start

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc, peak_tree, peak_anon = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        tree, anon = tree_rss(proc)
        peak_tree, peak_anon = max(peak_tree, tree), max(peak_anon, anon)
        time.sleep(0.2)
    reader.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode:
        sys.exit(f"{' '.join(argv)} failed ({child.returncode}):\n{out.decode(errors='replace')[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss_max = int(rss_file.read_text().split()[-1]) * 1024  # GNU time's %M: KB
    return {"wall": wall, "cpu": cpu, "rss_max": rss_max, "rss_tree": peak_tree, "rss_anon": peak_anon,
            "started": seen.get("at")}  # fmt: skip


def line(name: str, n: int, r: dict) -> str:
    started = f"  training starts at {r['started']:.1f} s" if r.get("started") is not None else ""
    return (
        f"{name:<22} {r['wall']:7.1f} s wall {r['cpu']:7.1f} s CPU  {n / r['wall']:9,.0f} lines/s  "
        f"{n / max(r['cpu'], 1e-9):9,.0f} lines/CPU-s  peak RSS {r['rss_max'] / 2**20:6,.0f} MB (largest process; "
        f"anonymous {r['rss_anon'] / 2**20:,.0f} MB), {r['rss_tree'] / 2**20:,.0f} MB (tree){started}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("n", type=int, help="lines in the source")
    p.add_argument("--num_proc", type=int, default=None, help="parse processes (None: the machine's cores)")
    p.add_argument("--skip_train", action="store_true", help="time `rookworld data load` only")
    p.add_argument("--work", default=None, help="folder for the sources, caches and outputs (kept)")
    a = p.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_load_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf_cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    t = time.perf_counter()
    text, hub = build_sources(a.n, work)
    print(f"source: {a.n:,} lines ({text.stat().st_size / 2**20:,.0f} MB text) built in {time.perf_counter() - t:.1f} s; "
          f"{cores} cores, num_proc {a.num_proc or 'default'}")  # fmt: skip
    rookworld = [sys.executable, "-m", "rookworld_trl.stages.cli"]
    procs = ["--num_proc", str(a.num_proc)] if a.num_proc else []
    for run in ("cold", "cached"):
        out = work / f"layout_{run}"
        r = timed([*rookworld, "data", "load", str(text), "--out", str(out), *procs], env, work)
        print(line(f"data load --out {run}", a.n, r), flush=True)
    if not a.skip_train:
        train = [*rookworld, "train", "--dataset_name", str(hub), "--max_steps", "1", "--eval_samples", "0",
                 "--eval_every_steps", "0", "--per_device_train_batch_size", "8", "--num_generations", "8",
                 "--save_strategy", "no", *(["--dataset_num_proc", str(a.num_proc)] if a.num_proc else [])]  # fmt: skip
        for run in ("cold", "cached"):
            r = timed([*train, "--output_dir", str(work / f"train_{run}")], env, work, TRAIN_STARTED)
            print(line(f"train start {run}", a.n, r), flush=True)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
