"""`rookworld parity MODEL`: our pure-PyTorch GPT-2 (model/reference_gpt2.py) against transformers on a model.

rookworld parity jrahn/RookWorld-LM-124M            # or a local model directory
rookworld parity rookworld_trl/assets/model --tolerance 1e-4
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from rookworld_trl.common.entry import run_stage
from rookworld_trl.common.flags import FlagParser
from rookworld_trl.common.paths import resolve_path
from rookworld_trl.model.loading import load_model_and_tokenizer
from rookworld_trl.model.reference_gpt2 import from_hf, parity_checks

START_FEN = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
PROMPTS = [  # different token lengths on purpose: the batch gets left padding
    "P: " + START_FEN.ljust(90) + "M:",
    "P: " + "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQK2R w KQkq - 4 4".ljust(90) + "M:",
    "A: " + START_FEN + "+e2e4+e2e4+",
]


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(
        prog="rookworld parity",
        description="Check our pure-PyTorch GPT-2 against transformers on MODEL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: rookworld parity rookworld_trl/assets/model",
    )
    parser.add_argument("model", help="local model directory or hub id (e.g. jrahn/RookWorld-LM-124M)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |logit diff| allowed (fp32)")
    parser.add_argument("--max_new_tokens", type=int, default=24, help="greedy tokens compared per prompt")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    args = parser.parse_args(argv)

    args.model = resolve_path(args.model)  # as given (the working directory), else the bundled one
    hf_model, tokenizer = load_model_and_tokenizer(args.model, device=args.device, dtype=torch.float32)
    hf_model.eval()
    ref = from_hf(hf_model).to(args.device).eval()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True).to(args.device)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    results = parity_checks(hf_model, ref, ids, mask, args.max_new_tokens, tokenizer.eos_token_id)

    c = ref.config
    lengths = mask.sum(1).tolist()
    print(
        f"parity: {args.model} ({c.n_layer} layers, {c.n_embd} dims, vocab {c.vocab_size}) on {args.device}, fp32"
    )
    print(
        f"batch: {len(PROMPTS)} left-padded prompts of {lengths} tokens, {args.max_new_tokens} greedy tokens"
    )
    print(f"{'check':<34} {'max |diff|':>12} {'allowed':>10}  result")
    ok = True
    for name, diff in results:
        tokens = isinstance(diff, int)  # greedy tokens must agree exactly; logits within the tolerance
        allowed = 0 if tokens else args.tolerance
        passed = not math.isnan(diff) and diff <= allowed
        ok &= passed
        shown, allowed_shown = (f"{diff} tokens", "0") if tokens else (f"{diff:.2e}", f"{allowed:.0e}")
        print(f"{name:<34} {shown:>12} {allowed_shown:>10}  {'PASS' if passed else 'FAIL'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_stage("parity", main))
