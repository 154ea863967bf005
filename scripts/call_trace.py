"""Two figures of the GRPO stage's call path, from a profile of one `rookworld_trl.stages.grpo` run
(docs/ARCHITECTURE.md, "The house in figures"):

- data entries: per rookworld_trl/data/ module, the distinct call sites in the package outside it that called into
  it (a loop's call is one site; datasets calling our functions back, e.g. a `map`, is not counted);
- calls back up: the distinct (caller module -> callee module) calls where the callee's module is already on the
  call stack below the caller (a module calling back into one that called it, directly or through others; TRL,
  torch and datasets frames in between are looked through).

    PYTHONPATH=$PWD python scripts/call_trace.py --config recipes/grpo_tiny_cpu.yaml --max_steps 1 \
        --eval_samples 0 --eval_every_steps 0 --save_strategy no --output_dir /tmp/trace
    ... -v      # each call site too
    ... --json  # the figures as one JSON line at the end: {"entries": {module: sites}, "backs": [[from, to], ...]}

The house's figures: each data module entered from at most two places; at most eight calls back up.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import defaultdict

PACKAGE = os.sep + "rookworld_trl" + os.sep
DATA = PACKAGE + "data" + os.sep


def short(path: str) -> str:
    return path[path.rindex(PACKAGE) + 1 :]


def package_stack(frame):
    """The package's files on the stack from `frame` down, each once in the order met (the nearest first)."""
    files = []
    while frame is not None:
        name = frame.f_code.co_filename
        if PACKAGE in name and (not files or files[-1] != name):
            files.append(name)
        frame = frame.f_back
    return files


def main(argv: list[str]) -> None:
    verbose, as_json = "-v" in argv, "--json" in argv
    argv = [a for a in argv if a not in ("-v", "--json")]
    entries: dict[str, set[str]] = defaultdict(set)
    backs: dict[tuple[str, str], set[str]] = defaultdict(set)

    def profile(frame, event, arg):
        if event != "call" or PACKAGE not in (callee := frame.f_code.co_filename):
            return
        caller = frame.f_back
        while caller is not None and PACKAGE not in caller.f_code.co_filename:
            caller = caller.f_back  # through TRL, torch, datasets
        if caller is None or caller.f_code.co_filename == callee:
            return
        site = f"{short(caller.f_code.co_filename)}:{caller.f_lineno}"
        if DATA in callee and frame.f_back is not None and PACKAGE in frame.f_back.f_code.co_filename:
            entries[short(callee)].add(site)
        if callee in package_stack(caller)[1:]:
            backs[short(caller.f_code.co_filename), short(callee)].add(site)

    from rookworld_trl.stages import grpo

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        grpo.main(argv)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    if as_json:
        print(json.dumps({"entries": {m: len(f) for m, f in entries.items()}, "backs": sorted(backs)}))
        return
    print("\ncall sites entering each data module (from outside it):")
    for module, found in sorted(entries.items(), key=lambda item: -len(item[1])):
        print(f"  {len(found):3d}  {module}")
        for site in sorted(found) if verbose else ():
            print(f"         {site}")
    print(f"\ncalls back up the stack (caller module -> a module below it on the stack): {len(backs)}")
    for (caller, callee), found in sorted(backs.items()):
        print(f"       {caller} -> {callee}" + (f"  ({', '.join(sorted(found))})" if verbose else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
