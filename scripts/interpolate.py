"""A model between two of the same shape: initial + alpha x (trained - initial), weight by weight (WiSE-FT, Wortsman
et al. 2022; WARP's interpolation towards the initialisation, Ramé et al. 2024), written as a model folder that
`rookworld eval` and `rookworld train` read.

    python scripts/interpolate.py rookworld_trl/assets/model runs/grpo_tiny_cpu/final 0.5 build/half
    rookworld eval build/half --baseline rookworld_trl/assets/model --split validation --out build/half/eval

alpha 0 is the initial model, 1 the trained one. The folder holds the trained model's config and tokenizer with the
new weights (safetensors in, safetensors out); not its model card, training arguments or completion marker, which
describe the trained weights. It is written beside `out` and renamed into place; an existing `out` is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil

from safetensors.torch import load_file, save_file

from rookworld_trl.training.checkpoints import MARKER

# what a run's final/ holds about the trained weights themselves, not about loading them
NOT_COPIED = ("model.safetensors", "README.md", "training_args.bin", MARKER)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("initial")
    p.add_argument("trained")
    p.add_argument("alpha", type=float)
    p.add_argument("out")
    args = p.parse_args()
    if os.path.exists(args.out):
        raise SystemExit(
            f"{args.out} exists: give a new folder (or remove it) to write the interpolated model to"
        )
    for folder in (args.initial, args.trained):
        if not os.path.isfile(os.path.join(folder, "model.safetensors")):
            raise SystemExit(
                f"{folder}: no model.safetensors: give a model folder (a run's final/, the embedded model)"
            )
    initial = load_file(os.path.join(args.initial, "model.safetensors"))
    trained = load_file(os.path.join(args.trained, "model.safetensors"))
    if initial.keys() != trained.keys() or any(initial[k].shape != trained[k].shape for k in trained):
        raise SystemExit(f"{args.initial} and {args.trained} are not the same shape: interpolate a run's final/ with "
                         "the model it started from")  # fmt: skip
    mixed = {k: (initial[k] + args.alpha * (trained[k] - initial[k])).contiguous() for k in trained}
    tmp = f"{args.out}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.trained, tmp, ignore=shutil.ignore_patterns(*NOT_COPIED))
    save_file(mixed, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    os.replace(tmp, args.out)
    print(f"{args.out}: {args.initial} + {args.alpha} x ({args.trained} - {args.initial})")


if __name__ == "__main__":
    main()
