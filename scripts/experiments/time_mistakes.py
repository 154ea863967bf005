"""Time a newcomer's mistakes as a user makes them: each command in a scratch folder with the installed `rookworld`,
and per mistake its wall seconds, exit code, stderr lines, whether a traceback showed, and the line it printed.

    .venv/bin/python scripts/experiments/time_mistakes.py            # the table (docs/GUIDE.md's promise: one line, ~1 s)
    .venv/bin/python scripts/experiments/time_mistakes.py --only eval

The cases are issue 53's and the twenty tried beside them (tests/test_cli_checks.py and
test_cli_mistakes.py check their wording); this script only measures. No network: the hub is a closed local port, so a hub lookup fails at once.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FEN = "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq e3 0 1"
FILES = {
    "rw_sig.py": "def b(x):\n    return [1.0]\n",
    "rw_syntax.py": "def b(prompts, completions, **kwargs)\n    return [1.0]\n",
    "bad_list.yaml": "num_generations: [8, 4]\n",
    "bom.txt": "\ufeff" + f"P: {FEN:<90}M: e7e5 E: 0.1 B: e7e5\n",
    "bad_fen.txt": f"P: {FEN.replace('PPPP1PPP', 'PPPP1PPX'):<90}M: e7e5 E: 0.1 B: e7e5\n",
    "taken": "a file, not a folder\n",
    "f.parquet": "x",
    "a.jsonl": '{"text": "P: 8/8/8/8/8/8/8/K6k w - - 0 1 M: a1a2 E: 0.0 B: a1a2"}\n',  # good: the flag is the mistake
}
R = ["--reward_funcs", "policy_reward"]
CASES = [  # (what, argv)
    ("1 reward: wrong signature", ["train", *R, "rw_sig.b", "--reward_weights", "1", "1"]),
    ("2 recipe: a list for a number", ["train", "--config", "bad_list.yaml"]),
    ("2 flag: num_generations eight", ["train", "--num_generations", "eight"]),
    ("2 batch: 128 generations, batch 64", ["train", "--num_generations", "128"]),
    ("3 reward: syntax error", ["train", *R, "rw_syntax.b", "--reward_weights", "1", "1"]),
    ("5 data: byte-order mark (accepted)", ["data", "load", "bom.txt"]),
    ("6 eval: mistyped local model", ["eval", "mymodel"]),
    ("6 parity: no such folder", ["parity", "nosuchdir"]),
    ("6 eval: runs/nosuch/final", ["eval", "runs/nosuch/final"]),
    ("8 eval --suits", ["eval", "rookworld_trl/assets/model", "--suits", "policy"]),
    ("8 data load --skip-bad", ["data", "load", "a.jsonl", "--skip-bad"]),
    ("8 rookworld trian", ["trian"]),
    ("8 rookworld (no command)", []),
    ("9 --selfplay -1", ["data", "generate", "--out", "g", "--selfplay", "-1"]),
    ("9 data load: a bad FEN", ["data", "load", "bad_fen.txt"]),
    ("9 --config a folder", ["train", "--config", "."]),
    ("11 python -m rookworld_trl.grpo --help", None),
    ("own: --max_step typo", ["train", "--max_step", "3"]),
    ("own: --max_steps 0", ["train", "--max_steps", "0"]),
    ("own: --learning_rate fast", ["train", "--learning_rate", "fast"]),
    ("own: --output_dir forgotten value", ["train", "--max_steps", "3", "--output_dir"]),
    ("own: --output_dir is a file", ["train", "--output_dir", "taken"]),
    ("own: --config .yml typo", ["train", "--config", "recipes/grpo_tiny_cpu" + ".yml"]),  # no such file
    ("own: accelerate config as recipe", ["train", "--config", "accelerate_configs/cpu.yaml"]),
    ("own: reward_weights count", ["train", *R, "env_reward", "--reward_weights", "1"]),
    ("own: --report_to tensorbord", ["train", "--report_to", "tensorbord"]),
    ("own: --num_processes x", ["train", "--num_processes", "x"]),
    ("own: --dataset_path", ["train", "--dataset_path", "x"]),
    ("own: data lod", ["data", "lod", "a.jsonl"]),
    ("own: data audit nosuch.txt", ["data", "audit", "nosuch.txt"]),
    ("own: data load f.parquet (not Parquet)", ["data", "load", "f.parquet"]),
    ("own: report runs/nosuch", ["report", "runs/nosuch"]),
    ("own: push runs/nosuch", ["push", "runs/nosuch"]),
    ("own: tokenizer trane", ["tokenizer", "trane"]),
    ("own: --max_steps before the command", ["--max_steps", "3"]),
    ("own: sft given a train recipe", ["sft", "--config", "recipes/grpo_tiny_cpu.yaml"]),
    ("own: --exclude missing file", ["train", "--exclude", "nosuch.epd"]),
]


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    script = Path(sys.executable).parent / "rookworld"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": closed_port()}
    env.pop("HF_HUB_OFFLINE", None)
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in FILES.items():
            Path(tmp, name).write_text(text, encoding="utf-8")
        print(f"{'mistake':<40} {'s':>5} {'exit':>4} {'lines':>5} {'tb':>3}  first line")
        for what, case in CASES:
            if args.only and args.only not in what:
                continue
            cmd = (
                [sys.executable, "-m", "rookworld_trl.grpo", "--help"]
                if case is None
                else [str(script), *case]
            )
            start = time.monotonic()
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
            took = time.monotonic() - start
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            shown = (lines or done.stdout.splitlines() or [""])[0][:90]
            tb = "yes" if "Traceback" in done.stderr + done.stdout else "no"
            print(f"{what:<40} {took:5.1f} {done.returncode:>4} {len(lines):>5} {tb:>3}  {shown}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
