"""Benchmark `modeling.use_fused_gelu`: a forward+backward of a GPT-2 with `gelu_new` and with torch's fused
tanh GELU, timed alternately in one run, and the largest logit difference between them.

    .venv/bin/python scripts/bench/bench_gelu.py [--model rookworld_trl/assets/model] [--batch 64] [--tokens 120]

The figures depend on the CPU (or GPU) and on what else runs on it.
"""

import argparse
import time

import torch
from transformers import GPT2LMHeadModel

from rookworld_trl.common.paths import resolve_path
from rookworld_trl.model.loading import use_fused_gelu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="rookworld_trl/assets/model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=120)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    model = resolve_path(args.model)  # the bundled model from any folder
    models = {"gelu_new": GPT2LMHeadModel.from_pretrained(model, activation_function="gelu_new")}
    models["fused"] = GPT2LMHeadModel.from_pretrained(model, activation_function="gelu_new")
    use_fused_gelu(models["fused"])
    x = torch.randint(0, models["fused"].config.vocab_size, (args.batch, args.tokens))
    seconds = dict.fromkeys(models, 0.0)
    for i in range(args.repeats + 2):  # alternate, so that both see the same machine; 2 warm-up rounds
        for name, model in models.items():
            start = time.perf_counter()
            model(x, labels=x).loss.backward()
            if i >= 2:
                seconds[name] += time.perf_counter() - start
    with torch.no_grad():
        diff = (models["fused"](x).logits - models["gelu_new"](x).logits).abs().max().item()
    for name, total in seconds.items():
        print(
            f"{name:9s} {total / args.repeats:.3f} s per forward+backward of {args.batch}x{args.tokens} tokens"
        )
    print(f"speed-up {seconds['gelu_new'] / seconds['fused']:.2f}x, max |logit difference| {diff:.1e}")


if __name__ == "__main__":
    main()
