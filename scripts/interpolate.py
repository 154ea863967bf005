"""A model between two of the same shape: initial + alpha x (trained - initial), weight by weight (WiSE-FT, Wortsman
et al. 2022; WARP's interpolation towards the initialisation, Ramé et al. 2024), written as a model folder that
`rookworld eval` and `rookworld train` read.

    python scripts/interpolate.py rookworld_trl/assets/model runs/grpo_tiny_cpu/final 0.5 build/half
    rookworld eval build/half --baseline rookworld_trl/assets/model --split validation --out build/half/eval

alpha 0 is the initial model, 1 the trained one. The folder is a copy of the trained model's with its weights
replaced (safetensors in, safetensors out).
"""

from __future__ import annotations

import argparse
import os
import shutil

from safetensors.torch import load_file, save_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("initial")
    p.add_argument("trained")
    p.add_argument("alpha", type=float)
    p.add_argument("out")
    args = p.parse_args()
    initial = load_file(os.path.join(args.initial, "model.safetensors"))
    trained = load_file(os.path.join(args.trained, "model.safetensors"))
    if initial.keys() != trained.keys() or any(initial[k].shape != trained[k].shape for k in trained):
        raise SystemExit(f"{args.initial} and {args.trained} are not the same shape: interpolate a run's final/ with "
                         "the model it started from")  # fmt: skip
    mixed = {k: (initial[k] + args.alpha * (trained[k] - initial[k])).contiguous() for k in trained}
    shutil.copytree(args.trained, args.out, dirs_exist_ok=True)
    save_file(mixed, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    print(f"{args.out}: {args.initial} + {args.alpha} x ({args.trained} - {args.initial})")


if __name__ == "__main__":
    main()
