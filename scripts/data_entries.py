"""How often the GRPO stage's path enters each data module: a profile of one `rookworld_trl.stages.grpo` run
that counts, per rookworld_trl/data/ module, the distinct call sites in the package outside it that called into
it (a loop's call is one site; datasets calling our functions back, e.g. a `map`, is not counted).

    PYTHONPATH=$PWD python scripts/data_entries.py --config recipes/grpo_tiny_cpu.yaml --max_steps 1 \
        --eval_samples 0 --eval_every_steps 0 --save_strategy no --output_dir /tmp/entries
    ... -v      # each call site too

The house's figure (docs/ARCHITECTURE.md): each data module entered from at most two places.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import defaultdict

PACKAGE = os.sep + "rookworld_trl" + os.sep
DATA = PACKAGE + "data" + os.sep


def short(path: str) -> str:
    return path[path.rindex(PACKAGE) + 1 :]


def main(argv: list[str]) -> None:
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    sites: dict[str, set[str]] = defaultdict(set)

    def profile(frame, event, arg):
        if event != "call" or DATA not in (callee := frame.f_code.co_filename):
            return
        caller = frame.f_back
        if caller is None or caller.f_code.co_filename == callee or PACKAGE not in caller.f_code.co_filename:
            return
        sites[short(callee)].add(f"{short(caller.f_code.co_filename)}:{caller.f_lineno}")

    from rookworld_trl.stages import grpo

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        grpo.main(argv)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    print("\ncall sites entering each data module (from outside it):")
    for module, found in sorted(sites.items(), key=lambda item: -len(item[1])):
        print(f"  {len(found):3d}  {module}")
        for site in sorted(found) if verbose else ():
            print(f"         {site}")


if __name__ == "__main__":
    main(sys.argv[1:])
